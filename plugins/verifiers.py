"""``content``: the verifier that confirms a candidate pair is the same picture before dedup
removes an image.

Embeddings and perceptual hashes see layout, not words: two charts in one plotting style, two
pages on one letterhead, two covers of one series look alike to them whatever the numbers and
titles say (bench/README.md, "Dedup that can read"). So every pair they propose is checked here,
at a resolution where text is legible. Chosen by measurement on the photo and text-rich quality
sets (OCR, RapidOCR, reads the text but cost 1-7 s of CPU per text image here; SSIM maps could
not tell JPEG noise from a changed digit):

1. **Undo the edits.** Uniform borders (padding, letterbox bars) are trimmed; then the pair is
   aligned, first frame to frame (scale, re-encode, padding), else by ORB features and a RANSAC
   similarity transform (a crop, a strip added at an edge, a rotation), mirrored if need be.
   The images are compared at the resolution of the smaller one, the tones of the one that has
   more of them (a re-encoded copy) mapped onto the other's (brightness, contrast, greyscale),
   the sharper one blurred (0, 1 or 2 px) as far as that fits the other better, each pixel
   compared with the other image's 3x3 neighbourhood (an alignment off by a pixel costs nothing).
2. **Every block of the shared area must agree.** The shared area must cover at least half of
   each image (a third of a photo is not that photo). At 512 px every 16-pixel block's mean
   difference must be at most ``COARSE.limit`` grey levels; then, where both images hold more
   detail (up to 1,024 px) and after ECC refines the alignment, every 8-pixel block must agree
   too, counting only differences above JPEG's noise (``DETAIL``). A different word, number,
   bar or title is a block that differs.
3. **An overlay is not new content.** A watermark laid on a photo differs in blocks too. The
   differing pixels are grouped into regions (the words of one line), and a region is an
   overlay by what it is: its pixels are of one tone in one image, in thin strokes (a plate or
   box hides what lies under it), that tone is absent from the other image there, whose content
   there is not a plain background (a plate, paper, a chart's), and they extend no stroke of
   that tone that both share (a 3 become an 8). Overlays are left out (at both resolutions) only from one image: two photos each with
   words the other lacks are two captioned pictures, and the rest of every block must agree.
   The tones are matched only where that fits better than leaving them: a white mark shifts the
   histogram and would misplace the tones of every smooth gradient.
4. **Colour.** The comparison is in grey; two images whose colours lean to other hues (a red and
   a green square) are refused first.

The score is the largest block difference (grey levels, 0-255, of the last comparison made);
the walk removes an image only when the verdict is ``same``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

import curate
from curate.images import load_rgb

WORKING_SIDE = 512          # long side at which images are aligned and compared first
DETAIL_SIDE = 1024          # long side of the second comparison (pairs that pass the first): digits stay apart
DETAIL_GAIN = 1.25          # ... run only when its grid is this much finer (a half-size copy has no small print left)


@dataclass(frozen=True)
class Level:
    """One comparison: the mean difference of every ``block``-pixel square must be at most
    ``limit`` grey levels, counting only what exceeds ``noise`` at each pixel."""

    block: int
    limit: float
    noise: int = 0


# At WORKING_SIDE, every pair: robust to re-encoding, resampling and blur.
COARSE = Level(16, 12.0)
# At DETAIL_SIDE, pairs that pass the first: a changed digit of small print is a few strokes of
# full contrast in one 8-pixel square, re-encoding noise stays under 32 levels once tones are matched.
DETAIL = Level(8, 8.0, noise=32)
MIN_SHARED = 0.5            # of each image's area that the aligned pair must share
MIN_INLIERS = 12            # feature matches that must agree on one transform
MIN_CHROMA = 12.0           # mean colour away from grey below which an image counts as greyish
MAX_TONE_SHIFT = 48         # grey levels between the two images' median tones (a red and a green square)
BORDER_TOLERANCE = 12       # a border row or column is uniform within this many levels of the edge's tone
PADDING_NOISE = 1           # ... and most of its pixels within this many (padding is flat, grain is not)
BLURS = (0.0, 1.0, -1.0, 2.0, -2.0)   # sigmas tried on the sharper image (negative: the candidate)
PIXEL_DIFFERENCE = 48       # a pixel differs (overlay analysis)
MISALIGNED = 24.0           # mean difference over the whole shared area: the alignment is wrong
TONE = 24                   # pixels within this of the overlay's tone belong to it
PLAIN = 6.0                 # standard deviation (grey levels) under which one tone is a plain background
SOLID = 7                   # an overlay's strokes are thinner than this (pixels at 512 px) ...
MAX_SOLID = 0.2             # ... but for this share of them: a plate or box hides what lies under it
REGION_GAP = 31             # differing pixels this close belong to one region (the words of one line)
MAX_REGIONS = 24            # more regions than this are no overlay
TONE_FIT_CAP = 16           # a pixel's difference counts up to this when choosing how to match tones


@cache
def single_threaded_opencv() -> None:
    """OpenCV on the calling thread only. The verifier's calls are small (512-px images, one
    pair at a time): OpenCV's worker pool costs more CPU than it saves there (a cold dedup of
    the photo quality set: 0.90x the process CPU, verdicts identical). The setting is
    process-wide; the verifier is curate's only user of OpenCV."""
    import cv2
    cv2.setNumThreads(1)


class Prepared:
    """One image as the verifier compares it: greyscale, borders trimmed, at two sizes (``full``,
    long side up to ``DETAIL_SIDE``, and ``gray``, up to ``WORKING_SIDE``), features on demand."""

    def __init__(self, full: np.ndarray, chroma: np.ndarray | None = None):
        import cv2
        self.full = full
        self.chroma = chroma
        scale = WORKING_SIDE / max(full.shape)
        self.gray = full if scale >= 1 else cv2.resize(
            full, (max(1, round(full.shape[1] * scale)), max(1, round(full.shape[0] * scale))),
            interpolation=cv2.INTER_AREA)
        cumulative = cv2.calcHist([self.gray], [0], None, [256], [0, 256]).ravel().cumsum()
        self.median = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        self._features: dict[bool, tuple] = {}

    def features(self, mirrored: bool = False):
        """ORB keypoints (as an (n, 2) array) and descriptors, of the image or its mirror."""
        if mirrored not in self._features:
            import cv2
            image = np.ascontiguousarray(self.gray[:, ::-1]) if mirrored else self.gray
            points, descriptors = cv2.ORB_create(nfeatures=500, fastThreshold=10).detectAndCompute(image, None)
            self._features[mirrored] = (np.float32([p.pt for p in points]).reshape(-1, 2), descriptors)
        return self._features[mirrored]


def trim_uniform_borders(gray: np.ndarray) -> np.ndarray:
    """``gray`` without its uniform borders (padding to a square, letterbox bars): edge rows and
    columns that most of their pixels share the edge's tone exactly (within ``PADDING_NOISE``) and
    none strays further than JPEG's ringing (``2 * BORDER_TOLERANCE``). A smooth photo's edge rows,
    which vary slowly, and a flat but grainy background (a microscope's, a studio's) are content:
    trimming them in one image and not in its crop would misalign the pair."""
    def span(lines: np.ndarray) -> tuple[int, int]:
        n = len(lines)
        first, last = 0, n
        for edge, step in ((0, 1), (n - 1, -1)):
            tone = int(np.median(lines[edge]))
            i = edge
            while 0 <= i < n and _padding(lines[i], tone):
                i += step
            if step == 1:
                first = i
            else:
                last = i + 1
        return (first, last) if last - first >= 8 else (0, n)

    top, bottom = span(gray)
    left, right = span(gray[top:bottom].T)
    return np.ascontiguousarray(gray[top:bottom, left:right])


def _padding(line: np.ndarray, tone: int) -> bool:
    deviation = np.abs(line.astype(np.int16) - tone)
    return int(deviation.max()) <= 2 * BORDER_TOLERANCE and 2 * np.count_nonzero(deviation <= PADDING_NOISE) >= len(line)


def _histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.calcHist([image], [0], mask.view(np.uint8), [256], [0, 256]).ravel().astype(np.float64)


def _match_tones(source: np.ndarray, source_counts: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    """``source`` with its tones mapped monotonically onto the reference's (histogram matching
    over the shared area, from both tone histograms): brightness, contrast, gamma and greyscale
    copies line up."""
    import cv2
    source_cdf = source_counts.cumsum()
    reference_cdf = reference_counts.cumsum()
    source_cdf /= max(source_cdf[-1], 1)
    reference_cdf /= max(reference_cdf[-1], 1)
    table = np.searchsorted(reference_cdf, source_cdf, side="left").clip(0, 255).astype(np.uint8)
    return cv2.LUT(source, table)


def _spread(counts: np.ndarray) -> float:
    """The entropy of an image's tones (``counts``: its histogram): a re-encoded copy has more
    than its clean original."""
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True)
class Extremes:
    """An image with the largest and smallest value of each pixel's 3x3 neighbourhood."""

    image: np.ndarray
    highest: np.ndarray
    lowest: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray) -> "Extremes":
        import cv2
        kernel = np.ones((3, 3), np.uint8)
        return cls(image, cv2.dilate(image, kernel), cv2.erode(image, kernel))


def _tolerant_difference(a: Extremes, b: Extremes) -> np.ndarray:
    """How far each pixel of one image lies outside the range of the other's 3x3 neighbourhood
    (the larger of both ways): an alignment off by a pixel costs nothing, a stroke that is not
    in the other image costs its full contrast."""
    import cv2
    # cv2.subtract saturates at 0 on uint8: the same values as in int16 clipped at 0, 3x faster
    outside_b = cv2.max(cv2.subtract(a.image, b.highest), cv2.subtract(b.lowest, a.image))
    outside_a = cv2.max(cv2.subtract(b.image, a.highest), cv2.subtract(a.lowest, b.image))
    return cv2.max(outside_a, outside_b)


def _block_means(difference: np.ndarray, mask: np.ndarray, block: int) -> np.ndarray:
    """Mean of ``difference`` (uint8) over the shared pixels of each ``block``-pixel square (0 for
    squares less than half shared)."""
    import cv2
    rows, columns = difference.shape[0] // block, difference.shape[1] // block
    if rows == 0 or columns == 0:
        return np.zeros((0, 0), np.float32)

    def blocks(a):          # exact integer sums from the integral image's corners (3x faster than numpy's)
        corners = cv2.integral(a[:rows * block, :columns * block])[::block, ::block].astype(np.int64)
        return (corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]).astype(np.float64)
    inside = mask.view(np.uint8)
    shared = blocks(inside)
    total = blocks(cv2.bitwise_and(difference, difference, mask=inside))
    return np.where(shared >= block * block / 2, total / np.maximum(shared, 1), 0.0)


class Aligned:
    """The pair on one grid: ``kept`` and ``candidate`` (warped onto it), and where both are."""

    def __init__(self, kept: np.ndarray, candidate: np.ndarray, transform: np.ndarray, mirrored: bool):
        import cv2
        image = np.ascontiguousarray(candidate[:, ::-1]) if mirrored else candidate
        target = kept
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))   # kept pixels per candidate pixel
        if scale > 1.05:            # the candidate is smaller: compare at its resolution
            shrink = 1.0 / scale
            size = (max(8, round(target.shape[1] * shrink)), max(8, round(target.shape[0] * shrink)))
            target = cv2.resize(target, size, interpolation=cv2.INTER_AREA)
            transform = transform * shrink
        height, width = target.shape
        self.candidate_width = image.shape[1] * float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
        self.kept = target
        self.candidate = cv2.warpAffine(image, transform, (width, height), flags=cv2.INTER_LINEAR)
        inside = cv2.warpAffine(np.full(image.shape, 255, np.uint8), transform, (width, height),
                                flags=cv2.INTER_NEAREST)
        self.mask = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0
        back = cv2.warpAffine(np.ones((height, width), np.uint8), cv2.invertAffineTransform(transform),
                              (image.shape[1], image.shape[0]), flags=cv2.INTER_NEAREST)
        self.shared = min(np.count_nonzero(self.mask) / self.mask.size, cv2.countNonZero(back) / back.size)
        self.toned = _toned(self.kept, self.candidate, self.mask) if self.shared >= MIN_SHARED else None
        self._versions: dict[tuple[int, float], Extremes] = {}
        self._differences: dict[float, np.ndarray] = {}

    def difference(self, blur: float) -> np.ndarray:
        """Per-pixel tolerant difference once tones are matched. ``blur``: Gaussian sigma applied
        to the kept image (positive) or to the candidate (negative), to match a blurrier copy.
        Kept per blur: the comparison at each level, its overlay analysis and the recount without
        the overlay all read the same difference, and each blurred image's 3x3 extremes serve
        every blur of the other image."""
        difference = self._differences.get(blur)
        if difference is None:
            kept = self._version(0, max(blur, 0.0))
            candidate = self._version(1, max(-blur, 0.0))
            difference = self._differences[blur] = _tolerant_difference(kept, candidate)
        return difference

    def _version(self, which: int, sigma: float) -> Extremes:
        """The toned kept (0) or candidate (1) image, blurred by ``sigma``, with its extremes."""
        import cv2
        version = self._versions.get((which, sigma))
        if version is None:
            image = self.toned[which]
            if sigma:
                image = cv2.GaussianBlur(image, (0, 0), sigma)
            version = self._versions[(which, sigma)] = Extremes.of(image)
        return version


def _overall(difference: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``difference`` over ``mask``."""
    import cv2
    shared = int(np.count_nonzero(mask))
    return float(cv2.sumElems(cv2.bitwise_and(difference, difference, mask=mask.view(np.uint8)))[0]) / max(shared, 1)


def _counted_blocks(difference: np.ndarray, level: "Level", mask: np.ndarray) -> np.ndarray:
    """Block means of ``difference`` at ``level`` over ``mask``, counting only what exceeds the
    level's noise."""
    import cv2
    counted = cv2.subtract(difference, level.noise) if level.noise else difference   # saturates at 0
    return _block_means(counted, mask, level.block)


def _toned(kept: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pair with the tones of the one that has more of them (a re-encoded or resampled copy)
    mapped onto the other's (mapping a clean original onto a noisy copy's spread would add noise),
    or as they are where that fits better: an overlay's tones (a white watermark) shift the
    histogram, and matching it would then misplace the tones of every smooth gradient."""
    kept_counts, candidate_counts = _histogram(kept, mask), _histogram(candidate, mask)
    if _spread(kept_counts) >= _spread(candidate_counts):
        matched = _match_tones(kept, kept_counts, candidate_counts), candidate
    else:
        matched = kept, _match_tones(candidate, candidate_counts, kept_counts)
    return min((kept, candidate), matched, key=lambda pair: _mean_difference(*pair, mask))


def _mean_difference(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean difference, each pixel's capped at ``TONE_FIT_CAP``: an overlay's few pixels of full
    contrast count no more than a tone misplaced across a whole region."""
    import cv2
    return cv2.mean(cv2.min(cv2.absdiff(a, b), TONE_FIT_CAP), mask=mask.view(np.uint8))[0]


def _dominant_tone(values: np.ndarray) -> tuple[int, float]:
    """The tone (within ``TONE``) that most of ``values`` share, and their share."""
    histogram = np.convolve(np.bincount(values, minlength=256), np.ones(2 * TONE - 1), mode="same")
    tone = int(histogram.argmax())
    return tone, float((np.abs(values.astype(np.int16) - tone) < TONE).mean())


def _overlay(over: np.ndarray, under: np.ndarray, differing: np.ndarray) -> bool:
    """Whether the ``differing`` pixels (one region of them) are an overlay laid on a photo: in
    ``over`` they are of one tone (or beside such pixels), in ``under`` that tone is absent, and
    the content there is not a plain background (a plate, blank paper, a chart's background: new
    content there is a new word or bar; a photo's smooth region still has texture); the strokes
    are thin (a plate hides what lay beneath it); no stroke of that tone, shared by both images,
    lies beside them (a 3 become an 8)."""
    import cv2
    if differing.sum() < 20:
        return False
    tone, share = _dominant_tone(over[differing])
    if share < 0.5:
        return False
    under_values = under[differing].astype(np.int16)
    if (np.abs(under_values - tone) < TONE).mean() > 0.1:       # the other image has that tone there
        return False
    under_tone, flat_share = _dominant_tone(under[differing])
    if flat_share > 0.6:                                          # laid on one tone: a plate, paper, a
        band = under[differing & (np.abs(under.astype(np.int16) - under_tone) < TONE)]
        if band.std() < PLAIN:                                    # background, or a photo's smooth sky?
            return False
    painted = differing & (np.abs(over.astype(np.int16) - tone) < TONE)
    beside = cv2.dilate(painted.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if beside[differing].mean() < 0.9:                            # other changes besides the overlay
        return False
    solid = float(cv2.erode(painted.view(np.uint8), np.ones((SOLID, SOLID), np.uint8)).sum()) / max(1, painted.sum())
    if solid > MAX_SOLID:                                         # a plate or box hiding what lies under it
        return False
    ring = cv2.dilate(differing.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~differing
    under16, over16 = under.astype(np.int16), over.astype(np.int16)
    contrast = np.abs(under16 - cv2.blur(under, (7, 7)).astype(np.int16))
    shared_strokes = (np.abs(under16 - tone) < TONE) & (np.abs(over16 - tone) < TONE) & (contrast > 30)
    return not shared_strokes[ring].mean() > 0.1


@dataclass(frozen=True)
class Region:
    """Differing pixels that belong together: ``pixels``, a mask of the image's ``area`` (the
    region's bounding box with ``REGION_MARGIN`` around it, within the image)."""

    area: tuple[slice, slice]
    pixels: np.ndarray


# Around a region, what _overlay reads: its 9x9 ring (4 px) and the 7x7 mean at each ring pixel (3 more)
REGION_MARGIN = 8


def _regions(differing: np.ndarray) -> list[Region]:
    """The differing pixels grouped into regions (pixels within a few of each other: the letters
    of one word), largest first; none when there are too many to be an overlay. Each region is
    cut to its own area: the overlay analysis then costs what the region covers, not the image."""
    import cv2
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(differing.view(np.uint8), np.ones((REGION_GAP, REGION_GAP), np.uint8)), connectivity=8)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
    if len(order) > MAX_REGIONS:
        return []
    height, width = differing.shape
    regions = []
    for i in order:
        left, top, w, h = (int(v) for v in stats[i, :4])
        area = (slice(max(0, top - REGION_MARGIN), min(height, top + h + REGION_MARGIN)),
                slice(max(0, left - REGION_MARGIN), min(width, left + w + REGION_MARGIN)))
        regions.append(Region(area, differing[area] & (labels[area] == i)))
    return regions


class ContentVerifier(curate.Verifier):
    name = "content"
    description = ("the pair, aligned (borders, scale, crop, strip, mirror), agrees in every 16-px block "
                   "at 512 px: no other word, number, bar or title")
    version = "1"
    unit = "largest block difference (grey levels)"
    parallel = True          # OpenCV and numpy release the GIL; a Prepared's features are computed idempotently

    def prepare(self, path: Path) -> Prepared:
        single_threaded_opencv()
        image = load_rgb(path, long_side=DETAIL_SIDE)        # one decode serves the grey and the colour
        return Prepared(trim_uniform_borders(np.asarray(image.convert("L"))), _chroma(image))

    def compare(self, kept: Prepared, candidate: Prepared) -> curate.Verdict:
        if abs(kept.median - candidate.median) > MAX_TONE_SHIFT:
            return curate.Verdict(False, 255.0, "other tones")
        if _other_colours(kept.chroma, candidate.chroma):
            return curate.Verdict(False, 255.0, "other colours")
        best = None
        for transform, mirrored, how in self._alignments(kept, candidate):
            aligned = Aligned(kept.gray, candidate.gray, transform, mirrored)
            if aligned.shared < MIN_SHARED or min(aligned.kept.shape) < COARSE.block:
                continue
            worst, overlay = self._score(aligned, COARSE)
            detail = ", overlay left out" if overlay is not None else ""
            same = worst <= COARSE.limit
            if same and _more_detail(kept, candidate, aligned):
                refined = _refined(kept.gray, candidate.gray, transform, mirrored)
                worst, _ = self._score(self._in_detail(kept, candidate, refined, mirrored), DETAIL, overlay)
                same = worst <= DETAIL.limit
                how += ", in detail"
            if best is None or same or worst < best[1]:
                best = (same, worst, f"{how}{detail}")
            if same:
                break
        if best is None:
            return curate.Verdict(False, 255.0, "too little in common")
        return curate.Verdict(best[0], round(best[1], 2), best[2])

    def _in_detail(self, kept: Prepared, candidate: Prepared, transform: np.ndarray, mirrored: bool) -> Aligned:
        """The pair aligned at the full prepared size (up to ``DETAIL_SIDE``), so that a 0 and a 3
        of small print are not within a pixel of each other."""
        kept_scale = kept.full.shape[1] / kept.gray.shape[1]
        candidate_scale = candidate.full.shape[1] / candidate.gray.shape[1]
        detail = np.float32(transform)
        detail[:, :2] *= kept_scale / candidate_scale
        detail[:, 2] *= kept_scale
        return Aligned(kept.full, candidate.full, detail, mirrored)

    def _alignments(self, kept: Prepared, candidate: Prepared):
        """Transforms from the candidate's pixels to the kept image's, cheapest first (lazily)."""
        (kept_height, kept_width), (height, width) = kept.gray.shape, candidate.gray.shape
        yield np.float32([[kept_width / width, 0, 0], [0, kept_height / height, 0]]), False, "frame"
        for mirrored in (False, True):
            transform = _feature_transform(kept, candidate, mirrored)
            if transform is not None:
                yield transform, mirrored, "features, mirrored" if mirrored else "features"

    def _score(self, aligned: Aligned, level: Level, overlay: np.ndarray | None = None):
        """The largest block difference at the best-fitting blur, and the overlay left out (a mask
        of the kept image, or None). The first comparison looks for an overlay; the one in detail
        leaves out only what the first found (resized), so that small print is never taken for one."""
        import cv2
        mask = aligned.mask
        if overlay is not None:
            around = cv2.resize(overlay.view(np.uint8), aligned.mask.shape[::-1], interpolation=cv2.INTER_NEAREST)
            mask = mask & ~cv2.dilate(around, np.ones((3, 3), np.uint8)).astype(bool)
        sharp = aligned.difference(0.0)
        sharp_blocks, sharp_overall = _counted_blocks(sharp, level, mask), _overall(sharp, mask)
        if sharp_overall > MISALIGNED:                  # not this alignment: neither blur nor overlay explains it
            return float(sharp_blocks.max()) if sharp_blocks.size else 255.0, None
        fits = [(sharp_overall, 0.0)]
        if sharp_blocks.size and sharp_blocks.max() > level.limit:      # sharp already agrees: no blur
            fits += [(_overall(aligned.difference(blur), mask), blur) for blur in BLURS if blur]
        _, blur = min(fits, key=lambda fit: fit[0])     # the first of equals, as before
        blocks = sharp_blocks if blur == 0.0 else _counted_blocks(aligned.difference(blur), level, mask)
        worst = float(blocks.max()) if blocks.size else 255.0
        if worst <= level.limit or overlay is not None or level is not COARSE:
            return worst, overlay
        differing = (sharp > PIXEL_DIFFERENCE) & aligned.mask
        kept, candidate = aligned.toned
        regions = _regions(differing)
        for over, under in ((candidate, kept), (kept, candidate)):
            laid = [region for region in regions if _overlay(over[region.area], under[region.area], region.pixels)]
            if laid:
                painted = np.zeros(differing.shape, bool)
                for region in laid:
                    painted[region.area] |= region.pixels
                around = cv2.dilate(painted.view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                rest = _counted_blocks(aligned.difference(blur), level, aligned.mask & ~around)
                return (float(rest.max()) if rest.size else 255.0), around
        return worst, None


def _chroma(image) -> np.ndarray:
    """An RGB image's mean colour away from grey (red-green, yellow-blue)."""
    small = np.asarray(image.resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    return np.array([(r - g).mean(), ((r + g) / 2 - b).mean()], np.float32)


def _other_colours(kept: np.ndarray | None, candidate: np.ndarray | None) -> bool:
    """Whether two colourful images lean to other hues (a red and a green square, which greyscale
    comparison cannot tell apart); a greyscale copy leans nowhere and passes."""
    if kept is None or candidate is None:
        return False
    lengths = np.linalg.norm(kept), np.linalg.norm(candidate)
    if min(lengths) < MIN_CHROMA:
        return False
    return float(kept @ candidate) / (lengths[0] * lengths[1]) < 0.5          # over 60 degrees apart


def _more_detail(kept: Prepared, candidate: Prepared, aligned: Aligned) -> bool:
    """Whether the full-size pair is compared on a grid ``DETAIL_GAIN`` times finer than the first
    comparison's: the grid is the kept image's, shrunk to the candidate's resolution where that
    is lower (a copy at half size has no small print left to compare)."""
    kept_scale = kept.full.shape[1] / kept.gray.shape[1]
    candidate_scale = candidate.full.shape[1] / candidate.gray.shape[1]
    finer = min(kept_scale, candidate_scale * aligned.kept.shape[1] / max(1, aligned.candidate_width))
    return min(kept_scale, candidate_scale) > DETAIL_GAIN and finer > DETAIL_GAIN


def _refined(kept: np.ndarray, candidate: np.ndarray, transform: np.ndarray, mirrored: bool) -> np.ndarray:
    """``transform`` refined to a fraction of a pixel by maximising the correlation of the two
    images (OpenCV's ECC), so that the comparison in detail is not thrown by a border trimmed
    one pixel differently; the transform as given when ECC does not converge."""
    import cv2
    image = np.ascontiguousarray(candidate[:, ::-1]) if mirrored else candidate
    warp = cv2.invertAffineTransform(transform).astype(np.float32)
    try:
        _, warp = cv2.findTransformECC(kept, image, warp, cv2.MOTION_AFFINE,
                                       (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4), None, 3)
    except cv2.error:
        return transform
    refined = cv2.invertAffineTransform(warp).astype(np.float32)
    if np.abs(refined[:, :2] - transform[:, :2]).max() > 0.05 or np.abs(refined[:, 2] - transform[:, 2]).max() > 4:
        return transform          # moved too far: not a refinement
    return refined


def _feature_transform(kept: Prepared, candidate: Prepared, mirrored: bool) -> np.ndarray | None:
    """A similarity transform (scale, rotation, shift) from the candidate's ORB features to the
    kept image's, agreed by at least ``MIN_INLIERS`` matches under RANSAC; None otherwise."""
    import cv2
    kept_points, kept_descriptors = kept.features()
    points, descriptors = candidate.features(mirrored)
    if kept_descriptors is None or descriptors is None or min(len(kept_points), len(points)) < MIN_INLIERS:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(descriptors, kept_descriptors)
    if len(matches) < MIN_INLIERS:
        return None
    source = points[[m.queryIdx for m in matches]]
    target = kept_points[[m.trainIdx for m in matches]]
    transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                                     maxIters=2000, refineIters=10)
    if transform is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    return transform.astype(np.float32)


@curate.hookimpl
def register_verifiers(register):
    register(ContentVerifier)
