"""Verification of candidate pairs: the signals propose, a verifier (a plugin, ``--verify``)
confirms that the two images are the same picture before one is removed.

:class:`PairVerifier` serves the walk: it prepares each image once (kept in a bounded cache,
since a kept image meets many candidates), remembers each pair's verdict (the walk runs once per
threshold) and turns a verifier's failure on one image into "not verified", so that an image is
never removed without a verdict.

The walk asks for verdicts one at a time, in order, because each decision changes which images
are kept. A verifier that may run on several threads (``Verifier.parallel``) is also handed the
pairs the walk will ask for next (:meth:`PairVerifier.prefetch`), and compares them on
``threads`` threads while the walk waits for the one it needs: a verdict depends on the pair
alone, so the decisions are the same as one thread's, sooner.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .contracts import Verdict, Verifier
from .errors import CurateError
from .images import ImageLocator, UnreadableImage

NONE = "none"                 # --verify none: the signals alone decide (thinning by similarity)
DEFAULT_VERIFIER = "content"
PREPARED_KEPT = 512           # prepared images kept in memory (each ~0.25 MB at 512 px)
AHEAD_PER_THREAD = 2          # pairs being compared ahead of the walk, per thread


@dataclass
class Looked:
    """A pair the signals proposed and the verifier refused: what the report shows as
    "looked alike, kept: different content"."""

    kept: int             # image positions
    candidate: int
    signal: int           # the channel that proposed it
    similarity: float     # in that signal
    verdict: Verdict


class PairVerifier:
    """``verifier`` applied to images by their position in ``paths`` (relative to ``image_root``),
    on ``threads`` threads when the verifier allows it (else on the caller's). Use it as a
    context manager, or :meth:`close` it: its threads stop there."""

    def __init__(self, verifier: Verifier, paths: list[str], image_root, threads: int = 1):
        self.verifier = verifier
        self.name = verifier.name
        self.paths = paths
        self.locator = ImageLocator(image_root)
        self.prepared: OrderedDict[int, object] = OrderedDict()
        self.verdicts: dict[tuple[int, int], Verdict] = {}
        self.threads = threads if getattr(verifier, "parallel", False) else 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="curate-verify") if self.threads > 1 else None
        self._ahead: dict[tuple[int, int], Future] = {}       # pairs handed to the threads, not yet asked for
        self._preparing: dict[int, Future] = {}               # images being prepared by a thread
        self._lock = threading.Lock()
        self._busy = 0                                         # pairs ahead that are not compared yet

    def __call__(self, kept: int, candidate: int) -> Verdict:
        key = (kept, candidate)
        verdict = self.verdicts.get(key)
        if verdict is None:
            if self._pool is None:
                verdict = self._compare(kept, candidate)
            else:           # on the threads even when not asked ahead: only they wait for each other
                ahead = self._ahead.pop(key, None) or self._submit(key)
                verdict = ahead.result()
            self.verdicts[key] = verdict
        return verdict

    def room(self) -> int:
        """How many more pairs :meth:`prefetch` takes now (0 without threads)."""
        return max(0, AHEAD_PER_THREAD * self.threads - self._busy) if self._pool else 0

    def prefetch(self, pairs) -> None:
        """Start comparing ``pairs`` (kept, candidate) on the threads, for the walk to ask for
        later; an error is raised when the walk asks for that pair, never before."""
        if self._pool is None:
            return
        for key in pairs:
            if key not in self.verdicts and key not in self._ahead:
                self._ahead[key] = self._submit(key)

    def _submit(self, key: tuple[int, int]) -> Future:
        with self._lock:
            self._busy += 1
        future = self._pool.submit(self._compare, *key)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._lock:
            self._busy -= 1

    def close(self) -> None:
        """Stop the threads: pairs not started are dropped, those under way finish first."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._ahead.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _compare(self, kept: int, candidate: int) -> Verdict:
        images = []
        for position in (kept, candidate):
            prepared = self._prepare(position)
            if isinstance(prepared, Verdict):
                return prepared
            images.append(prepared)
        try:
            verdict = self.verifier.compare(*images)
        except Exception as e:  # noqa: BLE001 - a plugin's bug, named
            raise CurateError(f"verifier {self.name!r} failed on {self.paths[kept]!r} and "
                              f"{self.paths[candidate]!r}: {type(e).__name__}: {e}") from e
        if not isinstance(verdict, Verdict):
            raise CurateError(f"verifier {self.name!r} returned {type(verdict).__name__}, not a curate.Verdict")
        return verdict

    def _prepare(self, position: int):
        """The prepared image, or a refusing Verdict when it cannot be prepared (the pair stays).
        An image is prepared once, by the first thread that needs it; the others wait for it.
        With threads, only they run this: a signal (raised in the main thread) can never leave
        an image half prepared for another thread to wait on."""
        with self._lock:
            prepared = self.prepared.get(position)
            if prepared is not None:
                self.prepared.move_to_end(position)
                return prepared
            underway = self._preparing.get(position)
            mine = underway is None
            if mine:
                underway = self._preparing[position] = Future()
        if not mine:
            return underway.result()
        try:
            prepared = self._prepared(position)
        except BaseException as e:
            with self._lock:
                del self._preparing[position]
            underway.set_exception(e)
            raise
        with self._lock:
            del self._preparing[position]
            if not isinstance(prepared, Verdict):       # a refusal is not kept: the next pair tries again
                if len(self.prepared) >= PREPARED_KEPT:
                    self.prepared.popitem(last=False)
                self.prepared[position] = prepared
        underway.set_result(prepared)
        return prepared

    def _prepared(self, position: int):
        try:
            return self.verifier.prepare(self.locator.path(self.paths[position]))
        except UnreadableImage as e:
            return Verdict(False, float("nan"), f"cannot verify: {e}")
        except Exception as e:  # noqa: BLE001 - keep the pair, say why
            return Verdict(False, float("nan"), f"cannot verify ({self.name}: {type(e).__name__}: {e})")
