"""Turn images into L2-normalised vectors: decode in workers while the model runs.

Pillow decodes and resizes with the GIL released and torch runs its kernels without it,
so on a few cores a thread pool that prepares the next batches keeps the model busy with
no pickling. On many cores (a GPU machine) the Python glue between those calls becomes
the limit, and forked decode processes scale further.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import EmbeddingCache, image_key
from .contracts import Embedder, LoadedEmbedder  # noqa: F401  (re-exported)
from .errors import CurateError
from .images import UnreadableImage, load_rgb
from .interrupts import ignore_signals
from .registry import describe, describe_name
from .vectors_file import run_vectors

LOOKUP_ROWS = 65_536          # images looked up in the caches at a time (their vectors read at once)


class PluginFailure(str):
    """Why an image could not be used when a plugin's output was at fault, not the image: the
    reason as shown, and ``plugin``, the component it names (``signal 'x' from package 'y'``)."""

    def __new__(cls, plugin: str, what: str):
        reason = super().__new__(cls, f"{plugin} {what}")
        reason.plugin, reason.what = plugin, what
        return reason

    def __reduce__(self):          # to decode processes and back
        return PluginFailure, (self.plugin, self.what)


@dataclass
class EmbedResult:
    vectors: np.ndarray                                   # (n, dim); rows of failed images are zero
    ok: np.ndarray                                        # (n,) bool
    failures: dict[int, str] = field(default_factory=dict)  # position -> reason
    embedded: int = 0                                     # computed in this run
    cached: int = 0                                       # taken from the cache
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    signals: dict[str, np.ndarray] = field(default_factory=dict)   # per signal: (n, dim) fingerprints
    observed: dict[str, dict[int, object]] = field(default_factory=dict)  # per observer: position -> its value
    runtime: str | None = None                            # what ran the model (torch, onnxruntime)
    cache_file: Path | None = None                        # the embedding cache's vectors.f32 (None: no cache)
    cache_rows: np.ndarray | None = None                  # (n,) each vector's row there, -1 where none

    def observed_by_image(self, images: list[str]) -> dict[str, dict[str, object]]:
        """The observers' values keyed by image (``images``: each position's image path)."""
        return {name: {images[i]: value for i, value in values.items()} for name, values in self.observed.items()}


@dataclass
class SignalSet:
    """The signals computed beside the embedding, with a cache for each (None: no cache), and
    the observers (:meth:`curate.Filter.decode_observer`) that see each image decoded for it."""

    signals: list = field(default_factory=list)
    caches: list = field(default_factory=list)
    observers: list = field(default_factory=list)

    def __iter__(self):
        return iter(zip(self.signals, self.caches or [None] * len(self.signals)))


def cached_or_todo(paths, model: LoadedEmbedder, cache: EmbeddingCache | None, progress, errors,
                   signals: SignalSet | None = None):
    """The result so far (failures given up front, vectors and fingerprints found in the caches),
    each image's cache key, and the positions still to embed. An image is taken from the cache
    only when every cache (the model's and each signal's) has it. Shared by both engines."""
    n = len(paths)
    signals = signals or SignalSet()
    folder = cache.folder if cache is not None else None          # where vectors too many to hold go
    result = EmbedResult(run_vectors(n, model.dim, folder), np.zeros(n, bool), dict(errors or {}))
    result.warnings += list(getattr(model, "warnings", ()))     # such as a runtime that fell back
    result.runtime = getattr(model, "runtime", None)
    result.signals = {signal.name: run_vectors(n, signal.dim, folder) for signal in signals.signals}
    result.observed = {observer.name: {} for observer in signals.observers}
    failures = result.failures
    keys: dict[int, tuple] = {}
    for i, path in enumerate(paths):
        if i in failures or path is None:
            failures.setdefault(i, "no path")
            continue
        try:
            keys[i] = image_key(path)
        except FileNotFoundError:
            failures[i] = "missing file"
        except OSError as e:
            failures[i] = f"cannot read ({e.strerror})"
    if progress and failures:
        progress(len(failures))
    todo = list(keys)
    channels = [(result.vectors, cache)] + [(result.signals[signal.name], c) for signal, c in signals]
    if cache is not None:
        result.cache_file, result.cache_rows = cache.vectors_path, np.full(n, -1, np.int64)
    if cache is not None and todo:
        missed = []
        for start in range(0, len(todo), LOOKUP_ROWS):       # a part at a time: never every vector at once
            part = todo[start:start + LOOKUP_ROWS]
            missed += _take_cached(result, part, [keys[i] for i in part], channels, cache, progress)
        todo = missed
        for _, c in channels:
            result.warnings += c.warnings if c is not None else []
    return result, keys, todo


def _take_cached(result: EmbedResult, part: list[int], part_keys: list, channels, cache: EmbeddingCache,
                 progress) -> list[int]:
    """Fill ``result`` with the images of ``part`` that every cache holds; the others, to embed."""
    found = [_verified_rows(c, part_keys) if c is not None else {} for _, c in channels]
    everywhere = sorted(set.intersection(*(set(f) for f in found)))
    hits = [part[j] for j in everywhere]
    for (matrix, _), rows in zip(channels, found):
        if hits:
            matrix[hits] = np.stack([rows[j] for j in everywhere])
    result.ok[hits] = True
    result.cache_rows[hits] = [cache.rows[part_keys[j]] for j in everywhere]
    result.cached += len(hits)
    if progress and hits:
        progress(len(hits))
    taken = set(everywhere)
    return [i for j, i in enumerate(part) if j not in taken]


def _verified_rows(cache: EmbeddingCache, keys: list) -> dict[int, np.ndarray]:
    """Position in ``keys`` -> the cached row, for the rows that pass verification."""
    found = cache.lookup(keys)
    if not found:
        return {}
    vectors, good = cache.read_verified(list(found.values()))
    return {j: vectors[k] for k, (j, ok) in enumerate(zip(found, good)) if ok}


def store(result: EmbedResult, positions: list[int], vectors: np.ndarray, fingerprints: dict, keys: dict,
          cache: EmbeddingCache | None, signals: SignalSet) -> None:
    """Record freshly embedded images (vectors and each signal's fingerprints), and cache them."""
    result.vectors[positions] = vectors
    result.ok[positions] = True
    result.embedded += len(positions)
    for signal, _ in signals:
        result.signals[signal.name][positions] = fingerprints[signal.name]
    if cache is not None and positions:
        image_keys = [keys[i] for i in positions]
        cache.append(image_keys, vectors)
        result.cache_rows[positions] = [cache.rows[key] for key in image_keys]
        for signal, signal_cache in signals:
            signal_cache.append(image_keys, fingerprints[signal.name])


def checked_vectors(model: LoadedEmbedder, out, count: int) -> tuple[np.ndarray, np.ndarray]:
    """An embedder's output as float32, and which rows are finite. A wrong shape is the
    plugin's fault and stops the run, naming it."""
    vectors = _as_float32(out)
    if vectors is None or vectors.shape != (count, model.dim):
        shape = None if vectors is None else vectors.shape
        raise CurateError(f"{describe_name('embedder', model.embedder)} ({model.model_name}) returned vectors of "
                          f"shape {shape} for {count} images; expected ({count}, {model.dim})")
    return vectors, np.isfinite(vectors).all(axis=1)


def not_finite(model: LoadedEmbedder) -> PluginFailure:
    """The failure of an image whose vector came back NaN or inf."""
    return PluginFailure(describe_name("embedder", model.embedder), "returned a vector that is not finite (NaN or inf)")


def checked_fingerprint(signal, image, path: Path) -> np.ndarray:
    """One signal's fingerprint of one image, held to the Signal contract. A wrong shape is the
    plugin's fault and stops the run, naming it; an error, or a value that is not finite, makes
    this image unusable, with a reason that names the plugin."""
    name = describe("signal", signal)
    try:
        vector = _as_float32(signal.fingerprint(image, path))
    except Exception as e:  # noqa: BLE001 - a plugin's failure on one image is that image's
        raise UnreadableImage(PluginFailure(name, f"failed: {type(e).__name__}: {' '.join(str(e).split())}")) from None
    if vector is None or vector.shape != (signal.dim,):
        shape = None if vector is None else vector.shape
        raise CurateError(f"{name} returned a fingerprint of shape {shape}; expected ({signal.dim},)")
    if not np.isfinite(vector).all():
        raise UnreadableImage(PluginFailure(name, "returned a fingerprint that is not finite (NaN or inf)"))
    return vector


def checked_similarity(signal, value: float) -> float:
    """A signal's threshold as a cosine similarity, through its ``similarity()``: an error it
    raises, or an answer that is not a finite number, names the plugin."""
    name = describe("signal", signal)
    try:
        similarity = signal.similarity(value)
    except CurateError:
        raise
    except Exception as e:
        raise CurateError(f"{name} failed: similarity({value!r}) raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from None
    if isinstance(similarity, bool) or not isinstance(similarity, (int, float, np.floating, np.integer)) \
            or not np.isfinite(similarity):
        raise CurateError(f"{name}: similarity({value!r}) returned {similarity!r}; expected a finite number")
    return float(similarity)


def check_plugins_gave_something(result: EmbedResult) -> None:
    """A plugin whose every output was unusable (NaN, or an error) is broken, or does not suit
    these images: calling every image unreadable would keep them all as if the data were at
    fault (or, with --drop-unreadable, reject them all). So the run stops, naming it. A plugin
    that fails on some images only leaves those images unreadable, each with its reason."""
    if result.ok.any():
        return
    blamed = [reason for reason in result.failures.values() if isinstance(reason, PluginFailure)]
    if blamed:
        first = blamed[0]
        count = sum(reason.plugin == first.plugin for reason in blamed)
        raise CurateError(f"{first.plugin} gave no usable output for any of the {count:,} images it was given "
                          f"(first: {first.what}); it is broken or does not suit these images")


def _as_float32(value) -> np.ndarray | None:
    """A plugin's output as a float32 array, or None when it is not numbers."""
    try:
        return np.asarray(value, dtype=np.float32) if value is not None else None
    except (TypeError, ValueError):
        return None


_WORKER: tuple = (None, (), ())   # (model, signals, observers), set in forked decode processes


def _set_worker(model, signals, observers=()):
    """In each forked decode process. Ctrl-C reaches a terminal's whole process group: the
    parent handles it (its clean line, then it shuts this pool down), so the workers ignore
    it rather than each printing a traceback."""
    global _WORKER
    ignore_signals()
    _WORKER = (model, signals, observers)


def prepare_images(paths: list[Path], model: LoadedEmbedder | None = None, signals=None, observers=()) -> list:
    """Decode and preprocess a few images: for each, (array, fingerprints, None) or (None, None, reason)."""
    if model is None:
        model, signals, observers = _WORKER
    return [prepare_image(path, model, signals or (), observers) for path in paths]


def prepare_image(path: Path, model: LoadedEmbedder, signals=(), observers=()):
    """Decode one image once, for the model (its input array), for each signal (its
    fingerprint) and each observer (its value, under ``(OBSERVED, name)`` among the
    fingerprints): (array, fingerprints, None) or (None, None, reason). A JPEG is decoded in
    draft mode to the model's short side, or to an observer's ``long_side`` where that is larger."""
    try:
        image = load_rgb(path, model.short_side, long_at_least=max((o.long_side for o in observers), default=None))
        fingerprints = _fingerprints(image, path, signals)
        for observer in observers:
            fingerprints[OBSERVED, observer.name] = observer.observe(image, path)
        return model.preprocess(image), fingerprints, None
    except CurateError:
        raise                     # a plugin that broke its contract stops the run
    except Exception as e:  # noqa: BLE001 - a broken file must not stop a million-image run
        return None, None, _failure(e)


OBSERVED = "observed"       # marks an observer's value among an image's fingerprints


def _fingerprints(image, path: Path, signals) -> dict[str, np.ndarray]:
    return {signal.name: checked_fingerprint(signal, image, path) for signal in signals}


def _failure(error: Exception) -> str:
    """Why an image could not be used: the bound it broke (a PluginFailure when a plugin's
    output was at fault), or what the decoder raised."""
    if isinstance(error, UnreadableImage):
        return error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    return f"cannot decode ({type(error).__name__}: {error})"


def read_for_device_task(path: Path, model: LoadedEmbedder, signals=()):
    """For the device decoder: the file's JPEG bytes and orientation (None: decode it on the
    CPU), the fingerprints of the signals, which need Pillow's pixels ({} when there are no
    signals; None when the file goes to the CPU path, which computes them), and the reason
    when the file cannot be used."""
    from .device_decode import read_for_device
    data, orientation, reason = read_for_device(path)
    if reason is not None or data is None or not signals:
        return data, orientation, ({} if not signals else None), reason
    try:
        return data, orientation, _fingerprints(load_rgb(path, model.short_side), path, signals), None
    except CurateError:
        raise
    except Exception as e:  # noqa: BLE001 - as in prepare_image
        return None, 1, None, _failure(e)


def decode_on_device(done: list, paths: list, model: LoadedEmbedder, signals) -> list:
    """Turn the read files of one batch into prepared entries, (i, input, fingerprints,
    reason): JPEGs decoded together on the model's device and preprocessed there, the rest
    (other formats, JPEGs the device decoder refuses) decoded on the CPU as usual."""
    from .device_decode import decode_batch, upright
    jpegs = [(i, data, orientation, f) for i, data, orientation, f, reason in done if data is not None]
    prepared = [(i, None, None, reason) for i, data, _, _, reason in done if reason is not None]
    on_cpu = [i for i, data, _, _, reason in done if data is None and reason is None]
    decoded = decode_batch([data for _, data, _, _ in jpegs], model.device) if jpegs else []
    upright_images, kept = [], []
    for (i, _, orientation, fingerprints), image in zip(jpegs, decoded):
        if image is None:
            on_cpu.append(i)
        else:
            upright_images.append(upright(image, orientation))
            kept.append((i, fingerprints))
    if kept:
        batch = model.preprocess_decoded(upright_images)
        prepared += [(i, batch[k], fingerprints, None) for k, (i, fingerprints) in enumerate(kept)]
    prepared += [(i, *prepare_image(paths[i], model, signals)) for i in on_cpu]
    return prepared


def decode_pool(model: LoadedEmbedder, workers: int, processes: bool, signals=(), observers=()):
    """Threads suit few cores (Pillow releases the GIL); forked processes scale on many cores."""
    if processes:
        import multiprocessing
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_set_worker,
                                   initargs=(model, list(signals), list(observers)))
    return ThreadPoolExecutor(max_workers=workers)


def embed_files(paths: list[Path | None], model: LoadedEmbedder, *, cache: EmbeddingCache | None = None,
                batch_size: int = 32, workers: int = 2, progress: Callable[[int], None] | None = None,
                errors: dict[int, str] | None = None, processes: bool = False, on_device: bool = False,
                signals: SignalSet | None = None) -> EmbedResult:
    """Embed every file; ``None`` entries (or those in ``errors``) are failures given up front.

    ``workers`` threads (or forked processes) decode the next batches, and compute the
    signals' fingerprints and the observers' values, while the model runs. ``on_device``: the
    threads only read the files, and JPEGs are decoded in batches on the model's device, one
    batch ahead of the model on a thread of their own (see device_decode); the observers then
    see none of them."""
    started = time.monotonic()
    signals = signals or SignalSet()
    result, keys, todo = cached_or_todo(paths, model, cache, progress, errors, signals)
    failures = result.failures
    names = [signal.name for signal in signals.signals]

    def read_and_decode(tasks):
        read = [(i, *future.result()) for positions, future in tasks for i in positions]
        return decode_on_device(read, paths, model, signals.signals)

    def run_batch(tasks):
        if on_device:                  # the next batch decodes while this one's model runs
            decoding.append(decoder.submit(read_and_decode, tasks))
            if len(decoding) > 1:
                embed_batch(decoder.result(decoding.popleft()))
        else:
            embed_batch([(i, *prepared) for positions, future in tasks for i, prepared in zip(positions, future.result())])

    def embed_batch(done):
        good = [(i, x, f) for i, x, f, _ in done if x is not None]
        for observer in observers:
            seen = result.observed[observer.name]
            seen.update((i, f[OBSERVED, observer.name]) for i, _, f in good if (OBSERVED, observer.name) in f)
        for i, _, _, reason in done:
            if reason is not None:
                failures[i] = reason
        if good:
            out, finite = checked_vectors(model, model.embed(_stack([x for _, x, _ in good])), len(good))
            for (i, _, _), usable in zip(good, finite):
                if not usable:
                    failures[i] = not_finite(model)
            kept = [(i, f) for (i, _, f), usable in zip(good, finite) if usable]
            fingerprints = {name: np.stack([f[name] for _, f in kept]) if kept else None for name in names}
            store(result, [i for i, _ in kept], out[finite], fingerprints, keys, cache, signals)
        if progress:
            progress(len(done))

    # Threads take one image per task; processes a few, to keep inter-process traffic low.
    processes = processes and not on_device
    observers = [] if on_device else signals.observers
    per_task = max(1, batch_size // (2 * workers)) if processes else 1
    decoding: deque = deque()
    with ExitStack() as stack:
        pool = stack.enter_context(decode_pool(model, max(1, workers), processes, signals.signals, observers))
        if on_device:
            from .device_decode import DecodeAhead
            decoder = stack.enter_context(DecodeAhead(model.device))
        pending: deque = deque()
        for start in range(0, len(todo), batch_size):
            tasks = []
            batch = todo[start:start + batch_size]
            for k in range(0, len(batch), per_task):
                positions = batch[k:k + per_task]
                chunk = [paths[i] for i in positions]
                if on_device:
                    future = pool.submit(read_for_device_task, chunk[0], model, signals.signals)
                elif processes:
                    future = pool.submit(prepare_images, chunk)
                else:
                    future = pool.submit(prepare_images, chunk, model, signals.signals, observers)
                tasks.append((positions, future))
            pending.append(tasks)
            if len(pending) > 2:       # two batches decode ahead while the model runs
                run_batch(pending.popleft())
        while pending:
            run_batch(pending.popleft())
        while decoding:
            embed_batch(decoder.result(decoding.popleft()))
    result.seconds = time.monotonic() - started
    check_plugins_gave_something(result)
    return result


def _stack(inputs: list):
    """One batch for ``embed``: arrays stacked by numpy; device tensors (from the device
    decoder) and arrays (from the CPU path, in the same batch) stacked by torch."""
    if all(isinstance(x, np.ndarray) for x in inputs):
        return np.stack(inputs)
    import torch
    device = next(x.device for x in inputs if not isinstance(x, np.ndarray))
    return torch.stack([torch.from_numpy(x).to(device) if isinstance(x, np.ndarray) else x for x in inputs])
