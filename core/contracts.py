"""What a plugin must provide, in one place.

Each extension point is an abstract base class; a plugin subclasses it and registers it
through a hook of :mod:`curate.hookspecs`. Registration checks the component against its contract, so a
component that lacks a method is reported, naming its package, before anything runs.

=====================  ======================  =====================================
hook                   registers               whose method returns
=====================  ======================  =====================================
``register_readers``   :class:`Reader`         ``read()`` → Samples
``register_writers``   :class:`Writer`         ``write()`` → how many were written
``register_embedders`` :class:`Embedder`       ``load()`` → a :class:`LoadedEmbedder`
``register_indexes``   :class:`IndexKind`      ``new()`` → a :class:`SimilarityIndex`
``register_signals``   :class:`Signal`         ``fingerprint()`` → a unit vector
``register_verifiers`` :class:`Verifier`       ``prepare()`` once per image, ``compare()`` → a :class:`Verdict`
``register_filters``   :class:`curate.Filter`  ``decide()`` → None, a reason dict or a RecordError
=====================  ======================  =====================================

Each declares its options as ``settings``, a tuple of :class:`curate.Setting` (see
:mod:`curate.settings` for where each kind gets their values).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Iterator, Mapping, TextIO

import numpy as np

from .errors import RecordError
from .sample import Sample


def raise_error(error: RecordError, raw=None):
    """The default ``Options.reject``: stop the run with the error."""
    raise error


@dataclass
class Options:
    """What the engine hands a reader or writer for one run.

    - ``image_root``, ``image_prefix``, ``seed``: the user's ``--image-root``,
      ``--image-prefix`` and ``--seed``.
    - ``settings``: the typed values of the run's readers' and writer's declared
      :class:`curate.Setting` declarations (given as their flags, ``-O NAME=VALUE`` or the Python API's
      ``settings=``), defaults filled in; read them with :meth:`setting`.
    - ``progress(n)``: a reader calls it with the number of bytes it has consumed since the
      last call, for the progress bar. May be None.
    - ``reject(error, raw)``: how a reader or writer hands over a record it cannot handle.
      It raises ``error`` when the user asked to stop on errors (the default) or sets the
      record aside with its reason (``--on-error skip``) and returns; either way the record
      is accounted for. ``raw`` is the record as read (JSON-able), or None.
    - ``path``: the output file, for writers (to choose JSON Lines by extension, say).
    - ``state``: a dict shared by every input file of one pass, so that counters and random
      generators continue from one file to the next (SVIT ids, seeded instructions).
    - ``folder``, ``outputs``: for a writer that ``writes_folder``, the output folder the user
      named and the run's :class:`curate.atomic.Outputs`, to open its other files there
      (``outputs.open(path, "wb")``; they appear with the rest of the run's files, or not at all).
    """

    image_root: Path | None = None
    image_prefix: str | None = None
    seed: int = 0
    settings: dict[str, object] = field(default_factory=dict)
    progress: Callable[[int], None] | None = None
    reject: Callable[[RecordError, object], None] = None
    path: Path | None = None
    state: dict = field(default_factory=dict)
    folder: Path | None = None
    outputs: object = None

    def __post_init__(self):
        if self.reject is None:
            self.reject = raise_error

    def setting(self, name: str):
        """The value of the setting ``name`` (its default when the user gave none)."""
        return self.settings.get(name)


class Reader(ABC):
    """Turns one input file into Samples.

    Class attributes: ``name`` (what users type), ``description`` (one line for `curate
    formats`), ``box_style`` (a :class:`curate.boxes.BoxStyle` saying how boxes in the text
    are written and what they mean; None: no boxes), ``settings`` (its
    :class:`curate.Setting` declarations: each a flag on the commands that use it, a keyword in the
    Python API, a typed value in ``options.setting(name)``). The run converts the boxes of the
    samples a reader yields to the writer's style.
    """

    name: str = ""
    description: str = ""
    box_style = None
    settings: tuple = ()
    holds_images: bool = False      # its samples' images are bytes it read (ImageBytes): no --image-root needed

    def sniff(self, path: Path, head: str) -> int:
        """How sure this reader is that it can read ``path``: 0 means not mine, higher wins
        (the bundled formats use 10-20). ``head`` is the first 64 KB of the file as text."""
        return 0

    @abstractmethod
    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        """Yield the file's Samples lazily, in file order. A record that cannot become a Sample
        goes to ``options.reject(RecordError(...), raw)``; call ``options.progress(bytes)`` as
        the file is consumed."""


@dataclass
class Sidecar:
    """A file a trainer needs beside the data (LLaMA-Factory's ``dataset_info.json``,
    InternVL's meta JSON), written atomically with the output. ``render(written, existing)``
    gets how many samples were written and, with ``merge``, the file's text when the outputs
    commit (None when it does not exist yet; read under a lock, so runs merging at once each
    add their part), and returns the new text."""

    path: Path
    role: str
    render: Callable[[int, str | None], str]
    merge: bool = False


class Writer(ABC):
    """Writes Samples to one output stream. Attributes as for :class:`Reader`, and
    ``suffixes``: the output file endings the trainer can read (empty: any);
    ``loads_with_datasets``: True when the trainer loads the file through Hugging Face
    ``datasets``, whose columns hold one type (ids are then written as strings unless the user
    passes ``--ids keep``, see :class:`curate.stages.IdPolicy`); ``embeds_images``: the images'
    bytes go into the output (no ``--extract-images``, no image root needed for images held as
    bytes); ``writes_folder``: the output is a folder (a dataset of shards): ``stream`` is then
    its ``README.md``, and the writer opens its other files through ``options.outputs`` under
    ``options.folder``."""

    name: str = ""
    description: str = ""
    box_style = None
    settings: tuple = ()
    suffixes: tuple[str, ...] = ()
    loads_with_datasets: bool = False
    embeds_images: bool = False
    writes_folder: bool = False

    @abstractmethod
    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        """Consume every sample and write it to the text ``stream`` (the engine owns the
        temporary file and the rename); return how many were written. A sample this format
        cannot hold goes to ``options.reject(RecordError(...), None)`` and is not counted."""

    def box_style_for(self, options: Options):
        """The box style of this run's output (a writer whose convention depends on one of its
        options, such as the model it writes for, overrides this)."""
        return self.box_style

    def sidecars(self, output: Path, options: Options) -> list[Sidecar]:
        """Files to write beside ``output`` (none by default)."""
        return []


class LoadedEmbedder(ABC):
    """A model ready to embed. ``preprocess`` runs in decode workers (threads, forked
    processes or Ray tasks), ``embed`` in the process that holds the model.

    Attributes the engine reads: ``embedder`` (the plugin's name), ``model_name``,
    ``weights_digest`` (with ``embedder`` and ``model_name``, the cache key; include anything
    that changes the vectors, such as the preprocessing), ``dim``, ``short_side`` (JPEGs may be
    decoded at reduced size down to this; None: full decode), ``device``, and
    ``default_threshold`` (the cosine similarity at which dedup calls two images duplicates
    when the user gives no ``--threshold``; None: curate's 0.9).

    Optional: ``preprocess_decoded(images)``, the same preprocessing on upright RGB uint8
    (3, H, W) torch tensors already on ``device`` (JPEGs decoded there, ``--decode device``),
    returning a batch ``embed`` takes. An embedder without it has its images decoded on the CPU.
    """

    embedder: str = ""
    model_name: str = ""
    weights_digest: str = ""
    dim: int = 0
    short_side: int | None = None
    device: str = "cpu"
    default_threshold: float | None = None

    @abstractmethod
    def preprocess(self, image) -> np.ndarray:
        """An upright RGB PIL image to the model's input as an array (uint8 CHW for the timm models)."""

    def preprocessor(self):
        """``preprocess`` as a small picklable callable, for decode workers in other processes."""
        return self.preprocess

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of ``preprocess`` outputs to an (n, dim) float32 array of unit vectors."""


class Embedder(ABC):
    """An embedder plugin: a factory that loads a model. ``default_model`` is used when the
    user names none. ``settings``: its :class:`curate.Setting` declarations (flags of ``curate
    dedup`` and ``curate embed``); their typed values reach :meth:`load` as keywords."""

    name: str = ""
    description: str = ""
    default_model: str = ""
    default_threshold: float | None = None
    settings: tuple = ()

    @abstractmethod
    def load(self, model: str | None, weights: str | None, device: str, **settings) -> LoadedEmbedder:
        """Load ``model`` (None: ``default_model``) with ``weights`` (a file, or None for the
        model's own pretrained weights) on ``device`` (auto, cpu or cuda); ``settings``: the
        values of the declared settings, by name (none when it declares none). A setting that
        changes the vectors must change the model's ``weights_digest`` (the cache key). Raise
        :class:`curate.CurateError` with a one-line reason when the model cannot be loaded."""


class SimilarityIndex(ABC):
    """One index of unit vectors (cosine similarity = dot product); ids are insertion positions.
    ``exact_scores``: :meth:`search` gives each query's k best by
    :func:`curate.similarity.similarities`, ties to the earlier id, and takes a third argument,
    a :class:`curate.nearest.Wanted` (which of them are wanted), as the built-in exact and
    partitioned indexes do; otherwise the report rescores what it finds."""

    exact_scores = False

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append (n, dim) float32 unit vectors; they get the next n ids."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (q, k), best first; id -1 and similarity -inf pad missing ones."""

    @abstractmethod
    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, id, similarity) with similarity >= threshold, not capped by any k."""

    @abstractmethod
    def __len__(self) -> int:
        """How many vectors the index holds."""

    def ready(self) -> None:
        """Finish building (an index that trains on its first search trains here)."""

    def block_pairs(self, queries: np.ndarray, first: int, threshold: float,
                    alive: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs of the walk for ``queries``, the held vectors at positions ``first``,
        ``first + 1``, ...: as :meth:`range_search`. An index may leave out the pairs with a
        later vector (id > first + row), which the walk meets again from their other side: the
        exact index does, and so computes half the products. It may also leave out the pairs
        with a vector whose ``alive`` entry is False (an image the walk has removed): then many
        copies of one picture make pairs with its one kept copy only, not with each other."""
        return self.range_search(queries, threshold)

    def span_pairs(self, queries: np.ndarray, first: int, threshold: float, alive: np.ndarray | None = None,
                   limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """:meth:`block_pairs` for many of the walk's blocks at once, for an index whose products
        cost less in larger batches (the partitioned index); None to be asked block by block
        (the default), and None when the pairs would pass ``limit`` (many copies of one
        picture: within one block the walk's ``alive`` keeps them in bounds)."""
        return None


class IndexKind(ABC):
    """An index plugin: a factory of empty indexes. ``settings``: its :class:`curate.Setting`
    declarations (flags of ``curate dedup``), whose typed values reach :meth:`new` as keywords."""

    name: str = ""
    description: str = ""
    settings: tuple = ()

    @abstractmethod
    def new(self, dim: int, capacity: int, **settings) -> SimilarityIndex:
        """An empty index for vectors of ``dim``; ``capacity`` is how many will be added (a
        hint); ``settings``: the values of the declared settings, by name (hnsw: hnsw_m,
        hnsw_ef_construction, hnsw_ef)."""


# The signal that is the embedding itself (dedup's default signals: curate.dedup_settings).
EMBEDDING = "embedding"


class Signal(ABC):
    """A near-duplicate signal besides the embedding (a perceptual hash, an exact-content hash).

    Every signal turns an image into a short unit vector, so that all signals are searched by
    the same indexes and decided by the same keep/remove walk: a pair is a near-duplicate when
    any signal's cosine similarity reaches that signal's threshold. Fingerprints are computed
    in the decode workers (beside the model's preprocessing) and cached per signal.

    Attributes: ``name``, ``description``, ``dim`` (the vector's length), ``version`` (change
    it when fingerprints change: it keys the cache, with the values of its settings), ``unit``
    (what users type after ``--signals NAME=``, e.g. "distance"), ``default`` (the default in
    that unit) and ``settings`` (its :class:`curate.Setting` declarations, flags of ``curate
    dedup``; a run uses a copy of the signal whose ``values`` holds their typed values).
    """

    name: str = ""
    description: str = ""
    settings: tuple = ()
    values: Mapping = MappingProxyType({})
    dim: int = 64
    version: str = "1"
    unit: str = "similarity"
    default: float = 1.0
    verified: bool = True      # False: a match is proof on its own (the same bytes or pixels)

    @abstractmethod
    def fingerprint(self, image, path: Path) -> np.ndarray:
        """An upright RGB PIL image (possibly decoded at reduced size; ``image.info["draft"]``
        says so) and its file, to a (dim,) float32 unit vector."""

    def similarity(self, value: float) -> float:
        """A threshold in this signal's unit to the cosine similarity the walk compares with."""
        return float(value)

    def describe(self, similarity: float) -> dict:
        """How removed.jsonl and the report show a match, e.g. ``{"distance": 3}``."""
        return {"score": round(float(similarity), 6)}


@dataclass(frozen=True)
class Verdict:
    """A verifier's answer for one candidate pair: ``same`` (the same picture: the later image
    may go), ``score`` (the verifier's measure, in its own ``unit``; reported with the pair) and
    ``detail`` (a few words on how it decided, for the report)."""

    same: bool
    score: float
    detail: str = ""


class Verifier(ABC):
    """Confirms a candidate pair before an image is removed: the signals propose pairs that
    look alike, a verifier says whether they are the same picture (a chart with another bar, a
    page with another word, a cover with another title is not).

    ``prepare`` runs once per image that takes part in a candidate pair and its result is kept
    while the walk needs it; ``compare`` runs once per candidate pair (a kept image and a later
    one). Attributes: ``name``, ``description``, ``version``, ``unit`` (what ``score`` means) and
    ``settings`` (its :class:`curate.Setting` declarations, flags of ``curate dedup``; a run uses
    a copy of the verifier whose ``values`` holds their typed values).
    Failures: ``prepare`` may raise :class:`curate.images.UnreadableImage` (or any error): the pair
    is then kept, never removed unverified.
    ``parallel``: ``prepare`` and ``compare`` may run on several threads at once (each thread with
    its own pair; the same prepared image may be in two of them, read only). The walk then has
    the next pairs compared on ``--workers`` threads while it decides; the verdicts must depend
    on the pair alone, so the decisions stay those of one thread. Worth it where the heavy calls
    release the GIL (OpenCV, numpy, Pillow); False (one thread) unless the verifier says so.
    """

    name: str = ""
    description: str = ""
    version: str = "1"
    unit: str = "score"
    settings: tuple = ()
    values: Mapping = MappingProxyType({})
    parallel: bool = False

    @abstractmethod
    def prepare(self, path: Path):
        """What ``compare`` needs of one image file (decoded once)."""

    @abstractmethod
    def compare(self, kept, candidate) -> Verdict:
        """Whether ``candidate`` (prepared) is the same picture as ``kept`` (prepared)."""


CONTRACTS = {"reader": Reader, "writer": Writer, "embedder": Embedder, "index": IndexKind, "signal": Signal,
             "verifier": Verifier}


def contract_problem(kind: str, component) -> str | None:
    """Why ``component`` (a class or an instance) cannot serve as a ``kind``, or None: it must
    subclass the contract (whose base class holds the defaults) and implement each abstract
    method."""
    if kind == "filter":
        from .stages import Filter as contract       # a stage: stages.py holds the run's parts
    else:
        contract = CONTRACTS[kind]
    cls = component if isinstance(component, type) else type(component)
    missing = sorted(m for m in contract.__abstractmethods__ if not callable(getattr(cls, m, None))
                     or getattr(getattr(cls, m), "__isabstractmethod__", False))
    lacks = f" ({', '.join(m + '()' for m in missing)} missing)" if missing else ""
    if not issubclass(cls, contract):
        return f"is not a curate {contract.__name__}: it must subclass curate.{contract.__name__}{lacks}"
    if missing:
        return f"is not a curate {contract.__name__}:{lacks[:-1].replace(' (', ' ')}"
    return None


def samples_from_json(path: Path, options: Options, to_sample) -> Iterator[Sample]:
    """Each record of a JSON array or JSON Lines file through ``to_sample(record, path, index)``;
    a record it refuses (RecordError), or a line that is not JSON, goes to ``options.reject``."""
    from .jsonstream import iter_records
    for index, record in iter_records(path, options.progress):
        if isinstance(record, RecordError):
            options.reject(record, None)
            continue
        try:
            sample = to_sample(record, path, index)
        except RecordError as error:
            options.reject(error, record)
            continue
        yield sample


def head_has_keys(head: str, *keys: str) -> bool:
    """Whether every key appears, quoted, in a file's head (for ``sniff``)."""
    return all(json.dumps(k) in head for k in keys)
