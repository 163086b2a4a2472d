"""The `--engine ray` embedding stage: images are read and decoded by Ray Data tasks on CPU
workers, the model runs in a pool of actors (one per GPU where the cluster has GPUs), and
the driver appends what comes back to the same cache as the local engine, so a run can move
between engines and resume. The search for pairs runs in Ray tasks too (:class:`RayPairs`),
which read the vectors from files on a shared path. Ray is imported only here (``pip install 'curate[ray]'``)."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CurateError, setting
from .interrupts import handlers_kept, signals_held
from .embedding import EmbedResult, SignalSet, cached_or_todo, check_plugins_gave_something, not_finite, store
from .nearest import Wanted, band, chosen, narrowed, within_band
from .similarity import (BLOCK, Channel, FoundPairs, Pairs, neighbours_wanted, others_only, pair_similarities,
                         search_threshold, similarities)
from .vectors_file import VectorsFile, read_rows, work_folder, written


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


# --- the search for pairs: Ray tasks that read the vectors from files on a shared path ---------

# A search task reads about this many rows (its partitions' members and the queries that probe
# them): its memory is these rows (300 MB at 768-d) and one block of products.
TASK_ROWS = 100_000
# Vectors per task that finds their partitions (it holds the partitioned index's
# CENTROID_PRODUCTS similarities at once, as the index does).
ASSIGN_ROWS = 65_536
LABEL_ROWS = 65_536                            # at most, of the k-means sample per labelling task
SEARCH_ROWS = 8192                             # a partition's queries multiplied at once in a search task
NEAREST_ROWS = 16_384                          # queries whose nearest one task chooses (about 0.1 GB of candidates)
IN_FLIGHT_PER_CPU = 2                          # tasks submitted ahead, per CPU of the cluster


@dataclass(frozen=True)
class SearchPlan:
    """How a channel's index kind splits into tasks: ``partitions`` 0 is the exact search
    (a task per block of the walk), else k-means partitions searched as the partitioned index
    searches them (``probe`` nearest partitions per query, each vector in its ``spill`` nearest)."""

    partitions: int = 0
    probe: int = 1
    spill: int = 1
    products: str = "float32"     # how vectors are compared with centroids (the index's choice)


def search_plan(channel: Channel) -> SearchPlan | None:
    """The plan for the index that ``channel``'s kind makes for its group (auto decides by
    size, the partitioned index is exact below its training size); None for a kind that does
    not split into tasks over rows (hnsw, a plugin's)."""
    from curate.plugins.indexes import ExactIndex, PartitionedIndex, TorchExactIndex
    n, dim = channel.vectors.shape
    index = channel.kind.new(dim, n, **channel.options)
    if isinstance(index, (ExactIndex, TorchExactIndex)):
        return SearchPlan()
    if isinstance(index, PartitionedIndex):
        if n < index.train_at:
            return SearchPlan()
        return SearchPlan(index.partitions, index.probe, index.spill, index.products_kind)
    return None


def ray_pairs(channel: Channel, block: int = BLOCK, address: str | None = None, work_root: Path | None = None):
    """The walk's pairs for ``channel``: searched by Ray tasks where its index kind splits into
    them (exact, partitioned, auto), on the driver otherwise (see :func:`search_plan`)."""
    plan = search_plan(channel)
    if plan is None:
        return Pairs(channel, block)
    return RayPairs(channel, block, plan, address, work_root)


class RayPairs(FoundPairs):
    """The walk's pairs (:class:`curate.similarity.Pairs`' order and blocks), searched by Ray
    tasks that read the vectors from a file on a path every node sees: the embedding cache's
    ``vectors.f32`` (``channel.source``), else a work file the driver writes once in
    ``work_root`` (the cache folder; removed at the end). The driver trains the k-means
    centroids on a sample, tasks find each vector's partitions (small integer arrays back),
    and a task per group of partitions computes their pairs with exact float32 products. The
    driver holds the pairs found, not the vectors; the walk takes them in order.

    With ``channel.neighbours`` a partitioned search also finds each vector's nearest for the
    report from the same products: each search task writes the candidates near its queries'
    best (:func:`curate.nearest.within_band`) to a work file, sorted by query, and a task per
    ``NEAREST_ROWS`` queries reads its part of every file, scores them and chooses
    (:meth:`nearest`): the same neighbours as the local index's, without a second search and
    without the vectors on the driver."""

    def __init__(self, channel: Channel, block: int, plan: SearchPlan, address: str | None = None,
                 work_root: Path | None = None):
        self.threshold, self.block_size, self.plan = channel.threshold, block, plan
        self.n, self.dim = channel.vectors.shape
        self.channel = channel
        self.address = address
        self.seconds: dict[str, float] = {}
        self.costs: list[TaskCost] = []                  # per task: its memory and time
        self.candidates: list[tuple[str, np.ndarray]] = []   # per search task: its nearest-candidates file, bounds
        self._work = ExitStack()                         # the work folder, kept until the nearest are chosen
        self._parts = None                               # the nearest being read (a generator)
        self.part_rows = NEAREST_ROWS                    # queries per choosing task (the search tasks are told)
        try:
            keeps = bool(channel.neighbours and plan.partitions)
            folder = self._work.enter_context(work_folder(work_root)) if channel.source is None or keeps else None
            self.source = channel.source if channel.source is not None else written(channel.vectors, folder)
            found = self._search(self.source, folder if keeps else None)
        except BaseException:
            self.close()
            raise
        if not self.candidates:
            self.close()
        super().__init__(*_walk_order(found, self.n), channel.threshold)

    def _search(self, source: VectorsFile, folder: Path | None) -> list:
        if not self.plan.partitions:
            return list(self._run(_search_exact, [(str(source.path), self.dim, source.rows[:stop], start,
                                                   self.threshold) for start, stop in _blocks(self.n, self.block_size)]))
        with self._timed("train"):
            centroids = self._centroids(source)
        with self._timed("assign"):
            homes, probes = self._assign(source, centroids)
        with self._timed("search"):
            nearest = neighbours_wanted(self.channel.neighbours, self.n) if folder is not None else None
            calls = (_partition_task(source, group, self.threshold, nearest,
                                     folder / f"nearest-{number}.npy" if folder is not None else None,
                                     self.n, self.part_rows)
                     for number, group in enumerate(_task_groups(homes, probes, self.plan.partitions)))
            found = list(self._run(_search_partitions, calls))
        self.candidates = [(f.nearest_file, f.nearest_bounds) for f in found if f.nearest_file]
        return found

    def nearest(self):
        """Each vector's ``channel.neighbours`` nearest, as
        :func:`curate.similarity.nearest_neighbours` finds them in the local partitioned index
        (the same centroids and probes; chosen by score, ties to the earlier id), by a task per
        ``NEAREST_ROWS`` queries: (sims, ids) of each part in order, as the tasks finish. None
        when the search kept no candidates (an exact search)."""
        if not self.candidates:
            return None
        self._parts = self._nearest_parts()
        return self._parts

    def _nearest_parts(self):
        try:
            started = time.monotonic()
            rows = self._shared(self.source.rows)
            wanted = neighbours_wanted(self.channel.neighbours, self.n)
            calls = ((str(self.source.path), self.dim, rows, start, stop,
                      [(path, int(bounds[b]), int(bounds[b + 1])) for path, bounds in self.candidates
                       if bounds[b + 1] > bounds[b]],
                      wanted, self.plan.spill > 1)
                     for b, (start, stop) in enumerate(_blocks(self.n, self.part_rows)))
            yield from self._run(_choose_nearest, calls)
            self.seconds["nearest"] = time.monotonic() - started
        finally:
            self._parts = None
            self.close()

    def close(self) -> None:
        """The work folder removed (the candidates, and the vectors written for the tasks); the
        neighbours' tasks cancelled if they were left unread."""
        parts, self._parts = self._parts, None
        if parts is not None:
            parts.close()
        self.candidates = []
        self._work.close()

    @contextmanager
    def _timed(self, stage: str):
        """The wall seconds of a stage, into ``seconds`` (for bench/ray_search.py)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = time.monotonic() - started

    def _centroids(self, source: VectorsFile):
        """k-means on the sample the partitioned index trains on, each iteration's nearest
        centroids found by tasks (the products: sample x partitions x dim, the stage that grows
        fastest), the sums on the driver: the same centroids as the local index's, so the same
        partitions (:func:`curate.plugins.centroids.kmeans`). A sample that one task's part
        holds (up to about 1,000 partitions) stays on the driver."""
        from curate.plugins.centroids import Centroids, label_block
        from curate.plugins.indexes import SAMPLE_PER_PARTITION, partition_products
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(self.n, min(self.n, SAMPLE_PER_PARTITION * self.plan.partitions), replace=False))
        rows = source.file_rows(sample)
        block = label_block(self.plan.partitions)
        blocks_per_task = -(-len(rows) // (self._task_slots() * block))       # enough tasks for every slot
        chunk = block * max(1, min(LABEL_ROWS // block, blocks_per_task))

        def labels_of(centroids):
            shared = self._shared(centroids)
            calls = [(str(source.path), self.dim, rows[start:stop], shared, self.plan.products)
                     for start, stop in _blocks(len(rows), chunk)]
            return np.concatenate(list(self._run(_label_rows, calls)))
        return Centroids.train(read_rows(source.path, self.dim, rows), self.plan.partitions,
                               partition_products(self.dim, self.plan.products),
                               # one task would only add its round trips to the driver's own products
                               labels_of=labels_of if len(rows) > chunk else None)

    def _assign(self, source: VectorsFile, centroids) -> tuple[np.ndarray, np.ndarray]:
        """Each vector's ``spill`` home partitions and ``probe`` probed ones, found by tasks."""
        shared = self._shared(centroids)
        chunks = [(str(source.path), self.dim, source.file_rows(np.arange(start, stop)), shared,
                   self.plan.spill, self.plan.probe, self.plan.products)
                  for start, stop in _blocks(self.n, ASSIGN_ROWS)]
        found = list(self._run(_assign_partitions, chunks))
        return np.concatenate([h for h, _ in found]), np.concatenate([p for _, p in found])

    def _ray(self):
        return start_ray(self.address, num_cpus=None)

    def _shared(self, value):
        """``value`` in Ray's object store, read by every task that gets it."""
        return self._ray().put(value)

    def _run(self, function, calls):
        """``function`` over ``calls`` (argument tuples) in Ray tasks, at most a few per CPU
        in flight: the results in the order of ``calls``, each as soon as those before it are
        in (a later one waits, held, until then); each task's cost in ``costs``."""
        ray = self._ray()
        task = ray.remote(num_cpus=1)(measured)
        window = self._task_slots()
        pending, results, given = {}, {}, 0
        try:
            for number, args in enumerate(calls):
                pending[task.remote(function, *args)] = number
                while len(pending) >= window:
                    self._collect(ray, pending, results)
                    while given in results:
                        yield results.pop(given)
                        given += 1
            while pending:
                self._collect(ray, pending, results)
                while given in results:
                    yield results.pop(given)
                    given += 1
        except Exception as e:
            _raise_plugin_error(e)
            raise
        finally:
            if pending and ray.is_initialized():         # not after Ray's shutdown (it would start Ray again)
                for ref in pending:
                    ray.cancel(ref)

    def _task_slots(self) -> int:
        """Tasks in flight at once: a few per CPU of the cluster."""
        return max(2, IN_FLIGHT_PER_CPU * int(self._ray().cluster_resources().get("CPU", 1)))

    def _collect(self, ray, pending: dict, results: dict) -> None:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        results[pending.pop(done)] = self._kept(ray.get(done))

    def _kept(self, measured_result):
        """A task's result, its cost noted."""
        result, cost = measured_result
        self.costs.append(cost)
        return result


def _blocks(n: int, size: int):
    return [(start, min(n, start + size)) for start in range(0, n, size)]


@dataclass
class SearchResult:
    """A search task's pairs: (later, earlier, similarity); and where it wrote its queries'
    nearest candidates (a file sorted by query, and where each ``part_rows`` of them start)."""

    later: np.ndarray
    earlier: np.ndarray
    sims: np.ndarray
    nearest_file: str | None = None
    nearest_bounds: np.ndarray | None = None


@dataclass
class TaskCost:
    """What a task cost its worker process: memory (RSS when it started, and its peak, in
    bytes: what a worker needs) and time (CPU and wall seconds)."""

    task: str
    rss_start: int
    rss_peak: int
    cpu_seconds: float
    wall_seconds: float


def _walk_order(found: list[SearchResult], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every task's pairs, each once (met from both sides, or in two partitions: the higher
    similarity), by later image, then most similar first, then earlier image."""
    later = np.concatenate([np.zeros(0, np.int64)] + [f.later for f in found])
    earlier = np.concatenate([np.zeros(0, np.int64)] + [f.earlier for f in found])
    sims = np.concatenate([np.zeros(0, np.float32)] + [f.sims for f in found])
    key = later * n + earlier
    order = np.lexsort((-sims, key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    order = order[first]
    later, earlier, sims = later[order], earlier[order], sims[order]
    order = np.lexsort((earlier, -sims, later))
    return later[order], earlier[order], sims[order]


def _task_groups(homes: np.ndarray, probes: np.ndarray, partitions: int):
    """Groups of partitions of about ``TASK_ROWS`` rows read: per group, (members, queries)
    of each partition with members, positions ascending."""
    members = _by_partition(homes, partitions)
    queries = _by_partition(probes, partitions)
    group, rows = [], 0
    for p in range(partitions):
        if not len(members[p]):
            continue
        group.append((members[p], queries[p]))
        rows += len(members[p]) + len(queries[p])
        if rows >= TASK_ROWS:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _by_partition(labels: np.ndarray, partitions: int) -> list[np.ndarray]:
    """Per partition, the positions (rows of ``labels``, ascending) that name it."""
    flat = labels.ravel()
    positions = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat, np.arange(partitions + 1), sorter=positions)
    positions //= labels.shape[1]                  # in place: the driver's largest array (8 bytes a probe)
    return [positions[bounds[p]:bounds[p + 1]] for p in range(partitions)]


def _partition_task(source: VectorsFile, group, threshold: float, nearest: Wanted | None, out: Path | None,
                    n: int, part_rows: int) -> tuple:
    """A search task's arguments: the rows it reads (positions, ascending, and their file rows)."""
    needed = np.unique(np.concatenate([np.concatenate([m, q]) for m, q in group]))
    return (str(source.path), source.dim, needed, source.file_rows(needed), group, threshold, nearest,
            None if out is None else str(out), n, part_rows)


# --- what runs in the tasks -----------------------------------------------------------------------

def _assign_partitions(path: str, dim: int, file_rows: np.ndarray, centroids, spill: int, probe: int,
                       products: str):
    """One task: the ``spill`` home and ``probe`` probed partitions of some vectors (int32),
    from one comparison with the centroids, in the partitioned index's arithmetic (its nearest
    ones: :meth:`curate.plugins.centroids.Centroids.nearest_each`)."""
    from curate.plugins.indexes import partition_products
    vectors = read_rows(path, dim, file_rows)
    homes, probes = centroids.nearest_each(vectors, (spill, probe), partition_products(dim, products))
    return homes.astype(np.int32), probes.astype(np.int32)


def _label_rows(path: str, dim: int, file_rows: np.ndarray, centroids: np.ndarray, products: str) -> np.ndarray:
    """One task of a k-means iteration: the nearest centroid of some sample vectors (int32), in
    the partitioned index's arithmetic (:func:`curate.plugins.centroids.nearest_centroids`)."""
    from curate.plugins.centroids import nearest_centroids
    from curate.plugins.indexes import partition_products
    vectors = read_rows(path, dim, file_rows)
    return nearest_centroids(vectors, centroids, 1, products=partition_products(dim, products))[:, 0].astype(np.int32)


def _search_partitions(path: str, dim: int, needed: np.ndarray, file_rows: np.ndarray, group,
                       threshold: float, nearest: Wanted | None = None, out: str | None = None,
                       n: int = 0, part_rows: int = NEAREST_ROWS) -> SearchResult:
    """One task: the pairs >= ``threshold`` of a group of partitions, each member against each
    query that probes its partition (SEARCH_ROWS queries a product), candidates rescored as the
    local walk rescores them: the same pairs and similarities, however the products are cut.
    ``nearest``: from the same products, the candidates for each query's nearest
    (:func:`curate.nearest.within_band`), written to ``out`` for :func:`_choose_nearest`, with
    where each ``part_rows`` of the ``n`` queries' candidates start."""
    vectors = read_rows(path, dim, file_rows)
    found, near = [], []
    for members, queries in group:
        data = vectors[np.searchsorted(needed, members)]
        for start in range(0, len(queries), SEARCH_ROWS):
            chunk = queries[start:start + SEARCH_ROWS]
            query_vectors = vectors[np.searchsorted(needed, chunk)]
            products = query_vectors @ data.T
            rows, columns = _reached(products, threshold, dim)
            found.append((chunk[rows], members[columns], similarities(query_vectors[rows], data[columns])))
            if nearest is not None:
                rows, columns, _ = within_band(products, nearest, band(dim))
                near.append((chunk[rows], members[columns], products[rows, columns]))
    result = _result(found, threshold)
    if nearest is not None:
        result.nearest_file, result.nearest_bounds = out, _write_candidates(Path(out), near, n, part_rows)
    return result


# A nearest candidate in a work file: the query's and the vector's positions, their float32 product.
CANDIDATE = np.dtype([("query", "<i8"), ("id", "<i8"), ("product", "<f4")])


def _write_candidates(out: Path, near: list, n: int, part_rows: int) -> np.ndarray:
    """Candidates (query, id, product) into ``out``, sorted by query; where each
    ``part_rows`` queries' candidates start (and the end)."""
    table = np.zeros(sum(len(query) for query, _, _ in near), CANDIDATE)
    at = 0
    for query, ids, products in near:
        part = table[at:at + len(query)]
        part["query"], part["id"], part["product"] = query, ids, products
        at += len(query)
    table = table[np.argsort(table["query"], kind="stable")]
    partial = out.with_name(out.name + ".part")       # a task run again (Ray retries) rewrites it whole
    with open(partial, "wb") as stream:
        np.save(stream, table)
    os.replace(partial, out)
    return np.searchsorted(table["query"], np.append(np.arange(0, n, part_rows), n))


def _choose_nearest(path: str, dim: int, file_rows: np.ndarray, start: int, stop: int, pieces: list,
                    wanted: Wanted, repeats: bool) -> tuple[np.ndarray, np.ndarray]:
    """One task: the nearest other vectors of the queries ``start:stop`` (similarities,
    positions), chosen by score from their candidates in every search task's file (``pieces``:
    file, first and end row); ``file_rows``: every position's row of the vectors file.
    ``repeats``: a vector stored in two partitions may come twice."""
    parts = []
    for file, low, high in pieces:
        table = np.load(file, mmap_mode="r")
        parts.append(np.array(table[low:high]))
        del table
    table = np.concatenate(parts) if parts else np.zeros(0, CANDIDATE)
    rows, ids, _, _, _ = narrowed(table["query"] - start, table["id"], table["product"], wanted, band(dim), repeats)
    del table, parts
    queries = read_rows(path, dim, file_rows[start:stop])
    others = np.unique(ids)
    scores = pair_similarities(queries, rows, np.searchsorted(others, ids), read_rows(path, dim, file_rows[others]))
    sims, found = chosen(rows, ids, scores, stop - start, wanted)
    return others_only(sims, found, np.arange(start, stop), wanted.k - 1)


def _search_exact(path: str, dim: int, file_rows: np.ndarray, first: int, threshold: float) -> SearchResult:
    """One task: the pairs >= ``threshold`` of the queries ``first:`` (of ``file_rows``) with
    the vectors before them, with the exact index's blocks of products."""
    from curate.plugins.indexes import _BLOCK, _QUERY_BLOCK
    queries = read_rows(path, dim, file_rows[first:])
    found = []
    for q0 in range(0, len(queries), _QUERY_BLOCK):
        chunk = queries[q0:q0 + _QUERY_BLOCK]
        positions = first + q0 + np.arange(len(chunk))
        end = positions[-1] + 1
        for start in range(0, end, _BLOCK):
            stop = min(start + _BLOCK, end)
            data = read_rows(path, dim, file_rows[start:stop])
            rows, columns = _reached(chunk @ data.T, threshold, dim)
            earlier = start + columns < positions[rows]
            rows, columns = rows[earlier], columns[earlier]
            found.append((positions[rows], columns + start, similarities(chunk[rows], data[columns])))
    return _result(found, threshold)


def _reached(products: np.ndarray, threshold: float, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the products that may reach ``threshold``: candidates, rescored with
    :func:`curate.similarity.similarities` as the local walk rescores what its index finds."""
    return np.nonzero(products >= search_threshold(threshold, dim))


def _result(found, threshold: float) -> SearchResult:
    """Pairs (query, other, similarity) as (later, earlier, similarity), an image with itself
    and the candidates below ``threshold`` left out."""
    me = np.concatenate([np.zeros(0, np.int64)] + [q for q, _, _ in found]).astype(np.int64)
    other = np.concatenate([np.zeros(0, np.int64)] + [o for _, o, _ in found]).astype(np.int64)
    sims = np.concatenate([np.zeros(0, np.float32)] + [s for _, _, s in found]).astype(np.float32)
    distinct = (me != other) & (sims >= threshold)
    me, other, sims = me[distinct], other[distinct], sims[distinct]
    return SearchResult(np.maximum(me, other), np.minimum(me, other), sims)


def measured(function, *args):
    """``function(*args)`` in a task, and its :class:`TaskCost`."""
    rss_start = _rss_reset()
    wall, cpu = time.monotonic(), time.process_time()
    result = function(*args)
    return result, TaskCost(function.__name__.strip("_"), rss_start, _status_bytes("VmHWM"),
                            time.process_time() - cpu, time.monotonic() - wall)


def _rss_reset() -> int:
    """This process's RSS now, after its peak was reset to it (Linux): a Ray worker runs many
    tasks, and the peak measured is this task's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    """A field of /proc/self/status in bytes (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
