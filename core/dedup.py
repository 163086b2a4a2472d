"""`curate dedup`: embed each unique image once, decide per scope group which images stay,
write the filtered dataset in input order, and account for every record."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .api import DuplicateIds, RejectSink, Report, _check_input, default_rejects_path, resolve_reader, resolve_writer
from .atomic import atomic_output, check_output
from .cache import EmbeddingCache
from .embedding import EmbedResult, embed_files
from .errors import CurateError, RecordError
from .formats import Options
from .boxes import BoxRewriter
from .images import ImageLocator, UnreadableImage, check_image_root
from .jsonstream import dumps
from .progress import ProgressBar
from .registry import get_registry
from .sample import source_of
from .similarity import keep_or_remove, nearest_neighbour_similarity

SCOPES = ("source", "global")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "curate" / "embeddings"


@dataclass
class ImageTable:
    """Unique images in order of first appearance, with what the report needs of each."""

    paths: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    single_samples: list[int] = field(default_factory=list)  # samples whose only image this is
    first_id: list = field(default_factory=list)             # id of the first sample using it
    sources: list[str] = field(default_factory=list)         # source dataset of each image
    multi_samples: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (source, images)

    def add_sample(self, sample) -> None:
        positions = tuple(self._add(path, sample.id) for path in sample.images)
        if len(positions) == 1:
            self.single_samples[positions[0]] += 1
        elif positions:
            self.multi_samples.append((sample.source, positions))

    def _add(self, path: str, sample_id) -> int:
        i = self.position.get(path)
        if i is None:
            i = self.position[path] = len(self.paths)
            self.paths.append(path)
            self.single_samples.append(0)
            self.first_id.append(sample_id)
            self.sources.append(source_of(path))
        return i

    def samples_removed(self, removed: np.ndarray) -> dict[str, int]:
        """Samples per source whose every image is removed."""
        per_source: dict[str, int] = {}
        for i in np.flatnonzero(removed):
            if self.single_samples[i]:
                source = self.sources[i]
                per_source[source] = per_source.get(source, 0) + self.single_samples[i]
        for source, positions in self.multi_samples:
            if all(removed[i] for i in positions):
                per_source[source] = per_source.get(source, 0) + 1
        return per_source


@dataclass
class ThresholdResult:
    threshold: float
    duplicate_of: np.ndarray   # per image: kept image position, -1 kept, -2 not embedded
    score: np.ndarray


@dataclass
class DedupRun:
    """Everything the report is made from."""

    report: Report
    images: ImageTable
    sample_sources: dict[str, int]
    text_only: int
    embed: EmbedResult
    thresholds: list[ThresholdResult]
    nn_similarity: np.ndarray
    scope: str
    settings: dict
    stage_seconds: dict[str, float]
    removed_path: Path | None = None
    samples_removed: dict[float, dict[str, int]] = field(default_factory=dict)
    report_data: dict | None = None          # what report.json holds, once written


def embedder_spec(name: str, model: str | None, weights, device: str) -> dict:
    """What a Ray actor needs to load the same model."""
    return {"embedder": name, "model": model, "weights": str(Path(weights).absolute()) if weights else None,
            "device": device}


def load_embedder(name: str, model: str | None, weights, device: str):
    return get_registry().get("embedder", name).load(model, str(weights) if weights else None, device)


def embed_images(images: ImageTable, image_root: Path, embedder, *, cache_dir, batch_size, workers,
                 decode: str = "auto", show_progress: bool = False, engine: str = "local",
                 ray_address: str | None = None, spec: dict | None = None) -> EmbedResult:
    """Embed the unique images (through the cache); unreadable ones become failures with reasons."""
    paths, errors = [], {}
    locator = ImageLocator(image_root)
    for i, relative in enumerate(images.paths):
        try:
            paths.append(locator.path(relative))
        except UnreadableImage as e:
            paths.append(None)
            errors[i] = str(e)
    with contextlib.ExitStack() as stack:
        cache = None
        if cache_dir is not None:
            cache = stack.enter_context(EmbeddingCache(cache_dir, embedder.embedder, embedder.model_name,
                                                       embedder.weights_digest, embedder.dim))
        bar = stack.enter_context(ProgressBar("embed", len(paths), unit="images", enabled=show_progress))

        def advance(count):
            bar.advance(count)
            bar.set_items(bar.items + count)

        if engine == "ray":
            from .ray_engine import embed_files_ray
            return embed_files_ray(paths, embedder, spec, cache=cache, batch_size=batch_size, workers=workers,
                                   progress=advance, errors=errors, address=ray_address)
        if engine != "local":
            raise CurateError(f"--engine must be local or ray, not {engine!r}")
        processes = decode == "processes" or (decode == "auto" and embedder.device == "cuda")
        return embed_files(paths, embedder, cache=cache, batch_size=batch_size, workers=workers,
                           progress=advance, errors=errors, processes=processes)


def scope_groups(images: ImageTable, ok: np.ndarray, scope: str) -> dict[str, np.ndarray]:
    """Positions of embedded images per group, in order of first appearance."""
    if scope == "global":
        return {"all": np.flatnonzero(ok)}
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(images.sources):
        if ok[i]:
            groups.setdefault(source, []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in groups.items()}


def decide(vectors, ok, groups, thresholds, index_kind, index_options, show_progress):
    results = []
    n = len(ok)
    nn = np.full(n, np.nan, np.float32)
    steps = len(groups) * (len(thresholds) + 1)
    with ProgressBar("search", steps, unit="steps", enabled=show_progress) as bar:
        for threshold in thresholds:
            duplicate_of = np.where(ok, -1, -2).astype(np.int64)
            score = np.zeros(n, np.float32)
            for members in groups.values():
                walk = keep_or_remove(vectors[members], index_kind, threshold, **index_options)
                removed = walk.duplicate_of >= 0
                duplicate_of[members[removed]] = members[walk.duplicate_of[removed]]
                score[members[removed]] = walk.score[removed]
                bar.advance(1)
            results.append(ThresholdResult(threshold, duplicate_of, score))
        for members in groups.values():
            nn[members] = nearest_neighbour_similarity(vectors[members], index_kind, **index_options)
            bar.advance(1)
    return results, nn


def dedup(inputs, output, *, image_root, from_: str = "auto", to: str | None = None,
          embedder: str = "vit-cls", model: str | None = None, weights=None, index: str = "auto",
          index_options: dict | None = None, thresholds=(0.9,), scope: str = "source", report_dir=None,
          cache_dir=None, batch_size: int = 32, workers: int = 2, device: str = "auto", decode: str = "auto",
          drop_unreadable: bool = False, sample_every: int = 500, overwrite: bool = False,
          on_error: str = "fail", rejects=None, show_progress: bool = False, engine: str = "local",
          ray_address: str | None = None) -> DedupRun:
    started = time.monotonic()
    stage_seconds: dict[str, float] = {}
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not inputs:
        raise CurateError("no input files given")
    thresholds = sorted(set(float(t) for t in thresholds), key=list(thresholds).index) if thresholds else [0.9]
    for t in thresholds:
        if not -1.0 <= t <= 1.0:
            raise CurateError(f"--threshold {t}: a cosine similarity must lie in [-1, 1]")
    if scope not in SCOPES:
        raise CurateError(f"--scope must be one of {', '.join(SCOPES)}")
    output = Path(output)
    for path in inputs:
        _check_input(path)
    image_root = check_image_root(image_root)
    readers = [(path, resolve_reader(from_, path)) for path in inputs]
    writer = resolve_writer(to or readers[0][1].name)
    index_kind = get_registry().get("index", index)
    check_output(output, inputs=inputs, overwrite=overwrite)
    report_dir = Path(report_dir) if report_dir else output.with_name(output.name + ".report")
    removed_path = report_dir / "removed.jsonl"
    rejects_path = Path(rejects) if rejects else default_rejects_path(output)
    check_output(removed_path, inputs=inputs + [output], overwrite=True)
    model_ready = load_embedder(embedder, model, weights, device)   # fail on weights before any work

    # Pass 1: the unique images, in order of first appearance.
    t0 = time.monotonic()
    images = ImageTable()
    sample_sources: dict[str, int] = {}
    text_only = 0
    total_bytes = sum(p.stat().st_size for p in inputs)
    duplicates = DuplicateIds()
    with ProgressBar("scan", total_bytes, enabled=show_progress) as bar:
        def samples():
            for path, reader in readers:
                opts = Options(progress=bar.advance, reject=_first_pass_reject(on_error), image_root=image_root)
                for sample in reader.read(path, opts):
                    duplicates.add(sample, path)
                    yield sample
        for sample in bar.count(samples()):
            sample_sources[sample.source] = sample_sources.get(sample.source, 0) + 1
            if sample.image is None:
                text_only += 1
            images.add_sample(sample)
    stage_seconds["scan"] = time.monotonic() - t0

    t0 = time.monotonic()
    embedded = embed_images(images, image_root, model_ready, cache_dir=cache_dir, batch_size=batch_size,
                            workers=workers, decode=decode, show_progress=show_progress, engine=engine,
                            ray_address=ray_address, spec=embedder_spec(embedder, model, weights, device))
    stage_seconds["embed"] = time.monotonic() - t0

    t0 = time.monotonic()
    groups = scope_groups(images, embedded.ok, scope)
    results, nn = decide(embedded.vectors, embedded.ok, groups, thresholds, index_kind,
                         dict(index_options or {}), show_progress)
    stage_seconds["search"] = time.monotonic() - t0

    report = Report([str(p) for p in inputs], str(output), ",".join(sorted({r.name for _, r in readers})),
                    writer.name, warnings=[w for w in [duplicates.warning()] if w])
    run = DedupRun(report, images, sample_sources, text_only, embedded, results, nn, scope,
                   settings=dict(embedder=model_ready.embedder, model=model_ready.model_name,
                                 weights=model_ready.weights_digest, dim=model_ready.dim, index=index,
                                 index_options=dict(index_options or {}), thresholds=thresholds, scope=scope,
                                 image_root=str(image_root), device=model_ready.device, decode=decode,
                                 engine=engine,
                                 sample_every=sample_every, drop_unreadable=drop_unreadable),
                   stage_seconds=stage_seconds, removed_path=removed_path)

    t0 = time.monotonic()
    _write_filtered(run, readers, writer, output, removed_path, rejects_path, rejects, on_error,
                    drop_unreadable, total_bytes, show_progress)
    stage_seconds["write"] = time.monotonic() - t0
    for result in results:
        run.samples_removed[result.threshold] = images.samples_removed(result.duplicate_of >= 0)
    report.seconds = time.monotonic() - started
    report.check()

    from .report import write_reports
    run.report_data = write_reports(run, report_dir, show_progress=show_progress)
    return run


def _first_pass_reject(on_error):
    def reject(error, raw=None):
        if on_error == "fail":
            raise error
    return reject


def _all_removed(sample, images: ImageTable, result: ThresholdResult) -> bool:
    positions = [images.position[p] for p in sample.images]
    return bool(positions) and all(result.duplicate_of[i] >= 0 for i in positions)


def _write_filtered(run: DedupRun, readers, writer, output, removed_path, rejects_path, rejects_arg,
                    on_error, drop_unreadable, total_bytes, show_progress) -> None:
    """Pass 2: stream the inputs again; write kept samples in input order."""
    images, first = run.images, run.thresholds[0]
    failures = run.embed.failures
    report = run.report
    counts = {"read": 0, "reader_rejects": 0}
    locator = ImageLocator(run.settings["image_root"])
    rewriters = {reader.name: BoxRewriter(reader.box_style, writer.box_style, locator) for _, reader in readers}
    with contextlib.ExitStack() as stack:
        sink = RejectSink(on_error, rejects_path, stack)
        removed_out = stack.enter_context(atomic_output(removed_path))
        bar = stack.enter_context(ProgressBar("write", total_bytes, enabled=show_progress))

        def reader_reject(error, raw=None):
            counts["reader_rejects"] += 1
            sink(error, raw)

        def kept_samples():
            for path, reader in readers:
                options = Options(progress=bar.advance, reject=reader_reject,
                                  image_root=Path(run.settings["image_root"]))
                for index, sample in enumerate(reader.read(path, options)):
                    counts["read"] += 1
                    if _all_removed(sample, images, first):
                        removed_out.write(dumps(_removed_record(sample, images, first)) + "\n")
                        report.removed += 1
                        continue
                    if drop_unreadable:
                        bad = [(p, failures[images.position[p]]) for p in sample.images
                               if images.position[p] in failures]
                        if bad:
                            sink.set_aside(RecordError(path, f"image {bad[0][0]!r} is unreadable: {bad[0][1]}",
                                             index=index, record_id=sample.id, field="image"), None)
                            continue
                    try:
                        sample = rewriters[reader.name].apply(sample, path)
                    except RecordError as error:
                        sink(error, None)
                        continue
                    yield sample

        out = stack.enter_context(atomic_output(output))
        report.written = writer.write(bar.count(kept_samples()), out, Options(path=output, reject=sink))
    report.records_in = counts["read"] + counts["reader_rejects"]
    report.rejected = sink.count
    if sink.count == 0 and rejects_arg is None and rejects_path.exists():
        rejects_path.unlink()
    report.rejects_path = str(rejects_path) if sink.count else None
    report.notes += [note for note in (r.note() for r in rewriters.values()) if note]


def _removed_record(sample, images: ImageTable, result: ThresholdResult) -> dict:
    positions = [images.position[p] for p in sample.images]
    kept = [images.paths[result.duplicate_of[i]] for i in positions]
    scores = [round(float(result.score[i]), 6) for i in positions]
    single = len(positions) == 1
    return {"id": sample.id, "image": sample.image,
            "duplicate_of": kept[0] if single else kept,
            "duplicate_of_id": images.first_id[result.duplicate_of[positions[0]]],
            "score": scores[0] if single else scores, "threshold": result.threshold}
