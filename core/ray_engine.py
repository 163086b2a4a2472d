"""The `--engine ray` embedding stage: images are read and decoded by Ray Data tasks on CPU
workers, the model runs in a pool of actors (one per GPU where the cluster has GPUs), and
the driver appends what comes back to the same cache as the local engine, so a run can move
between engines and resume. The search for pairs runs in Ray tasks too (:class:`RayPairs`).
Ray is imported only here (``pip install 'curate[ray]'``)."""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from .errors import CurateError, setting
from .interrupts import handlers_kept, signals_held
from .embedding import EmbedResult, SignalSet, cached_or_todo, check_plugins_gave_something, not_finite, store
from .similarity import Pairs


class _Preprocessing:
    """What decode tasks need of the model (its preprocessing and decode size), picklable without it."""

    def __init__(self, model):
        self.short_side = model.short_side
        self.preprocess = model.preprocessor()


def _decode(batch: dict, model, signals) -> dict:
    from .embedding import prepare_image
    pixels, ok, reasons, prints = [], [], [], {signal.name: [] for signal in signals}
    shape = None
    for path in batch["path"]:
        array, fingerprints, reason = prepare_image(Path(path), model, signals)
        pixels.append(array)
        ok.append(array is not None)
        reasons.append(reason or "")
        shape = array.shape if array is not None else shape
        for signal in signals:
            prints[signal.name].append(fingerprints[signal.name] if fingerprints else np.zeros(signal.dim, np.float32))
    if shape is None:
        shape = (1,)
    stacked = np.stack([p if p is not None else np.zeros(shape, np.uint8) for p in pixels])
    return {"position": batch["position"], "pixels": stacked, "ok": np.array(ok), "reason": np.array(reasons, object),
            **{f"signal:{name}": np.stack(rows) for name, rows in prints.items()}}


class _EmbedActor:
    """Holds the model; loads it once per actor through the same plugin registry."""

    def __init__(self, embedder: str, model: str | None, weights: str | None, device: str, settings: dict):
        from .registry import get_registry
        self.model = get_registry().get("embedder", embedder).load(model, weights, device, **settings)

    def __call__(self, batch: dict) -> dict:
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((len(ok), self.model.dim), np.float32)
        if ok.any():
            from .embedding import checked_vectors
            vectors[ok] = checked_vectors(self.model, self.model.embed(np.ascontiguousarray(batch["pixels"][ok])),
                                          int(ok.sum()))[0]
        return {"position": batch["position"], "vector": vectors, "ok": ok, "reason": batch["reason"],
                **{key: value for key, value in batch.items() if key.startswith("signal:")}}


@contextmanager
def _without_failure_signal_handler():
    """Ray's C++ core worker, created in this process by ``ray.init``, installs abseil's
    failure-signal handler with sigaction, SIGTERM among its signals (a stack dump, then an
    abort), where no Python code can refuse it. Ray's switch for hosts that handle signals
    themselves (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``, made for the JVM; read from the
    environment when Ray is imported, consulted when the core worker is created) is set for
    this driver only, while it starts: Ray's worker processes keep their handler."""
    try:
        from ray._private import ray_constants
        before = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    except (ImportError, AttributeError):       # another Ray: handlers_kept still puts ours back after
        yield
        return
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = before


def start_ray(address: str | None, num_cpus: int | None):
    try:
        import ray
    except ImportError:
        raise CurateError(f"{setting('engine')} ray needs Ray: pip install 'curate[ray]'") from None
    import logging
    if not ray.is_initialized():
        quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
        # Ctrl-C and SIGTERM stay clean exits with --engine ray, start-up included. Ray's own
        # handlers never replace curate's, not even for a moment (a signal that met them was a
        # sys.exit, or an abort with a stack dump). While curate starts a local instance, a
        # signal also waits until ray.init returns: raised inside it (the core worker's
        # construction) it left Ray half started, and Ray's shutdown at exit crashed with
        # SIGSEGV. Connecting to a cluster can wait on the network for minutes, so there it
        # is raised as soon as Ray's code returns to Python.
        held = nullcontext() if address else signals_held()
        with held, handlers_kept(), _without_failure_signal_handler():
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False        # curate shows its own
    context.raise_original_map_exception = True  # a plugin's CurateError arrives as itself (see below)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _collect(batch: dict, result: EmbedResult, keys, cache, signals: SignalSet, model) -> None:
    """One embedded batch into ``result`` (and the cache): vectors, or each failure's reason."""
    positions = batch["position"].astype(np.int64)
    decoded = batch["ok"].astype(bool)
    finite = np.isfinite(batch["vector"]).all(axis=1)
    for i, was_decoded, usable, reason in zip(positions, decoded, finite, batch["reason"]):
        if not was_decoded:
            result.failures[int(i)] = reason if isinstance(reason, str) else str(reason)
        elif not usable:
            result.failures[int(i)] = not_finite(model)
    ok = decoded & finite
    fingerprints = {signal.name: batch[f"signal:{signal.name}"][ok] for signal in signals.signals}
    store(result, [int(i) for i in positions[ok]], batch["vector"][ok], fingerprints, keys, cache, signals)


def _raise_plugin_error(error: BaseException) -> None:
    """A CurateError raised in a Ray task (a plugin that broke its contract) arrives wrapped in
    Ray's exceptions (Ray Data adds lines about retries to its text): raise its first line."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, CurateError) and type(error).__module__.startswith("curate"):
            raise CurateError(str(error).splitlines()[0]) from None
        error = getattr(error, "cause", None) or error.__cause__


def embed_files_ray(paths, model, spec: dict, *, cache=None, batch_size=32, workers=2, progress=None,
                    errors=None, address: str | None = None, signals: SignalSet | None = None) -> EmbedResult:
    """Like :func:`curate.embedding.embed_files`, on a Ray cluster. ``spec``: how actors load the
    model (embedder, model, weights, device, settings); ``model`` is the driver's copy, for its preprocessing."""
    started = time.monotonic()
    signals = signals or SignalSet()
    result, keys, todo = cached_or_todo(paths, model, cache, progress, errors, signals)
    if todo:
        ray = start_ray(address, num_cpus=None if address else max(2, workers))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        device = spec["device"]
        if device == "auto":
            device = "cuda" if gpus else "cpu"
        dataset = ray.data.from_items([{"position": i, "path": str(paths[i])} for i in todo])
        decoded = dataset.map_batches(_decode, fn_kwargs={"model": _Preprocessing(model),
                                                          "signals": signals.signals},
                                      batch_size=batch_size, batch_format="numpy", num_cpus=1)
        embedded = decoded.map_batches(
            _EmbedActor, fn_constructor_kwargs={**spec, "device": device}, batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, gpus) if gpus else 1),
            num_gpus=1 if gpus else 0)
        # closed here, so an interrupted run stops Ray Data's executor before the exit, not in a
        # thread racing it (which re-initialised Ray and logged a warning under curate's line)
        batches = iter(embedded.iter_batches(batch_size=None, batch_format="numpy"))
        try:
            for batch in batches:
                _collect(batch, result, keys, cache, signals, model)
                if progress:
                    progress(len(batch["position"]))
        except Exception as e:
            _raise_plugin_error(e)
            raise
        finally:
            batches.close()
    result.seconds = time.monotonic() - started
    check_plugins_gave_something(result)
    return result


def _search_block(index, vectors, start: int, stop: int, threshold: float):
    """One Ray task: the index's pairs for the images ``start:stop``."""
    return index.block_pairs(vectors[start:stop], start, threshold)


class RayPairs(Pairs):
    """:class:`curate.similarity.Pairs` whose blocks are searched by Ray tasks, one block of
    queries each, as many at once as the cluster has CPUs: the driver builds the index once
    (k-means included) and puts it and the vectors in Ray's object store, which every task
    reads; the walk takes the blocks' pairs in order on the driver."""

    def __init__(self, channel, block, address: str | None = None):
        super().__init__(channel, block)
        self.index.ready()
        self.ray = start_ray(address, num_cpus=None)
        task = self.ray.remote(num_cpus=1)(_search_block)
        index, vectors = self.ray.put(self.index), self.ray.put(self.vectors)
        n = len(self.vectors)
        self.pending = {start: task.remote(index, vectors, start, min(n, start + block), self.threshold)
                        for start in range(0, n, block)}

    def search(self, start, stop, alive):
        """The block's pairs, searched ahead of the walk (so with removed images' pairs too)."""
        return self.ray.get(self.pending.pop(start))
