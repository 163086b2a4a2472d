"""One decoded look at an image, shared by every image filter of a run.

Each image filter asks :func:`look` for the sample's images; the first asks decodes the image
once, at most ``WORK_SIDE`` pixels on its longer side (JPEG draft mode where it can), and the
measures (brightness, spread, entropy, blur) are computed when first asked and kept with it. A
run's looks live in a small cache tied to the run's image locator, so several filters cost one
decode per image. Filters see the samples one after the other, so a few entries are enough.

The measures follow cleanvision's definitions where they serve (cleanvision 0.3.7,
``cleanvision/issue_managers/image_property.py``): perceived brightness
``sqrt(0.241 R^2 + 0.691 G^2 + 0.068 B^2) / 255`` and its 99th (dark) and 5th (light)
percentiles; entropy as Pillow's ``Image.entropy()`` (low information). Blur is not
cleanvision's (the spread of edges at 64 px, which depends on what the picture shows) but the
no-reference blur metric of Crété-Roffet et al., "The Blur Effect" (SPIE 2007): how much of the
image's gradient survives a further 9-pixel blur, 0 for sharp, 1 for a blurred image.
"""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from functools import cached_property

import numpy as np
from PIL import Image

from curate.images import UnreadableImage, fit_long_side, load_rgb, open_image

# Measures are taken at this size: about what a vision encoder sees (LLaVA-1.5: 336, Qwen2-VL's
# default minimum: 448), so blur is judged as the model would see it, and decoding stays cheap.
WORK_SIDE = 384
KEPT_LOOKS = 8              # looks kept per run (a sample's images, for the filters after the first)

# What a file's extension promises, as Pillow names formats (MPO: a camera's multi-picture JPEG)
EXTENSION_FORMATS = {".jpg": {"JPEG", "MPO"}, ".jpeg": {"JPEG", "MPO"}, ".jpe": {"JPEG", "MPO"},
                     ".png": {"PNG"}, ".gif": {"GIF"}, ".webp": {"WEBP"}, ".bmp": {"BMP"},
                     ".tif": {"TIFF"}, ".tiff": {"TIFF"}}

_ROTATED = (5, 6, 7, 8)     # EXIF orientations that swap width and height


class Look:
    """An image as the filters see it: ``problem`` (why it cannot be used, or None), its file
    ``format`` (from the header), ``size`` (upright, full size), ``rgb`` (upright, bounded,
    resized smoothly) and ``picked`` (the same size, its pixels picked from the decoded image
    rather than blended, so that it holds no colour the file does not: for the entropy)."""

    def __init__(self, problem: str | None = None, format: str | None = None, size=None, rgb=None, picked=None):
        self.problem = problem
        self.format = format
        self.size = size
        self.rgb = rgb
        self.picked = picked if picked is not None else rgb

    @cached_property
    def pixels(self) -> np.ndarray:
        return np.asarray(self.rgb, dtype=np.float32)

    @cached_property
    def sample(self) -> np.ndarray:
        """Every other pixel of every other row: enough for the statistics, a quarter the cost."""
        return self.pixels[::2, ::2].reshape(-1, 3)

    @cached_property
    def brightness(self) -> np.ndarray:
        """cleanvision's perceived brightness of each (sampled) pixel, 0 to 1."""
        r, g, b = self.sample[:, 0], self.sample[:, 1], self.sample[:, 2]
        return np.sqrt(0.241 * r * r + 0.691 * g * g + 0.068 * b * b) / 255.0

    def brightness_percentile(self, percent: float) -> float:
        return float(np.percentile(self.brightness, percent))

    @cached_property
    def dark_score(self) -> float:
        """The 99th percentile of brightness: under a threshold, even the brightest pixels are dark."""
        return self.brightness_percentile(99)

    @cached_property
    def light_score(self) -> float:
        """The 5th percentile of brightness: over a threshold, even the darkest pixels are light."""
        return self.brightness_percentile(5)

    def measured(self, measures) -> "Look":
        """A look holding only the named measures, computed now, and no pixels: what a decode
        worker hands back (a few numbers per image, whatever the dataset's size)."""
        kept = Look(self.problem, self.format, self.size)
        if self.problem is None:
            kept.__dict__.update((name, getattr(self, name)) for name in measures)
        return kept

    @cached_property
    def spread(self) -> float:
        """The largest standard deviation of a channel, in grey levels (of 255)."""
        return float(self.sample.std(axis=0).max())

    @cached_property
    def entropy(self) -> float:
        """Pillow's entropy of the RGB histogram, in bits: cleanvision's low-information score,
        which it takes on the image as stored; here on pixels picked from it (a smooth resize
        would blend a few flat colours into many)."""
        return float(self.picked.entropy())

    @cached_property
    def blur(self) -> float:
        return blur_effect(self.pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def blur_effect(gray: np.ndarray, width: int = 9) -> float:
    """Crété-Roffet's blur measure of a greyscale image: 0 sharp, 1 blurred (0 when flat).

    Along each axis, the image's differences between neighbours are compared with those of
    the image under a ``width``-pixel moving average (the edges padded with their values). A
    moving average's neighbour difference is the difference of the two pixels ``width`` apart,
    over ``width``, so no blurred image is made (a tenth of the cost of a cumulative sum)."""
    scores = []
    for axis in (0, 1):
        if gray.shape[axis] <= width:
            continue
        along = gray if axis == 0 else gray.T
        padded = np.pad(along, ((width // 2 + 1, width - 1 - width // 2), (0, 0)), mode="edge")
        d_image = np.abs(along[1:] - along[:-1])
        total = float(d_image.sum())
        if total < 1e-6 * d_image.size:
            continue
        d_blurred = np.abs(padded[width + 1:] - padded[1:-width])
        d_blurred *= 1.0 / width
        np.subtract(d_image, d_blurred, out=d_image)
        lost = float(np.maximum(d_image, 0.0, out=d_image).sum())
        scores.append((total - lost) / total)
    return max(scores) if scores else 0.0


def decode(path: str | None) -> Look:
    """A fresh look at the file ``path`` (None: not found under the image root)."""
    if path is None:
        return Look("missing file")
    return _look_at(path, lambda: load_rgb(path, long_at_least=WORK_SIDE))


def look_from_decoded(path, image: Image.Image) -> Look:
    """The look at ``path`` from ``image``, its pixels already decoded upright by someone else
    (dedup's embedder, which keeps the longer side at least ``WORK_SIDE`` long for it: see
    :class:`LookObserver`), bounded to ``WORK_SIDE`` as :func:`decode` bounds them."""
    return _look_at(path, lambda: image)


def _look_at(path, decoded) -> Look:
    """The file's format and upright size from its header, and the pixels of ``decoded()`` (the
    upright image, at least ``WORK_SIDE`` long where the file is) bounded to ``WORK_SIDE``."""
    try:
        with open_image(path) as image:
            format, (width, height) = image.format, image.size
            orientation = image.getexif().get(0x0112, 1)
        full = decoded()
    except UnreadableImage as e:
        return Look(str(e))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return Look(f"not a readable image ({type(e).__name__}: {e})")
    size = (height, width) if orientation in _ROTATED else (width, height)
    rgb = fit_long_side(full, WORK_SIDE)
    picked = full.resize(rgb.size, Image.Resampling.NEAREST) if rgb is not full else rgb
    return Look(None, format, size, rgb, picked)


class LookObserver:
    """Takes looks in dedup's decode workers, from the image decoded for the embedder
    (:meth:`curate.Filter.decode_observer`): the image filters of a ``curate dedup --filter``
    run then read no image a second time. ``measures``: the Look measures the filters judge by."""

    name = "image-look"
    long_side = WORK_SIDE       # the decode keeps at least this much of the image's longer side

    def __init__(self, measures=()):
        self.measures = tuple(sorted(set(measures)))

    def merged(self, other: "LookObserver") -> "LookObserver":
        return LookObserver(self.measures + other.measures)

    def observe(self, image: Image.Image, path) -> Look:
        return look_from_decoded(path, image).measured(self.measures)


_RUNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def look(images, relative: str) -> Look:
    """The look at ``relative`` (an image path of a sample) under the run's ``images`` locator,
    decoded once per run for all the filters that ask."""
    cache = _RUNS.get(images)
    if cache is None:
        cache = _RUNS[images] = OrderedDict()
    found = cache.get(relative)
    if found is not None:
        cache.move_to_end(relative)
        return found
    try:
        path = images.find(relative)
    except UnreadableImage as e:
        found = Look(str(e))
    else:
        found = decode(path)
    cache[relative] = found
    if len(cache) > KEPT_LOOKS:
        cache.popitem(last=False)
    return found


def format_mismatch(relative: str, format: str | None) -> str | None:
    """Why the file's format is not what its name says, or None (also for unknown extensions)."""
    expected = EXTENSION_FORMATS.get(os.path.splitext(relative)[1].lower())
    if expected is None or format is None or format in expected:
        return None
    return f"a {format} file named {os.path.splitext(relative)[1]}"
