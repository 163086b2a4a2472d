"""Similarity indexes and the keep/remove walk that decides which images stay.

An index holds unit vectors (cosine similarity = dot product) and answers top-k and
"every neighbour with similarity >= t" queries. The walk goes through images in order
of first appearance: an image is removed when an already kept image has similarity >= t
with it (recording the most similar kept one), otherwise it is kept. With several signals
(the embedding, a perceptual hash, an exact hash: each a unit vector per image), each has
its own t, and a match in any of them removes the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contracts import IndexKind, SimilarityIndex  # noqa: F401  (re-exported)
from .gather import gather
from .nearest import Wanted, chosen, product_error


# Kept images a verified walk tries per image, closest first: 4 found 82.8% of the text-rich
# set's near-duplicates, 8 found 90.6% (among many look-alikes of one template the true original
# is often not among the closest four; bench/README.md).
CANDIDATES = 8


@dataclass
class Channel:
    """One signal's vectors for a group of images, searched with an index at its own threshold.
    ``verified``: a match must be confirmed by the verifier (False for exact matches).
    ``source``: where the same vectors lie on disk (rows of the embedding cache), for searches
    in other processes (``--engine ray``); None: they are written out for them.
    ``neighbours``: a search that can find each vector's nearest from its own products (Ray's
    partitioned one) finds this many for the report (:meth:`FoundPairs.nearest`)."""

    name: str
    vectors: np.ndarray
    threshold: float
    kind: IndexKind
    options: dict = field(default_factory=dict)
    verified: bool = True
    source: object = None         # a curate.vectors_file.VectorsFile
    neighbours: int = 0           # also each vector's this many nearest, where the search finds them (Ray)


@dataclass
class WalkResult:
    duplicate_of: np.ndarray   # (n,) position of the kept image it duplicates, -1 when kept
    score: np.ndarray          # (n,) similarity to that image in the signal that fired (0 when kept)
    signal: np.ndarray = None  # (n,) which channel fired (its position), -1 when kept
    verdicts: dict = field(default_factory=dict)   # removed image -> the Verdict that confirmed it
    refused: list = field(default_factory=list)    # (kept, candidate, channel, similarity, Verdict): kept anyway

    @property
    def kept(self) -> np.ndarray:
        return self.duplicate_of < 0


# Images whose pairs the walk holds at once: its memory is this many images' pairs.
BLOCK = 4096
# Pairs rescored at once (two gathers of this many vectors: 100 MB at 768-d).
RESCORE_ROWS = 16384


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each row of ``a``'s similarity with the same row of ``b``: their float32 dot product,
    summed in float64 and rounded to float32 once. This is the similarity every pair gets,
    whichever index, process or machine found it: a float32 matrix product's sums depend on
    its blocking and its threads (a Ray task on one thread and the driver on two differ in
    the last bit), and a pair at the threshold would then be kept on one and removed on the
    other."""
    return np.einsum("ij,ij->i", a, b, dtype=np.float64).astype(np.float32)


def pair_similarities(vectors: np.ndarray, left: np.ndarray, right: np.ndarray,
                      others: np.ndarray | None = None) -> np.ndarray:
    """:func:`similarities` of the pairs (``vectors[left[i]]``, ``others[right[i]]``; ``others``
    default ``vectors``), gathered a bounded number at a time."""
    others = vectors if others is None else others
    out = np.empty(len(left), np.float32)
    for start in range(0, len(left), RESCORE_ROWS):
        end = start + RESCORE_ROWS
        out[start:end] = similarities(gather(vectors, left[start:end]), gather(others, right[start:end]))
    return out


def search_threshold(threshold: float, dim: int) -> float:
    """The threshold an index is asked for: lower than ``threshold`` by the most that a float32
    product of two unit vectors of ``dim`` components can fall below :func:`similarities`
    (dim * 2^-24 from its sums, twice over), so that every pair whose similarity reaches
    ``threshold`` is among those found, whatever the index's arithmetic; the pairs found are
    then rescored and those below ``threshold`` dropped."""
    return threshold - product_error(dim)


# Images an index that searches ahead (SimilarityIndex.span_pairs) is asked about at once, and
# the most pairs that search may hold (16.7M: about 340 MB); past it the walk asks block by block,
# where the images it has removed keep many copies of one picture in bounds.
SPAN = 65536
SPAN_PAIRS = 1 << 24


class Pairs:
    """One channel's pairs at its threshold, handed to the walk a block at a time in order of
    their later image: (later, earlier, similarity), each pair once, sorted by later image, then
    most similar first, then earlier image. Every vector is indexed once; a pair an index meets
    from its earlier image's side, or ahead of the walk (an index that searches a span of blocks
    at once), waits in ``ahead`` until the walk reaches its later image.
    ``block``: the walk's block size (a subclass that searches ahead, on Ray, needs it)."""

    def __init__(self, channel: Channel, block: int = BLOCK, index=None):
        self.vectors, self.threshold = channel.vectors, channel.threshold
        if index is None:       # ``index``: one built on these vectors for another threshold's walk
            index = channel.kind.new(channel.vectors.shape[1], len(channel.vectors), **channel.options)
            index.add(channel.vectors)
        self.index = index
        self.ahead = _no_pairs()
        self.searched = 0                 # the images whose pairs have been found
        self.blocks_until = 0             # a span search gave up: block by block up to here

    def search(self, start: int, stop: int, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The index's pairs for the images ``start:stop``: (rows, ids, similarities); those
        with an image that is not ``alive`` (removed) may be left out."""
        return self.index.block_pairs(self.vectors[start:stop], start, self._asked(), alive)

    def _asked(self) -> float:
        return search_threshold(self.threshold, self.vectors.shape[1])

    def _search_from(self, start: int, stop: int, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(rows, ids, end): the pairs of the images ``start:end``, a span of blocks where the
        index searches ahead and the pairs stay within SPAN_PAIRS, else the one block."""
        end = min(len(self.vectors), start + SPAN)
        if start >= self.blocks_until and end > stop:
            found = self.index.span_pairs(self.vectors[start:end], start, self._asked(), alive, SPAN_PAIRS)
            if found is not None:
                return found[0], found[1], end
            self.blocks_until = end
        rows, ids, _ = self.search(start, stop, alive)
        return rows, ids, stop

    def block(self, start: int, stop: int, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if stop > self.searched:
            rows, ids, self.searched = self._search_from(start, stop, alive)
            self._hold(rows.astype(np.int64) + start, ids.astype(np.int64))
        later, earlier, sims = self.ahead
        now = later < stop
        self.ahead = (later[~now], earlier[~now], sims[~now])
        later, earlier, sims = later[now], earlier[now], sims[now]
        _, first = np.unique(later * len(self.vectors) + earlier, return_index=True)   # met from both sides: once
        later, earlier, sims = later[first], earlier[first], sims[first]
        order = np.lexsort((earlier, -sims, later))
        return later[order], earlier[order], sims[order]

    def _hold(self, me: np.ndarray, ids: np.ndarray) -> None:
        """Pairs found (an image, another) into ``ahead``, rescored: those that reach the threshold."""
        later, earlier = np.maximum(me, ids), np.minimum(me, ids)
        distinct = (later != earlier) & (ids >= 0)
        later, earlier = later[distinct], earlier[distinct]
        sims = pair_similarities(self.vectors, later, earlier)       # the index's own sims only proposed them
        reached = sims >= self.threshold
        self.ahead = (np.concatenate([self.ahead[0], later[reached]]),
                      np.concatenate([self.ahead[1], earlier[reached]]),
                      np.concatenate([self.ahead[2], sims[reached]]))


def _no_pairs():
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)


class FoundPairs:
    """A channel's pairs found all at once (on Ray), in the walk's order: by later image, then
    most similar first, then earlier image. The walk takes them a block at a time; a walk at a
    higher threshold over the same rows takes those that reach it (:meth:`at`): which pairs a
    search looks at does not depend on its threshold, and each is scored on its own, so they are
    the very pairs a search at that threshold finds."""

    index = None        # no index of the rows was built here (Ray's search offers its own)

    def __init__(self, later: np.ndarray, earlier: np.ndarray, sims: np.ndarray, threshold: float):
        self.later, self.earlier, self.sims, self.threshold = later, earlier, sims, threshold

    def block(self, start: int, stop: int, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs whose later image is in ``start:stop``, most similar first."""
        low, high = np.searchsorted(self.later, [start, stop])
        return self.later[low:high], self.earlier[low:high], self.sims[low:high]

    def nearest(self):
        """Each vector's nearest (:func:`nearest_neighbours`), where the search found them on
        its way; None otherwise."""
        return None

    def close(self) -> None:
        """Let go of what the search keeps for :meth:`nearest`."""

    def at(self, threshold: float) -> "FoundPairs":
        """The pairs that reach ``threshold`` (at least this search's own)."""
        if threshold < self.threshold:
            raise ValueError(f"pairs found at {self.threshold} cannot answer {threshold}")
        reached = self.sims >= threshold
        return FoundPairs(self.later[reached], self.earlier[reached], self.sims[reached], threshold)


class SharedSearches:
    """One group's pair searches, shared by its walks at each threshold (lowest first). A search
    that found its pairs all at once (a :class:`FoundPairs`: Ray's) answers a higher threshold
    with the pairs that reach it: ``-t 0.7 -t 0.8 -t 0.9`` runs one k-means, one filing and one
    search per signal. A search that goes as the walk goes (:class:`Pairs`, which skips the
    images the walk removed) is made anew for each walk, on the index built for the first: an
    index does not depend on the threshold it is asked for."""

    def __init__(self, search=Pairs):
        self.search = search
        self.found: dict[str, object] = {}      # per channel name: its first search

    def pairs(self, channel: Channel, block: int):
        """The pairs of ``channel`` (a walk's ``pairs`` argument)."""
        first = self.found.get(channel.name)
        if isinstance(first, FoundPairs) and first.threshold <= channel.threshold:
            return first.at(channel.threshold)
        if isinstance(first, Pairs):
            return Pairs(channel, block, index=first.index)
        found = self.search(channel, block)
        self.found.setdefault(channel.name, found)
        return found

    def nearest(self, name: str):
        """Channel ``name``'s nearest neighbours found by its search (None when it did not)."""
        first = self.found.get(name)
        return first.nearest() if isinstance(first, FoundPairs) else None

    def close(self) -> None:
        for found in self.found.values():
            if isinstance(found, FoundPairs):
                found.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def index_of(self, name: str):
        """The index of channel ``name``'s rows that its search built or offers (None when
        there is none)."""
        return getattr(self.found.get(name), "index", None)


def walk(channels: list[Channel], block: int = BLOCK, verify=None, candidates: int = CANDIDATES,
         fixed: int = 0, pairs=Pairs, progress=None) -> WalkResult:
    """The greedy walk over several signals at once: an image is removed when, in any channel,
    an already kept image reaches that channel's threshold; the first channel (in the order
    given) that fires is recorded, with its most similar kept image. The walk consumes each
    channel's pairs (:class:`Pairs`) in order of first appearance, so its cost follows the
    pairs found: an image without pairs costs nothing.

    ``verify(kept, candidate)`` (positions; returns a :class:`curate.Verdict`): a match in a
    ``verified`` channel removes the image only when the verifier confirms it. The closest
    ``candidates`` kept images that match are tried in channel order, then by similarity;
    when none is confirmed the image stays, and the first refused pair is recorded.

    ``fixed``: the first ``fixed`` images (the evaluation images of ``--against``) are kept
    whatever they match, and an image that matches one of them is removed as its duplicate in
    preference to any other kept image. ``pairs``: the :class:`Pairs` class that searches (the
    Ray engine's searches on the cluster). ``progress(count)``: called as the walk passes images
    (``count`` more decided), every few images with pairs and at each block's end."""
    n = len(channels[0].vectors)
    duplicate_of = np.full(n, -1, np.int64)
    score = np.zeros(n, np.float32)
    fired = np.full(n, -1, np.int8)
    result = WalkResult(duplicate_of, score, fired)
    if n == 0:
        return result
    k = candidates if verify is not None else 1
    ahead = Lookahead(verify, channels, k, fixed) if hasattr(verify, "prefetch") else None
    sources = [pairs(channel, block) for channel in channels]
    passed = 0                      # images the walk has told ``progress`` about
    for start in range(0, n, block):
        stop = min(n, start + block)
        found = []
        for source in sources:
            later, earlier, sims = source.block(start, stop, duplicate_of < 0)
            alive = (earlier >= start) | (duplicate_of[earlier] < 0)   # earlier blocks are decided
            found.append((later[alive], earlier[alive], sims[alive]))
        order = np.unique(np.concatenate([later for later, _, _ in found])).tolist()
        for position, i in enumerate(order):
            if progress is not None and position % PROGRESS_EVERY == 0 and i > passed:
                progress(i - passed)
                passed = i
            if i < fixed:
                continue
            if ahead is not None:
                ahead.advance(found, order, position, duplicate_of)
            for matches in _matches(found, i, duplicate_of, k, fixed):
                if matches and _decide(result, i, matches, channels, verify, candidates):
                    break
        if progress is not None:
            progress(stop - passed)
            passed = stop
    return result


PROGRESS_EVERY = 16             # images with pairs between the walk's progress calls

# Images the lookahead may run ahead of the walk: pairs of images far ahead are more likely to be
# wasted (an image decided in between can change their kept images).
AHEAD_IMAGES = 64


class Lookahead:
    """Hands ``verify.prefetch`` the pairs the walk will ask ``verify`` for next, while it
    decides the current image (a verifier on threads compares them meanwhile). For a later
    image, the pairs :func:`_decide` would try with the images decided so far: its kept images
    among those before the current one. A kept image decided later can still change them; a
    pair compared for nothing costs time, never a decision."""

    def __init__(self, verify, channels, k: int, fixed: int):
        self.verify, self.channels, self.k, self.fixed = verify, channels, k, fixed
        self.order, self.next = None, 0

    def advance(self, found, order: list, position: int, duplicate_of: np.ndarray) -> None:
        """The walk is at ``order[position]`` (every image before it is decided)."""
        if order is not self.order:
            self.order, self.next = order, 0
        self.next = max(self.next, position)
        decided = order[position]
        while self.verify.room() > 0 and self.next < len(order) and self.next - position < AHEAD_IMAGES:
            later = order[self.next]
            self.next += 1
            if later >= self.fixed:
                self.verify.prefetch(self._pairs(found, later, decided, duplicate_of))

    def _pairs(self, found, later: int, decided: int, duplicate_of: np.ndarray) -> list[tuple[int, int]]:
        for matches in _matches(found, later, duplicate_of, self.k, self.fixed, before=decided):
            if not matches:
                continue
            if _unverified(matches, self.channels) is not None:
                return []                   # removed without a verdict when it comes
            return [(partner, later) for partner in _tried(matches, self.k)]
        return []


def _matches(found, i, duplicate_of, k, fixed, before: int | None = None) -> tuple[list, list]:
    """Kept images that reach a channel's threshold for image ``i``: (channel, kept position,
    similarity), by channel in order, then most similar first (at most ``k`` each); those among
    the first ``fixed`` images, then the others. ``before``: only kept images before this one."""
    first, rest = [], []
    for c, (later, earlier, sims) in enumerate(found):
        low, high = np.searchsorted(later, [i, i + 1])
        taken = [0 if fixed else k, 0]              # per side: (fixed, other) kept images taken
        for partner, sim in zip(earlier[low:high].tolist(), sims[low:high].tolist()):
            side = int(partner >= fixed)
            if taken[side] < k and duplicate_of[partner] < 0 and (before is None or partner < before):
                (rest if side else first).append((c, partner, sim))
                taken[side] += 1
                if min(taken) == k:
                    break
    return first, rest


def _decide(result: WalkResult, i: int, matches, channels, verify, k: int) -> bool:
    """Remove image ``i`` for the first match that needs no verification, else for the
    verified match that the verifier scores closest (of the first ``k`` kept images tried)."""
    match = matches[0] if verify is None else _unverified(matches, channels)
    if match is not None:
        c, partner, sim = match
        result.duplicate_of[i], result.score[i], result.signal[i] = partner, sim, c
        return True
    best, refused = None, None
    for partner, (c, sim) in _tried(matches, k).items():
        verdict = verify(partner, i)
        if verdict.same and (best is None or verdict.score < best[3].score):
            best = (c, partner, sim, verdict)
        elif not verdict.same and refused is None:
            refused = (partner, i, c, sim, verdict)
    if best is None:
        if refused is not None:
            result.refused.append(refused)
        return False
    c, partner, sim, verdict = best
    result.duplicate_of[i], result.score[i], result.signal[i] = partner, sim, c
    result.verdicts[i] = verdict
    return True


def _unverified(matches, channels):
    """The first match in a channel that needs no verification (it decides at once), or None."""
    return next((match for match in matches if not channels[match[0]].verified), None)


def _tried(matches, k: int) -> dict:
    """The kept images the verifier is asked about, in the matches' order: the first ``k``
    distinct ones, each with the channel and similarity of its first match."""
    tried: dict = {}
    for c, partner, sim in matches:
        if len(tried) >= k:
            break
        tried.setdefault(partner, (c, sim))
    return tried


def keep_or_remove(vectors: np.ndarray, kind: IndexKind, threshold: float, block: int = BLOCK,
                   **options) -> WalkResult:
    """The walk with one signal: the embedding's vectors at ``threshold``."""
    return walk([Channel("embedding", vectors, threshold, kind, options)], block)


NEIGHBOURS = 16                                  # per image, for the report's kept pairs and curve
CURVE_THRESHOLDS = np.round(np.arange(0.50, 1.0001, 0.01), 2)   # at most 64: one bit each
# Past an image's nearest, its neighbours are listed from this similarity up: the report's curve
# and kept pairs start there, and below it lie most candidates of images that have no near copy.
NEIGHBOURS_FROM = float(CURVE_THRESHOLDS[0])


def neighbours_wanted(k: int, n: int) -> Wanted:
    """What a search of ``n`` vectors against themselves is asked for, to list each one's ``k``
    nearest others (:func:`nearest_neighbours`): itself and its nearest whatever their
    similarity, then those from NEIGHBOURS_FROM up."""
    return Wanted(min(k + 1, n), NEIGHBOURS_FROM, always=2)


def nearest_neighbours(vectors: np.ndarray, kind: IndexKind, k: int = NEIGHBOURS, index=None,
                       **options) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` most similar other vectors: (similarities, positions), best first
    (ties: the earlier position first), padded with -inf and -1 where the group has fewer:
    its nearest whatever the similarity, the others from NEIGHBOURS_FROM up. The similarities
    are :func:`similarities`, whichever index found them. ``index``: one already built on
    ``vectors`` (the walk's)."""
    n = len(vectors)
    if n < 2:
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    if index is None:
        index = kind.new(vectors.shape[1], n, **options)
        index.add(vectors)
    wanted = neighbours_wanted(k, n)
    if getattr(index, "exact_scores", False):
        found_sims, found_ids = index.search(vectors, wanted.k, wanted)
    else:                                             # an index's own products: scored as every pair is
        found_sims, found_ids = index.search(vectors, wanted.k)
        rows, columns = np.nonzero(found_ids >= 0)
        found = found_ids[rows, columns]
        found_sims, found_ids = chosen(rows, found, pair_similarities(vectors, rows, found), n, wanted)
    return others_only(found_sims, found_ids, np.arange(n), k)


def others_only(found_sims: np.ndarray, found_ids: np.ndarray, own: np.ndarray, k: int):
    """Each row's first ``k`` neighbours other than itself (``own``: its position), best first,
    padded with -inf and -1."""
    sims = np.full((len(found_ids), k), -np.inf, np.float32)
    ids = np.full((len(found_ids), k), -1, np.int64)
    others = (found_ids != own[:, None]) & (found_ids >= 0)
    order = np.argsort(~others, axis=1, kind="stable")[:, :k]      # the others first, best first
    take = order.shape[1]
    keep = np.take_along_axis(others, order, 1)
    sims[:, :take] = np.where(keep, np.take_along_axis(found_sims, order, 1), -np.inf)
    ids[:, :take] = np.where(keep, np.take_along_axis(found_ids, order, 1), -1)
    return sims, ids


def kept_curve(sims: np.ndarray, ids: np.ndarray, thresholds: np.ndarray = CURVE_THRESHOLDS,
               first: int = 0, kept: np.ndarray | None = None) -> np.ndarray:
    """Which images the walk (this signal alone) keeps at each of ``thresholds``, from the
    neighbour lists of :func:`nearest_neighbours`: bit g of entry i is set when image i is
    kept at ``thresholds[g]``. One pass in order of appearance serves every threshold; it is
    exact while no image has more than ``k`` neighbours above the lowest threshold (beyond
    that it may keep a few too many). ``first``, ``kept``: the rows are the images ``first``,
    ``first + 1``, ... (the lists come a part at a time), and ``kept`` holds the bits of the
    images before them (and gets these rows')."""
    if len(thresholds) > 64:
        raise ValueError("kept_curve takes at most 64 thresholds")
    n = len(sims)
    every = (1 << len(thresholds)) - 1
    earlier = (ids >= 0) & (ids < first + np.arange(n)[:, None]) & (sims >= thresholds[0])
    # how many of the (ascending) thresholds each similarity reaches
    reached = np.searchsorted(thresholds, sims, side="right")
    removed = np.zeros(n, np.uint64)
    before = earlier & (ids < first)                 # decided in an earlier part: at once, for every row
    if before.any():
        masks = np.where(reached >= 64, np.uint64(2**64 - 1),
                         (np.uint64(1) << np.minimum(reached, 63).astype(np.uint64)) - np.uint64(1))
        removed = np.bitwise_or.reduce(np.where(before, kept[np.where(before, ids, 0)] & masks, np.uint64(0)), axis=1)
    bits = (np.uint64(every) & ~removed).tolist()
    within = earlier & ~before                       # in this part: in order
    for i in np.flatnonzero(within.any(axis=1)).tolist():
        gone = every & ~bits[i]
        for j, count in zip(ids[i][within[i]].tolist(), reached[i][within[i]].tolist()):
            gone |= bits[j - first] & ((1 << count) - 1)
        bits[i] = every & ~gone
    out = np.asarray(bits, np.uint64)
    if kept is not None:
        kept[first:first + n] = out
    return out


def kept_counts(kept: np.ndarray, thresholds: np.ndarray = CURVE_THRESHOLDS) -> list[int]:
    """How many of the images in ``kept`` (bits from :func:`kept_curve`) stay at each threshold."""
    return [int(((kept >> np.uint64(g)) & np.uint64(1)).sum()) for g in range(len(thresholds))]
