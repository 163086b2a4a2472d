"""Open dataset images safely: paths stay inside the image root, headers are read lazily,
pixels are decoded at reduced size where the format allows it."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

from .errors import CurateError

# Bounds checked before any pixel is decoded, so that no image can eat the machine: Pillow
# refuses images over twice this many pixels, we refuse anything over it; and no real dataset
# image is anywhere near this many bytes (a 10 GB sparse file named .jpg is refused at once).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970
MAX_IMAGE_BYTES = 256 * 1024 * 1024


class UnreadableImage(Exception):
    """An image that cannot be used; the message is the reason shown in reports."""


MAX_PATH_CHARS = 1024


def resolve_image(root: Path, relative: str, real_root: str | None = None) -> Path:
    """``root/relative``, refusing what could leave the root or break a system call: absolute
    paths, ``..``, NUL bytes, over-long paths, and symbolic links (of files or folders) that
    point outside the root once resolved. The root itself may be a link (``real_root``: its
    resolved path, when the caller already has it)."""
    if "\0" in relative:
        raise UnreadableImage(f"the image path {relative[:80]!r} holds a NUL byte")
    if len(relative) > MAX_PATH_CHARS:
        raise UnreadableImage(f"the image path is {len(relative):,} characters long (at most {MAX_PATH_CHARS:,})")
    if not relative or os.path.isabs(relative) or relative.startswith("~"):
        raise UnreadableImage(f"the image path {relative!r} is absolute; it must be relative to the image root")
    normal = os.path.normpath(relative)
    if normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("/"):
        raise UnreadableImage(f"the image path {relative!r} climbs out of the image root")
    path = Path(root) / normal
    real_root = real_root or os.path.realpath(root)
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError) as e:
        raise UnreadableImage(f"cannot resolve the image path ({e})") from None
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnreadableImage(f"the image path {relative!r} leads outside the image root through a symbolic link")
    return path


def image_size(path: Path, exif: bool = True) -> tuple[int, int]:
    """Width and height from the header only (Pillow does not decode pixels here).

    ``exif``: as displayed (EXIF rotation applied). Box padding uses ``exif=False``, the
    stored size, because LLaVA pads ``Image.open(path).size``."""
    try:
        with open_image(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"not a readable image ({e})") from None
    return (height, width) if exif and orientation in (5, 6, 7, 8) else (width, height)


def open_image(path: Path) -> Image.Image:
    """``Image.open`` (the header only) after the bounds: the file's size, then the pixel count."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise UnreadableImage("missing file") from None
    if size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        raise UnreadableImage(f"{size:,} bytes is over the {MAX_IMAGE_BYTES:,}-byte limit for an image")
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise UnreadableImage("missing file") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise UnreadableImage(f"{width}x{height} pixels is over the {MAX_PIXELS:,} limit (decompression bomb?)")
    return image


class ImageLocator:
    """Finds a record's image under ``--image-root``, which may be the LLaVA data root
    (``ROOT/vg/VG_100K/1.jpg``) or the dataset's own root (``ROOT/VG_100K/1.jpg``).
    Sizes are read from headers once per image (1M referring QAs touch 108K images)."""

    def __init__(self, root):
        self.root = Path(root) if root is not None else None
        self.real_root = os.path.realpath(self.root) if self.root is not None else None
        self._sizes: dict[str, tuple[int, int]] = {}

    def path(self, relative: str) -> Path:
        if self.root is None:
            raise UnreadableImage("no --image-root given")
        direct = resolve_image(self.root, relative, self.real_root)
        if _exists(direct):
            return direct
        head, sep, rest = relative.partition("/")
        if sep and rest:
            inner = resolve_image(self.root, rest, self.real_root)
            if _exists(inner):
                return inner
        return direct

    def size(self, relative: str) -> tuple[int, int]:
        size = self._sizes.get(relative)
        if size is None:
            size = self._sizes[relative] = image_size(self.path(relative), exif=False)
        return size


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as e:      # a name too long for the file system, say
        raise UnreadableImage(f"cannot look up the image ({e.strerror})") from None


def load_rgb(path: Path, short_side: int | None = None) -> Image.Image:
    """Decode an image as upright RGB, at reduced size when ``short_side`` allows (JPEG draft;
    ``info["draft"]`` is then True).

    Handles what real datasets hold: CMYK and 16-bit images, palettes with transparency,
    EXIF-rotated photos, PNGs named .jpg. Raises UnreadableImage with a reason otherwise.
    """
    try:
        with open_image(path) as image:
            width, height = image.size
            if short_side and image.format == "JPEG":
                scale = short_side / min(width, height)
                if scale < 1:
                    image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            image.load()
            drafted = image.size != (width, height)
            upright = _upright_rgb(image)
            upright.info["draft"] = drafted      # reduced-size pixels (signals that need all of them check)
            return upright
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode ({type(e).__name__}: {e})") from None


def _upright_rgb(image: Image.Image) -> Image.Image:
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip
        import numpy as np
        array = np.asarray(image, dtype=np.float32)
        top = float(array.max()) or 1.0
        return Image.fromarray((array * (255.0 / top)).clip(0, 255).astype("uint8")).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def check_image_root(root) -> Path:
    if root is None:
        raise CurateError("--image-root is required: the folder that image paths are relative to")
    root = Path(root)
    if not root.is_dir():
        raise CurateError(f"{root}: the image root is not a folder")
    return root
