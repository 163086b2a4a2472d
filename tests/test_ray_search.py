"""The Ray engine's search tasks, run in this process (no Ray): the pairs they find from vectors
on disk give the walk the local search's decisions (tests/test_ray_engine.py runs them on Ray)."""

import numpy as np
import pytest

from curate.errors import CurateError
from curate.ray_engine import RayPairs, measured, search_plan
from curate.registry import get_registry
from curate.similarity import Channel, FoundPairs, SharedSearches, walk
from curate.vectors_file import VectorsFile, read_rows, work_folder


class InProcessPairs(RayPairs):
    """RayPairs whose tasks run here, one after another."""

    made = []

    def __init__(self, channel, block, **kwargs):
        super().__init__(channel, block, search_plan(channel), **kwargs)
        self.made.append(self)

    def _shared(self, value):
        return value

    def _run(self, function, calls):
        return [self._kept(measured(function, *args)) for args in calls]

    def _task_slots(self):
        return 4

    def _centroids(self, source):
        self.centroids = super()._centroids(source)
        return self.centroids


def clustered(seed=0, clusters=2600, copies=8, loners=500, dim=16):
    """Near-duplicates (clusters of ``copies``) among unrelated vectors, shuffled: past the
    partitioned index's training size (20,000)."""
    rng = np.random.default_rng(seed)
    vectors = np.concatenate([rng.normal(size=(clusters, dim)).repeat(copies, 0)
                              + 0.12 * rng.normal(size=(clusters * copies, dim)), rng.normal(size=(loners, dim))])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return vectors[rng.permutation(len(vectors))]


@pytest.mark.parametrize("name, options, from_cache, clusters", [
    ("exact", {}, True, 1200), ("partitioned", {"partitions": 40, "partition_probe": 4}, False, 2600),
    pytest.param("partitioned", {"partitions": 30, "partition_spill": 2}, True, 2600, marks=pytest.mark.slow)])
def test_tasks_reading_files_decide_as_the_local_search(tmp_path, name, options, from_cache, clusters):
    vectors = clustered(clusters=clusters)
    source = None
    if from_cache:                    # rows of a file in another order, as the cache holds them
        order = np.random.default_rng(1).permutation(len(vectors) + 7)
        on_disk = np.zeros((len(vectors) + 7, vectors.shape[1]), np.float32)
        rows = order[:len(vectors)]
        on_disk[rows] = vectors
        on_disk.tofile(tmp_path / "vectors.f32")
        source = VectorsFile(tmp_path / "vectors.f32", rows, vectors.shape[1])
    channel = Channel("embedding", vectors, 0.9, get_registry().get("index", name), options, source=source)
    InProcessPairs.made = []
    local = walk([channel], block=4096)
    tasks = walk([channel], block=4096, pairs=lambda c, b: InProcessPairs(c, b, work_root=tmp_path))
    assert tasks.duplicate_of.tolist() == local.duplicate_of.tolist()
    assert tasks.score.tolist() == local.score.tolist()          # the same float32 products
    assert (local.duplicate_of >= 0).sum() > 0.8 * len(vectors)
    made = InProcessPairs.made[0]
    assert made.plan.partitions == options.get("partitions", 0)
    searches = [cost for cost in made.costs if cost.task.startswith("search")]
    assert searches and all(cost.rss_peak >= cost.rss_start > 0 and cost.cpu_seconds > 0 for cost in searches)
    assert len(made.costs) > len(searches) if made.plan.partitions else len(made.costs) == len(searches)
    # the work file (written when the vectors were not on disk) is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == (["vectors.f32"] if from_cache else [])


def test_k_means_labelled_by_tasks_trains_the_local_index_s_centroids(tmp_path, monkeypatch):
    """Tasks find each k-means iteration's nearest centroids (several per iteration here: blocks
    of 300 sample vectors, two blocks a task), the driver sums: the very centroids the local
    index trains, so the same partitions and decisions."""
    import curate.plugins.centroids as centroids
    monkeypatch.setattr(centroids, "CENTROID_PRODUCTS", 40 * 300)
    vectors = clustered()
    options = {"partitions": 40, "partition_probe": 4}
    channel = Channel("embedding", vectors, 0.9, get_registry().get("index", "partitioned"), options)
    index = channel.kind.new(vectors.shape[1], len(vectors), **options)
    index.add(vectors)
    index.ready()
    InProcessPairs.made = []
    local = walk([channel], block=4096)
    tasks = walk([channel], block=4096, pairs=lambda c, b: InProcessPairs(c, b, work_root=tmp_path))
    made = InProcessPairs.made[0]
    assert np.array_equal(made.centroids.array, index.centroids.array)
    labelling = [cost for cost in made.costs if cost.task == "label_rows"]
    assert len(labelling) == 10 * 3                    # 10 iterations, 1,280 sample vectors in tasks of 600
    assert tasks.duplicate_of.tolist() == local.duplicate_of.tolist()


@pytest.mark.parametrize("name, options", [("exact", {}), ("partitioned", {"partitions": 40, "partition_probe": 4})])
def test_a_higher_threshold_takes_the_pairs_found_at_a_lower_one(tmp_path, name, options):
    """`-t 0.8 -t 0.9` on Ray searches once: the walk at 0.9 takes the pairs found at 0.8 that
    reach 0.9, and decides as a search at 0.9 (and the local walk) decide; a lower threshold
    cannot be answered from them."""
    vectors = clustered(clusters=1200 if name == "exact" else 2600)
    kind = get_registry().get("index", name)
    at = {t: Channel("embedding", vectors, t, kind, options) for t in (0.8, 0.9)}
    InProcessPairs.made = []
    searches = SharedSearches(lambda c, b: InProcessPairs(c, b, work_root=tmp_path))
    shared = {t: walk([at[t]], block=4096, pairs=searches.pairs) for t in (0.8, 0.9)}
    assert len(InProcessPairs.made) == 1                         # one search for both walks
    alone = walk([at[0.9]], block=4096, pairs=lambda c, b: InProcessPairs(c, b, work_root=tmp_path))
    local = walk([at[0.9]], block=4096)
    assert shared[0.9].duplicate_of.tolist() == alone.duplicate_of.tolist() == local.duplicate_of.tolist()
    assert shared[0.9].score.tolist() == alone.score.tolist()
    assert (shared[0.8].duplicate_of >= 0).sum() > (shared[0.9].duplicate_of >= 0).sum() > 0
    found = InProcessPairs.made[0]
    assert isinstance(found, FoundPairs) and found.at(0.9).threshold == 0.9
    with pytest.raises(ValueError):
        found.at(0.7)


@pytest.mark.parametrize("name, options, from_cache", [
    ("exact", {}, False), ("partitioned", {"partitions": 40, "partition_probe": 4}, False),
    ("partitioned", {"partitions": 40, "partition_probe": 4}, True),
    ("partitioned", {"partitions": 30, "partition_spill": 2}, False)])
def test_the_report_s_neighbours_on_ray_come_from_the_search_s_own_products(tmp_path, name, options, from_cache):
    """A partitioned search on Ray finds each vector's nearest from the products it computes
    for the pairs (candidates in work files, chosen by score by a task per part of the
    queries): the very neighbours of the local index, sims and ties included, and no second
    search. The work files are gone once they are chosen. An exact search keeps none."""
    from curate.similarity import nearest_neighbours
    vectors = clustered(clusters=1200 if name == "exact" else 2600)
    source = None
    if from_cache:
        order = np.random.default_rng(2).permutation(len(vectors))
        vectors[order].tofile(tmp_path / "vectors.f32")
        source = VectorsFile(tmp_path / "vectors.f32", np.argsort(order), vectors.shape[1])
    kind = get_registry().get("index", name)
    work = tmp_path / "work"
    work.mkdir()
    with SharedSearches(lambda c, b: InProcessPairs(c, b, work_root=work)) as searches:
        walk([Channel("embedding", vectors, 0.85, kind, options, source=source, neighbours=16)], block=4096,
             pairs=searches.pairs)
        parts = searches.nearest("embedding")
        if name == "exact":
            assert parts is None and not list(work.iterdir())
            return
        parts = list(parts)                        # a part per NEAREST_ROWS queries, in order
        assert not list(work.iterdir())
    found = np.concatenate([sims for sims, _ in parts]), np.concatenate([ids for _, ids in parts])
    local = nearest_neighbours(vectors, kind, **options)
    assert np.array_equal(found[1], local[1]) and np.array_equal(found[0], local[0])
    assert (found[0][:, 0] > 0.85).sum() > len(vectors) // 2
    assert (found[1] >= 0).all()
    made = InProcessPairs.made[-1]
    assert made.seconds["nearest"] >= 0 and any(cost.task == "choose_nearest" for cost in made.costs)


@pytest.mark.parametrize("read", [0, 1])
def test_the_neighbours_work_files_go_with_the_searches_when_nobody_reads_them(tmp_path, read):
    """Candidates kept for the report but never asked for, or left after a first part (an
    interrupted run), go when the group's searches are let go."""
    vectors = clustered()
    kind = get_registry().get("index", "partitioned")
    with SharedSearches(lambda c, b: InProcessPairs(c, b, work_root=tmp_path)) as searches:
        walk([Channel("embedding", vectors, 0.85, kind, {"partitions": 40}, neighbours=16)], block=4096,
             pairs=searches.pairs)
        files = [p.name for folder in tmp_path.iterdir() for p in folder.iterdir()]
        assert any(name.startswith("nearest-") for name in files) and "vectors.f32" in files
        if read:
            sims, ids = next(searches.nearest("embedding"))
            assert len(ids) == 16_384 and list(tmp_path.iterdir())
    assert not list(tmp_path.iterdir())


def test_the_vectors_held_search_with_the_probes_noted_on_filing():
    """The report's neighbours (queries: the vectors held) read the probes noted on filing;
    the same queries in another array compare with the centroids again, and find the same."""
    vectors = clustered()
    index = get_registry().get("index", "partitioned").new(vectors.shape[1], len(vectors), partitions=40,
                                                           partition_probe=4)
    index.add(vectors)
    held, compared = index.search(vectors, 6), index.search(vectors.copy(), 6)
    assert np.array_equal(held[1], compared[1]) and np.array_equal(held[0], compared[0])


@pytest.mark.parametrize("name, options", [("exact", {}), ("hnsw", {}),
                                           ("partitioned", {"partitions": 40, "partition_probe": 4})])
def test_local_walks_at_each_threshold_share_the_index_and_decide_as_alone(name, options):
    """The local search goes as the walk goes (it skips removed images), so each walk has its
    own; they share the index built for the first (for the partitioned index: one k-means, one
    filing), and the report's neighbours are searched in it: the same decisions and neighbours
    as an index of their own."""
    from curate.similarity import Pairs, nearest_neighbours
    vectors = clustered()
    kind = get_registry().get("index", name)
    searches = SharedSearches()
    walks = {t: walk([Channel("embedding", vectors, t, kind, options)], block=4096, pairs=searches.pairs)
             for t in (0.8, 0.9)}
    index = searches.index_of("embedding")
    assert isinstance(searches.found["embedding"], Pairs) and index is not None
    for t, shared in walks.items():
        alone = walk([Channel("embedding", vectors, t, kind, options)], block=4096)
        assert shared.duplicate_of.tolist() == alone.duplicate_of.tolist()
        assert shared.score.tolist() == alone.score.tolist()
    reused, fresh = nearest_neighbours(vectors, kind, index=index, **options), nearest_neighbours(vectors, kind, **options)
    assert np.array_equal(reused[1], fresh[1]) and np.array_equal(reused[0], fresh[0])
    if name == "partitioned":
        assert index.centroids is not None                  # trained once, by the first walk


def test_hnsw_is_searched_on_the_driver():
    channel = Channel("embedding", clustered(loners=10, clusters=10), 0.9, get_registry().get("index", "hnsw"))
    assert search_plan(channel) is None


def test_reading_rows_of_a_missing_or_short_file_is_one_clear_error(tmp_path):
    np.arange(12, dtype=np.float32).tofile(tmp_path / "v.f32")
    assert read_rows(tmp_path / "v.f32", 4, np.array([2, 0, 2])).tolist() == [[8, 9, 10, 11], [0, 1, 2, 3],
                                                                             [8, 9, 10, 11]]
    with pytest.raises(CurateError, match="v.f32: holds 3 vectors, row 3 was asked for"):
        read_rows(tmp_path / "v.f32", 4, np.array([3]))
    with pytest.raises(CurateError, match=r"gone.f32: cannot read the vectors .*--cache must be on a path every node"):
        read_rows(tmp_path / "gone.f32", 4, np.array([0]))


def test_the_work_folder_is_removed_when_the_search_is_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with work_folder(tmp_path) as folder:
            (folder / "vectors.f32").write_bytes(b"1234")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
