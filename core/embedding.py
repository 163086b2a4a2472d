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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import EmbeddingCache, image_key
from .contracts import Embedder, LoadedEmbedder  # noqa: F401  (re-exported)
from .errors import CurateError
from .images import UnreadableImage, load_rgb


@dataclass
class EmbedResult:
    vectors: np.ndarray                                   # (n, dim); rows of failed images are zero
    ok: np.ndarray                                        # (n,) bool
    failures: dict[int, str] = field(default_factory=dict)  # position -> reason
    embedded: int = 0                                     # computed in this run
    cached: int = 0                                       # taken from the cache
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def cached_or_todo(paths, model: LoadedEmbedder, cache: EmbeddingCache | None, progress, errors):
    """The result so far (failures given up front, vectors found in the cache), each image's
    cache key, and the positions still to embed. Shared by the local and the Ray engine."""
    n = len(paths)
    result = EmbedResult(np.zeros((n, model.dim), np.float32), np.zeros(n, bool), dict(errors or {}))
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
    if cache is not None and todo:
        found = cache.lookup([keys[i] for i in todo])
        if found:
            vectors, good = cache.read_verified(list(found.values()))
            found = {j: row for (j, row), ok in zip(found.items(), good) if ok}
            hits = [todo[j] for j in found]
            result.vectors[hits] = vectors[good]
            result.ok[hits] = True
            result.cached = len(found)
            if progress:
                progress(len(found))
        todo = [i for j, i in enumerate(todo) if j not in found]
        result.warnings += cache.warnings
    return result, keys, todo


def checked_vectors(model: LoadedEmbedder, out, count: int) -> tuple[np.ndarray, np.ndarray]:
    """An embedder's output as float32, and which rows are finite. A wrong shape is the
    plugin's fault and stops the run, naming it."""
    vectors = np.asarray(out, dtype=np.float32) if out is not None else None
    if vectors is None or vectors.shape != (count, model.dim):
        shape = None if vectors is None else vectors.shape
        raise CurateError(f"embedder {model.embedder!r} ({model.model_name}) returned vectors of shape {shape} "
                          f"for {count} images; expected ({count}, {model.dim})")
    return vectors, np.isfinite(vectors).all(axis=1)


_WORKER_MODEL: LoadedEmbedder | None = None   # set in forked decode processes


def _set_worker_model(model):
    global _WORKER_MODEL
    _WORKER_MODEL = model


def prepare_images(paths: list[Path], model: LoadedEmbedder | None = None) -> list:
    """Decode and preprocess a few images: for each, (array, None) or (None, reason)."""
    return [prepare_image(path, model or _WORKER_MODEL) for path in paths]


def prepare_image(path: Path, model: LoadedEmbedder):
    """Decode and preprocess one image: (array, None) or (None, reason)."""
    try:
        return model.preprocess(load_rgb(path, model.short_side)), None
    except UnreadableImage as e:
        return None, str(e)
    except Exception as e:  # a broken file must not stop a million-image run
        return None, f"cannot decode ({type(e).__name__}: {e})"


def decode_pool(model: LoadedEmbedder, workers: int, processes: bool):
    """Threads suit few cores (Pillow releases the GIL); forked processes scale on many cores."""
    if processes:
        import multiprocessing
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_set_worker_model,
                                   initargs=(model,))
    return ThreadPoolExecutor(max_workers=workers)


def embed_files(paths: list[Path | None], model: LoadedEmbedder, *, cache: EmbeddingCache | None = None,
                batch_size: int = 32, workers: int = 2, progress: Callable[[int], None] | None = None,
                errors: dict[int, str] | None = None, processes: bool = False) -> EmbedResult:
    """Embed every file; ``None`` entries (or those in ``errors``) are failures given up front.

    ``workers`` threads (or forked processes) decode the next batches while the model runs."""
    started = time.monotonic()
    result, keys, todo = cached_or_todo(paths, model, cache, progress, errors)
    vectors, ok, failures = result.vectors, result.ok, result.failures

    def run_batch(tasks):
        done = [(i, *result) for positions, future in tasks for i, result in zip(positions, future.result())]
        good = [(i, x) for i, x, _ in done if x is not None]
        for i, _, reason in done:
            if reason is not None:
                failures[i] = reason
        if good:
            out, finite = checked_vectors(model, model.embed(np.stack([x for _, x in good])), len(good))
            for (i, _), usable in zip(good, finite):
                if not usable:
                    failures[i] = f"embedder {model.embedder!r} returned a vector that is not finite (NaN or inf)"
            index = [i for (i, _), usable in zip(good, finite) if usable]
            vectors[index] = out[finite]
            ok[index] = True
            result.embedded += len(index)
            if cache is not None and index:
                cache.append([keys[i] for i in index], out[finite])
        if progress:
            progress(len(done))

    # Threads take one image per task; processes a few, to keep inter-process traffic low.
    per_task = max(1, batch_size // (2 * workers)) if processes else 1
    with decode_pool(model, max(1, workers), processes) as pool:
        pending: deque = deque()
        for start in range(0, len(todo), batch_size):
            tasks = []
            batch = todo[start:start + batch_size]
            for k in range(0, len(batch), per_task):
                positions = batch[k:k + per_task]
                chunk = [paths[i] for i in positions]
                future = pool.submit(prepare_images, chunk) if processes else pool.submit(prepare_images, chunk, model)
                tasks.append((positions, future))
            pending.append(tasks)
            if len(pending) > 2:       # two batches decode ahead while the model runs
                run_batch(pending.popleft())
        while pending:
            run_batch(pending.popleft())
    result.seconds = time.monotonic() - started
    return result
