"""Deduplication in three steps:

1. :func:`identify_duplicates`: scan the inputs for their unique images, embed each once
   (through the cache), and decide per scope group which images stay. It returns a typed
   :class:`Duplicates` decision.
2. apply: the decision becomes :class:`curate.decisions.Decisions`, one row per image, written
   to ``decisions.jsonl``; :class:`~curate.decisions.DecisionFilter`, a filter stage of the
   engine's run, writes the kept samples in input order and hands the removed ones to
   ``removed.jsonl`` (``curate apply`` runs the same stage on a decisions file).
3. report: :func:`curate.report.write_reports` renders the decision and the run's accounting.

:func:`dedup` composes the three, with every output committed together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .atomic import Outputs
from .cache import CacheIdentity, EmbeddingCache
from .contracts import LoadedEmbedder
from . import device_decode
from .embedding import EmbedResult, SignalSet, embed_files
from .decisions import DecisionFilter, Decisions
from .dedup_settings import EmbedderSpec, EmbedSettings, SearchSettings, default_cache_dir  # noqa: F401
from .engine import Inputs, Report, Run, default_writer
from .errors import CurateError, setting
from .gather import rows_of
from .image_table import ImageTable, scan
from .images import ImageLocator, UnreadableImage, check_image_root
from .progress import ProgressBar
from .settings import configured, refuse_unknown
from .similarity import NEIGHBOURS, Channel, Pairs, SharedSearches, kept_curve, nearest_neighbours, walk
from .vectors_file import VectorsFile
from .verification import NONE, Looked, PairVerifier

# --- step 1: identify ----------------------------------------------------------------------------

@dataclass
class Embeddings:
    """The unique images of some inputs and their vectors (rows in the order of ``images.paths``)."""

    images: ImageTable
    result: EmbedResult
    model: LoadedEmbedder
    image_root: Path
    seconds: dict[str, float] = field(default_factory=dict)     # scan, embed


def embed_images(images: ImageTable, image_root: Path, model: LoadedEmbedder, settings: EmbedSettings,
                 spec: EmbedderSpec, signals: list = (), observers: list = ()) -> EmbedResult:
    """Embed the unique images, and compute each signal's fingerprint, through the caches;
    unreadable ones become failures with reasons. ``observers`` see each image decoded here
    (not those the caches had; Ray's workers do not run them)."""
    paths, errors = [], {}
    locator = ImageLocator(image_root)
    for i, relative in enumerate(images.paths):
        try:
            paths.append(locator.path(relative))
        except UnreadableImage as e:
            paths.append(None)
            errors[i] = str(e)
    on_device = decodes_on_device(settings, model, signals)
    with contextlib.ExitStack() as stack:
        cache, signal_set = None, SignalSet(list(signals), observers=list(observers))
        if settings.cache_dir is not None:
            cache = stack.enter_context(EmbeddingCache(settings.cache_dir, CacheIdentity.of_model(model, on_device)))
            signal_set.caches = [stack.enter_context(EmbeddingCache(settings.cache_dir, CacheIdentity.of_signal(signal)))
                                 for signal in signals]
        bar = stack.enter_context(ProgressBar("embed", len(paths), unit="images", enabled=settings.show_progress))

        def advance(count):
            bar.advance(count)
            bar.set_items(bar.items + count)

        common = dict(cache=cache, batch_size=settings.batch_size, workers=settings.workers, progress=advance,
                      errors=errors, signals=signal_set)
        if settings.engine == "ray":
            from .ray_engine import embed_files_ray
            return embed_files_ray(paths, model, spec.for_workers(), address=settings.ray_address, **common)
        processes = settings.decode == "processes" or (settings.decode == "auto" and model.device == "cuda")
        return embed_files(paths, model, processes=processes, on_device=on_device, **common)


def decodes_on_device(settings: EmbedSettings, model: LoadedEmbedder, signals) -> bool:
    """Whether JPEGs are decoded on the model's device: asked for (``--decode device``), or
    ``auto`` with the model on CUDA and no signal that needs Pillow's pixels (exact and phash
    do: decoding on the GPU as well would only add work)."""
    if settings.decode == "device":
        if settings.engine != "local":
            raise CurateError(f"{setting('decode')} device runs with {setting('engine')} local (Ray's tasks decode on their CPUs)")
        if not device_decode.supported(model):
            raise CurateError(f"{setting('decode')} device: embedder {model.embedder!r} cannot take decoded tensors "
                              "(it has no preprocess_decoded), or torchvision's decode_jpeg is missing")
        return True
    return (settings.decode == "auto" and settings.engine == "local" and model.device == "cuda"
            and not list(signals) and device_decode.supported(model))


def embed(inputs: Inputs, embedder: EmbedderSpec = None, settings: EmbedSettings = None, *,
          on_error: str = "fail", model: LoadedEmbedder | None = None, signals: list | None = None,
          observers: list = (), against: Inputs | None = None) -> Embeddings:
    """Embed every unique image of ``inputs`` (relative to ``inputs.image_root``) into the cache,
    with the fingerprints of ``signals`` (Signal plugins; None: dedup's default ones), and then
    those of the evaluation inputs ``against`` (``curate dedup --against``). The embedder's and
    the signals' settings are taken from ``inputs.settings``.

    >>> found = curate.embed(curate.Inputs(["mix.json"], image_root="data"), curate.EmbedderSpec("timm-pool"),
    ...                      curate.EmbedSettings(cache_dir=Path("cache")))
    >>> found.result.vectors.shape
    """
    embedder = dataclasses.replace(embedder or EmbedderSpec(), settings=dict(inputs.settings))
    if signals is None:                  # dedup's default signals, so that the cache serves a later dedup
        signals = [plugin for _, plugin, _ in SearchSettings(settings=dict(inputs.settings)).resolved_signals() if plugin]
    signals = [configured(signal, inputs.settings) for signal in signals]
    refuse_unknown(inputs.settings, [*(("reader", reader) for reader in inputs.readers), ("embedder", embedder.plugin),
                                     *(("signal", signal) for signal in signals)])
    return _embed(inputs, embedder, settings or EmbedSettings(), on_error, model, signals, observers, against)


def _embed(inputs: Inputs, embedder: EmbedderSpec, settings: EmbedSettings, on_error: str,
           model: LoadedEmbedder | None, signals: list, observers=(), against: Inputs | None = None) -> Embeddings:
    image_root = check_image_root(inputs.image_root) if needs_image_root(inputs) else inputs.image_root
    model = model or embedder.load()     # fails on weights before any work
    started = time.monotonic()
    shared = settings.cache_dir if settings.engine == "ray" else None      # decode tasks on other nodes read it
    images = scan(inputs, on_error=on_error, show_progress=settings.show_progress, spool_folder=shared)
    if against is not None:
        images.add_against(against)
    scanned = time.monotonic()
    result = embed_images(images, image_root, model, settings, embedder, signals, observers)
    return Embeddings(images, result, model, image_root,
                      {"scan": scanned - started, "embed": time.monotonic() - scanned})


def needs_image_root(inputs: Inputs) -> bool:
    """Whether images are files under ``--image-root``: given one, or read by a reader whose
    images are not held as bytes."""
    return inputs.image_root is not None or not all(reader.holds_images for reader in inputs.readers)


@dataclass
class ThresholdResult:
    threshold: float           # the embedding's
    duplicate_of: np.ndarray   # per image: kept image position, -1 kept, -2 not embedded
    score: np.ndarray          # similarity in the signal that fired
    signal: np.ndarray = None  # per image: which signal fired (a position in Duplicates.signal_names)
    verdicts: dict = field(default_factory=dict)   # removed image -> the Verdict that confirmed it
    refused: list = field(default_factory=list)    # verification.Looked: alike, kept (different content)


@dataclass
class Duplicates:
    """The decision: for each threshold, which image each removed image duplicates."""

    found: Embeddings
    search: SearchSettings
    thresholds: list[ThresholdResult]
    neighbourhood: "Neighbourhood"     # what the report shows about pairs near the thresholds
    stage_seconds: dict[str, float]
    signals: list = field(default_factory=list)    # [(name, plugin or None for the embedding, cosine threshold)]

    @property
    def signal_names(self) -> list[str]:
        return [name for name, _, _ in self.signals]

    def match(self, result: ThresholdResult, i: int) -> dict:
        """How image ``i`` matched: the signal that fired and its score (and, for a hash, its distance)."""
        name, plugin, _ = self.signals[result.signal[i]]
        shown = {"score": round(float(result.score[i]), 6)}
        if plugin is not None:
            shown.update(plugin.describe(float(result.score[i])))
        verdict = result.verdicts.get(i)
        if verdict is not None:
            shown.update(verified_by=self.search.verify, verify_score=verdict.score)
        elif self.search.verify != NONE:
            shown.update(verified_by=f"{name} (needs no verification)")
        against = self.images.against_of(int(result.duplicate_of[i]))
        return {"signal": name, **shown, **({"against": against} if against else {})}

    @property
    def images(self) -> ImageTable:
        return self.found.images

    @property
    def embedding(self) -> EmbedResult:
        return self.found.result

    @property
    def applied(self) -> ThresholdResult:
        """The threshold the output is filtered at (the first one given)."""
        return self.thresholds[0]

    @cached_property
    def decisions(self) -> Decisions:
        """The decision as one row per image, at the threshold the output is filtered at: what
        dedup writes to decisions.jsonl and applies."""
        return Decisions.from_duplicates(self)

    def removal(self, sample) -> dict | None:
        """Why ``sample`` is removed (its line in removed.jsonl), or None when it stays: a
        sample goes only when all of its images are removed."""
        return self.decisions.removal(sample)

    def unreadable(self, sample) -> tuple[str, str] | None:
        """The first of the sample's images that could not be embedded, with the reason."""
        return self.decisions.unreadable(sample)

    def samples_removed(self) -> dict[float, dict[str, int]]:
        return {r.threshold: self.images.samples_removed(r.duplicate_of >= 0) for r in self.thresholds}

    def settings(self) -> dict:
        """The settings as report.json records them."""
        model = self.found.model
        return dict(embedder=model.embedder, model=model.model_name, weights=model.weights_digest, dim=model.dim,
                    device=model.device, index=self.search.index, index_options=dict(self.search.index_options),
                    thresholds=list(self.search.thresholds), scope=self.search.scope,
                    signals=self.signal_names, verify=self.search.verify, intent=self.search.intent,
                    signal_similarity={name: round(t, 6) for name, plugin, t in self.signals if plugin},
                    image_root=str(self.found.image_root) if self.found.image_root is not None else None)


def scope_groups(images: ImageTable, ok: np.ndarray, scope: str) -> dict[str, np.ndarray]:
    """Positions of embedded training images per group, in order of first appearance."""
    training = np.flatnonzero(ok[:images.training_count])
    if scope == "global":
        return {"all": training}
    groups: dict[str, list[int]] = {}
    for i in training.tolist():
        groups.setdefault(images.sources[i], []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in groups.items()}


@dataclass
class Neighbourhood:
    """Per image, from its nearest neighbours in the embedding (within its scope group): what
    lets a person judge a threshold. ``closest_kept`` is, for an image kept at every threshold,
    its most similar neighbour that is kept too (-1 otherwise): the pairs nobody removed."""

    nn_similarity: np.ndarray          # similarity to the nearest neighbour (nan when alone or not embedded)
    kept_bits: np.ndarray              # bit g set: kept at similarity.CURVE_THRESHOLDS[g], embedding alone
    closest_kept: np.ndarray           # position of the closest neighbour kept too, -1 when none
    closest_kept_similarity: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "Neighbourhood":
        return cls(np.full(n, np.nan, np.float32), np.zeros(n, np.uint64), np.full(n, -1, np.int64),
                   np.full(n, np.nan, np.float32))

    def add_group(self, members: np.ndarray, parts, kept_everywhere: np.ndarray):
        """A group's neighbour lists (positions in ``members``), a part at a time in order:
        ``parts`` gives (sims, ids) for its first rows, then the next (on Ray, as the tasks
        choose them: the driver never holds every list)."""
        kept = np.zeros(len(members), np.uint64)
        local_kept = kept_everywhere[members]
        first = 0
        for sims, ids in parts:
            rows = members[first:first + len(sims)]
            nearest = sims[:, 0]
            self.nn_similarity[rows] = np.where(np.isfinite(nearest), nearest, np.nan)
            kept_curve(sims, ids, first=first, kept=kept)
            partner_kept = (ids >= 0) & local_kept[np.maximum(ids, 0)]
            has = partner_kept.any(axis=1) & local_kept[first:first + len(sims)]
            column = partner_kept.argmax(axis=1)
            found = np.flatnonzero(has)
            self.closest_kept[rows[found]] = members[ids[found, column[found]]]
            self.closest_kept_similarity[rows[found]] = sims[found, column[found]]
            first += len(sims)
        self.kept_bits[members] = kept


def decide(found: Embeddings, groups, search: SearchSettings, signals: list, show_progress: bool,
           pair_search=Pairs, threads: int = 1):
    """The keep/remove walk per group and threshold over every signal (each removal confirmed by
    the verifier), then each image's neighbourhood in the embedding (for the report). A group's
    walks go from the lowest threshold up and share its searches (:class:`SharedSearches`: one
    index, or on Ray one search, per signal), and its neighbours are searched in the walk's
    index (on Ray, found by the search's tasks from their own products); then the group's
    searches are let go. The evaluation images (``--against``) go
    first in every group's walk, kept whatever they match. ``pair_search``: what searches for
    the pairs (:func:`curate.ray_engine.ray_pairs` on Ray). ``threads``: the verifier's, where it
    allows more than one."""
    verifier = search.verifier
    with (PairVerifier(verifier, found.images.paths, found.image_root, threads) if verifier
          else contextlib.nullcontext()) as pairs:
        return _decide_groups(found, groups, search, signals, show_progress, pair_search, pairs)


class GroupVerify:
    """The walk's ``verify`` for one group: its positions are ``members``' entries."""

    def __init__(self, pairs: PairVerifier, members: np.ndarray):
        self.pairs, self.members = pairs, members

    def __call__(self, kept: int, candidate: int):
        return self.pairs(int(self.members[kept]), int(self.members[candidate]))

    def room(self) -> int:
        return self.pairs.room()

    def prefetch(self, pairs) -> None:
        self.pairs.prefetch((int(self.members[kept]), int(self.members[candidate])) for kept, candidate in pairs)


def _decide_groups(found: Embeddings, groups, search: SearchSettings, signals: list, show_progress: bool,
                   pair_search, pairs: PairVerifier | None):
    index_kind = search.index_kind
    options = dict(search.index_options)
    vectors, ok = found.result.vectors, found.result.ok
    n = len(ok)
    training = found.images.training_count
    against = np.flatnonzero(ok[training:]) + training
    thresholds = sorted(search.thresholds)          # lowest first: the higher ones reuse its search
    embedding = next((name for name, plugin, _ in signals if plugin is None), None)
    results = {t: ThresholdResult(t, np.where(ok, -1, -2).astype(np.int64), np.zeros(n, np.float32),
                                  np.full(n, -1, np.int8)) for t in thresholds}
    neighbourhood = Neighbourhood.empty(n)
    kept_everywhere = np.zeros(n, bool)             # per group, once its walks are done
    steps = len(groups) * (len(thresholds) + 1)
    with ProgressBar("search", steps, unit="images walked", enabled=show_progress) as bar:
        for group in groups.values():
            members = np.concatenate([against, group])
            verify = GroupVerify(pairs, members) if pairs else None
            # each signal's rows of this group, and its searches, serve every threshold's walk
            rows = {name: rows_of(vectors if plugin is None else found.result.signals[name], members)
                    for name, plugin, _ in signals}
            source = cached_source(found.result, members)
            own_rows = not len(against) and embedding is not None    # the walks' rows are the group's alone
            with SharedSearches(pair_search) as searches:
                for threshold in thresholds:
                    decision = walk([Channel(name, rows[name], threshold if plugin is None else cosine, index_kind,
                                             options, verified=plugin is None or plugin.verified,
                                             source=source if plugin is None else None,
                                             neighbours=NEIGHBOURS if plugin is None and own_rows else 0)
                                     for name, plugin, cosine in signals],
                                    verify=verify, fixed=len(against), pairs=searches.pairs,
                                    progress=lambda count, n=len(members): bar.add(count, count / n))
                    _record(results[threshold], members, decision)
                kept_everywhere[group] = np.logical_and.reduce([r.duplicate_of[group] == -1 for r in results.values()])
                if not own_rows:
                    parts = [nearest_neighbours(rows_of(vectors, group), index_kind, **options)]
                else:
                    parts = searches.nearest(embedding)     # found by the search (Ray)
                    if parts is None:                       # the walks' rows (no second copy) and index
                        parts = [nearest_neighbours(rows[embedding], index_kind, index=searches.index_of(embedding),
                                                    **options)]
                neighbourhood.add_group(group, parts, kept_everywhere)
            bar.advance(1)
    return [results[t] for t in search.thresholds], neighbourhood


def _record(result: ThresholdResult, members: np.ndarray, decision) -> None:
    """One group's walk (positions in ``members``) into the threshold's result."""
    removed = decision.duplicate_of >= 0
    result.duplicate_of[members[removed]] = members[decision.duplicate_of[removed]]
    result.score[members[removed]] = decision.score[removed]
    result.signal[members[removed]] = decision.signal[removed]
    result.verdicts.update((int(members[i]), verdict) for i, verdict in decision.verdicts.items())
    result.refused += [Looked(int(members[kept]), int(members[candidate]), c, sim, verdict)
                       for kept, candidate, c, sim, verdict in decision.refused
                       if decision.duplicate_of[candidate] < 0]


def cached_source(result: EmbedResult, members: np.ndarray) -> VectorsFile | None:
    """Where the embedding cache holds the vectors of ``members`` (None: not all of them there)."""
    if result.cache_file is None or (result.cache_rows[members] < 0).any():
        return None
    return VectorsFile(result.cache_file, result.cache_rows[members], result.vectors.shape[1])


def identify_duplicates(inputs: Inputs, embedder: EmbedderSpec = None, search: SearchSettings = None,
                        settings: EmbedSettings = None, *, on_error: str = "fail",
                        model: LoadedEmbedder | None = None, observers: list = (),
                        against: Inputs | None = None) -> Duplicates:
    """Scan, embed and decide: which images of ``inputs`` duplicate an earlier kept one, or an
    image of the evaluation inputs ``against`` (read, never written), which always wins. The
    embedder, index, signals and verifier get their settings from ``inputs.settings``
    (``observers``: see :func:`embed_images`)."""
    embedder, search = for_run(inputs, embedder, search)
    settings = settings or EmbedSettings()
    search.index_options, search.verifier                # unknown names and bad settings fail before any work
    signals = search.resolved_signals()
    model = model or embedder.load()
    search = search.with_model_default(model)
    found = _embed(inputs, embedder, settings, on_error, model, [plugin for _, plugin, _ in signals if plugin],
                   observers, against)
    started = time.monotonic()
    groups = scope_groups(found.images, found.result.ok, search.scope)
    pair_search = Pairs
    if settings.engine == "ray":
        from .ray_engine import ray_pairs
        pair_search = functools.partial(ray_pairs, address=settings.ray_address, work_root=settings.cache_dir)
    results, neighbourhood = decide(found, groups, search, signals, settings.show_progress, pair_search,
                                    threads=settings.workers)
    seconds = dict(found.seconds, search=time.monotonic() - started)
    return Duplicates(found, search, results, neighbourhood, seconds, signals)


def for_run(inputs: Inputs, embedder: EmbedderSpec | None, search: SearchSettings | None):
    """``embedder`` and ``search`` (defaults for None) with the run's settings."""
    given = dict(inputs.settings)
    return (dataclasses.replace(embedder or EmbedderSpec(), settings=given),
            dataclasses.replace(search or SearchSettings(), settings=given))


def dedup_components(embedder: EmbedderSpec, search: SearchSettings) -> list[tuple[str, object]]:
    """The plugins of an identify step besides the readers, as ``(kind, plugin)`` pairs."""
    return [("embedder", embedder.plugin), *search.components()]


# --- step 2: apply: curate.decisions.DecisionFilter --------------------------------------------------

def decode_observers(filters) -> list:
    """The filters' decode observers, one per name (those of a name merged)."""
    by_name: dict = {}
    for stage in filters:
        observer = stage.decode_observer()
        if observer is not None:
            first = by_name.get(observer.name)
            by_name[observer.name] = observer if first is None else first.merged(observer)
    return list(by_name.values())


# --- all three -----------------------------------------------------------------------------------

@dataclass
class ReportSettings:
    folder: Path | None = None          # None: OUTPUT.report beside the output
    sample_every: int = 500             # report.md lists every N-th removed image


@dataclass
class DedupResult:
    """A dedup run: the engine's accounting, the decision, and where everything went."""

    report: Report
    duplicates: Duplicates
    report_dir: Path
    removed_path: Path
    sample_every: int
    drop_unreadable: bool
    stage_seconds: dict[str, float]
    report_data: dict | None = None      # what report.json holds
    filters: list = field(default_factory=list)    # the filter stages that ran before the duplicate filter


def identify_to_file(inputs: Inputs, output, *, embedder: EmbedderSpec = None, search: SearchSettings = None,
                     settings: EmbedSettings = None, on_error: str = "fail", overwrite: bool = False,
                     against: Inputs | None = None) -> Decisions:
    """Identify near-duplicates and write only the decisions, to ``output`` (``curate dedup
    --decisions-only``); ``curate apply`` filters any export of the inputs with them later."""
    embedder, search = for_run(inputs, embedder, search)
    refuse_unknown(inputs.settings, [*(("reader", reader) for reader in inputs.readers),
                                     *dedup_components(embedder, search)])
    with Outputs(_read_only(inputs, against), overwrite=overwrite) as outputs:
        path = outputs.claim(Path(output), "decisions file")
        duplicates = identify_duplicates(inputs, embedder, search, settings or EmbedSettings(), on_error=on_error,
                                         against=against)
        decisions = duplicates.decisions
        decisions.write(outputs.open(path))
    return decisions


def _read_only(inputs: Inputs, against: Inputs | None) -> list[Path]:
    """The files no output may replace: the inputs and the evaluation inputs."""
    return list(inputs.sources) + (list(against.sources) if against is not None else [])


def dedup(inputs: Inputs, output, *, to: str | None = None, embedder: EmbedderSpec = None,
          search: SearchSettings = None, settings: EmbedSettings = None, report: ReportSettings = None,
          drop_unreadable: bool = False, on_error: str = "fail", rejects=None, boxes: str | None = None,
          ids: str | None = None, extract_images=None, overwrite: bool = False, filters=(),
          against: Inputs | None = None) -> DedupResult:
    """Identify near-duplicates, write the rest of ``inputs`` to ``output`` in input order, and
    report. The output, the rejects, ``removed.jsonl`` and the report appear together or not at all.
    ``against``: evaluation inputs (read, never written) whose near-duplicates are removed too.

    ``filters`` (filter stages, as ``curate filter`` runs them) run before the duplicate filter,
    their removals in the same ``removed.jsonl``; image filters take their looks at the images
    from the decode for the embedder (:meth:`curate.Filter.decode_observer`)."""
    from .report import ReportFiles, write_reports
    embedder, search = for_run(inputs, embedder, search)
    settings, report = settings or EmbedSettings(), report or ReportSettings()
    output = Path(output)
    run_started = time.monotonic()
    with Outputs(_read_only(inputs, against), overwrite=overwrite) as outputs:
        run = Run(inputs, output, to or default_writer(inputs), outputs, on_error=on_error, rejects=rejects,
                  boxes=boxes, ids=ids, extract_images=extract_images, show_progress=settings.show_progress,
                  title="write", components=dedup_components(embedder, search))
        files = ReportFiles.claim(outputs, Path(report.folder) if report.folder else
                                  output.with_name(output.name + ".report"))
        decisions_path = outputs.claim(files.folder / "decisions.jsonl", "decisions file", overwrite=True)
        for stage in filters:
            stage.exclusions = files.removed
        duplicates = identify_duplicates(inputs, embedder, search, settings, on_error=on_error,
                                         observers=decode_observers(filters), against=against)
        observed = duplicates.embedding.observed_by_image(duplicates.images.paths)
        for stage in filters:
            stage.take_observed(observed)
        decisions = duplicates.decisions
        decisions.write(outputs.open(decisions_path))
        started = time.monotonic()
        duplicate_filter = DecisionFilter(decisions, files.removed, drop_unreadable)
        accounting = run.execute([*filters, duplicate_filter])
        if filters:       # the tables count the decision over every sample; the filters took some first
            accounting.notes.append(f"duplicates: removed {duplicate_filter.tally.removed:,} samples of those "
                                    f"the filters kept")
        seconds = dict(duplicates.stage_seconds, write=time.monotonic() - started)
        accounting.seconds = time.monotonic() - run_started
        accounting.warnings += duplicates.embedding.warnings
        if duplicates.images.video_samples:
            accounting.notes.append(
                f"{duplicates.images.video_samples:,} samples hold {duplicates.images.videos:,} videos: carried to the "
                "output, not decoded nor compared, so dedup removes none of these samples (their images are compared "
                "with the others)")
        result = DedupResult(accounting, duplicates, files.folder, files.removed, report.sample_every,
                             drop_unreadable, seconds, filters=list(filters))
        result.report_data = write_reports(result, files, outputs, show_progress=settings.show_progress)
    return result
