"""Verification of candidate pairs: the signals propose, a verifier (a plugin, ``--verify``)
confirms that the two images are the same picture before one is removed.

:class:`PairVerifier` serves the walk: it prepares each image once (kept in a bounded cache,
since a kept image meets many candidates), remembers each pair's verdict (the walk runs once per
threshold) and turns a verifier's failure on one image into "not verified", so that an image is
never removed without a verdict.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .contracts import Verdict, Verifier
from .errors import CurateError
from .images import ImageLocator, UnreadableImage

NONE = "none"                 # --verify none: the signals alone decide (thinning by similarity)
DEFAULT_VERIFIER = "content"
PREPARED_KEPT = 512           # prepared images kept in memory (each ~0.25 MB at 512 px)


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
    """``verifier`` applied to images by their position in ``paths`` (relative to ``image_root``)."""

    def __init__(self, verifier: Verifier, paths: list[str], image_root):
        self.verifier = verifier
        self.name = verifier.name
        self.paths = paths
        self.locator = ImageLocator(image_root)
        self.prepared: OrderedDict[int, object] = OrderedDict()
        self.verdicts: dict[tuple[int, int], Verdict] = {}
        self.compared = 0

    def __call__(self, kept: int, candidate: int) -> Verdict:
        key = (kept, candidate)
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = self.verdicts[key] = self._compare(kept, candidate)
        return verdict

    def _compare(self, kept: int, candidate: int) -> Verdict:
        images = []
        for position in (kept, candidate):
            prepared = self._prepare(position)
            if isinstance(prepared, Verdict):
                return prepared
            images.append(prepared)
        self.compared += 1
        try:
            verdict = self.verifier.compare(*images)
        except Exception as e:  # noqa: BLE001 - a plugin's bug, named
            raise CurateError(f"verifier {self.name!r} failed on {self.paths[kept]!r} and "
                              f"{self.paths[candidate]!r}: {type(e).__name__}: {e}") from e
        if not isinstance(verdict, Verdict):
            raise CurateError(f"verifier {self.name!r} returned {type(verdict).__name__}, not a curate.Verdict")
        return verdict

    def _prepare(self, position: int):
        """The prepared image, or a refusing Verdict when it cannot be prepared (the pair stays)."""
        prepared = self.prepared.get(position)
        if prepared is not None:
            self.prepared.move_to_end(position)
            return prepared
        try:
            prepared = self.verifier.prepare(self.locator.path(self.paths[position]))
        except UnreadableImage as e:
            return Verdict(False, float("nan"), f"cannot verify: {e}")
        except Exception as e:  # noqa: BLE001 - keep the pair, say why
            return Verdict(False, float("nan"), f"cannot verify ({self.name}: {type(e).__name__}: {e})")
        if len(self.prepared) >= PREPARED_KEPT:
            self.prepared.popitem(last=False)
        self.prepared[position] = prepared
        return prepared
