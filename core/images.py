"""Open dataset images safely: paths stay inside the image root, headers are read lazily,
pixels are decoded at reduced size where the format allows it."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from PIL import Image, ImageOps

from .errors import CurateError, setting
from .image_source import ImageBytes, image_bytes, is_archive, open_archive

# Bounds checked before any pixel is decoded, so that no image can eat the machine: Pillow
# refuses images over twice this many pixels, we refuse anything over it; and no real dataset
# image is anywhere near this many bytes (a 10 GB sparse file named .jpg is refused at once).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 178_956_970
MAX_IMAGE_BYTES = 256 * 1024 * 1024


class UnreadableImage(Exception):
    """An image that cannot be used; the message is the reason shown in reports."""


MAX_PATH_CHARS = 1024


def resolve_image(root: Path, relative: str, real_root: str | None = None, real_folders: dict | None = None) -> Path:
    return Path(_resolve(os.fspath(root), relative, real_root, real_folders)[0])


def _resolve(root: str, relative: str, real_root: str | None, real_folders: dict | None) -> tuple[str, bool | None]:
    """``root/relative``, refusing what could leave the root or break a system call: absolute
    paths, ``..``, NUL bytes, over-long paths, and symbolic links (of files or folders) that
    point outside the root once resolved. The root itself may be a link (``real_root``: its
    resolved path, when the caller already has it). ``real_folders``: a cache of resolved
    folders, so that a dataset's images (which sit in few folders) cost one ``lstat`` each.
    Also returns whether the file exists, when that ``lstat`` told (None otherwise)."""
    if "\0" in relative:
        raise UnreadableImage(f"the image path {relative[:80]!r} holds a NUL byte")
    if len(relative) > MAX_PATH_CHARS:
        raise UnreadableImage(f"the image path is {len(relative):,} characters long (at most {MAX_PATH_CHARS:,})")
    if not relative or os.path.isabs(relative) or relative.startswith("~"):
        raise UnreadableImage(f"the image path {relative!r} is absolute; it must be relative to the image root")
    normal = os.path.normpath(relative)
    if normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("/"):
        raise UnreadableImage(f"the image path {relative!r} climbs out of the image root")
    path = os.path.join(root, normal)
    real_root = real_root or os.path.realpath(root)
    try:
        real, exists = _real_path(path, real_folders)
    except (OSError, ValueError) as e:
        raise UnreadableImage(f"cannot resolve the image path ({e})") from None
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UnreadableImage(f"the image path {relative!r} leads outside the image root through a symbolic link")
    return path, exists


_KEPT_FOLDERS = 65_536
KEPT_SIZES = 65_536       # image sizes remembered (a cache: memory stays flat on any dataset)


def _real_path(path: str, real_folders: dict | None) -> tuple[str, bool | None]:
    """``os.path.realpath(path)``, with the folder's resolved path taken from ``real_folders``
    (only the file itself is then checked for being a link); and whether the file exists,
    when the check could tell."""
    if real_folders is None:
        return os.path.realpath(path), None
    folder, name = os.path.split(path)
    real_folder = real_folders.get(folder)
    if real_folder is None:
        if len(real_folders) >= _KEPT_FOLDERS:
            real_folders.clear()
        real_folder = real_folders[folder] = os.path.realpath(folder)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return os.path.join(real_folder, name), False
    except OSError:
        return os.path.realpath(path), None
    if stat.S_ISLNK(mode):
        return os.path.realpath(path), None
    return os.path.join(real_folder, name), True


def image_size(path: str | Path, exif: bool = True) -> tuple[int, int]:
    """Width and height from the header only (Pillow does not decode pixels here).

    ``exif``: as displayed (EXIF rotation applied). Box padding uses ``exif=False``, the
    stored size, because LLaVA pads ``Image.open(path).size``."""
    if not exif:
        _check_file_size(path)
        size = _jpeg_frame_size(path)
        if size is not None:
            _check_pixels(*size)
            return size
    try:
        with open_image(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1) if exif else 1
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"not a readable image ({e})") from None
    return (height, width) if exif and orientation in (5, 6, 7, 8) else (width, height)


def open_image(path: Path) -> Image.Image:
    """``Image.open`` (the header only) after the bounds: the file's size, then the pixel count."""
    _check_file_size(path)
    try:
        image = Image.open(io.BytesIO(path.read()) if isinstance(path, ImageBytes) else path)
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableImage("missing file") from None
    except Image.UnidentifiedImageError:
        raise
    except OSError as e:        # the file went away or turned into a link loop since its size was read
        raise _cannot_open(e) from None
    try:
        _check_pixels(*image.size)
    except UnreadableImage:
        image.close()
        raise
    return image


def _check_file_size(path) -> None:
    try:
        size = path.size if isinstance(path, ImageBytes) else os.path.getsize(path)
    except (FileNotFoundError, NotADirectoryError):
        raise UnreadableImage("missing file") from None
    except OSError as e:        # a symbolic-link loop, a name too long, no permission...
        raise _cannot_open(e) from None
    if size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    if size > MAX_IMAGE_BYTES:
        raise UnreadableImage(f"{size:,} bytes is over the {MAX_IMAGE_BYTES:,}-byte limit for an image")


def _cannot_open(error: OSError) -> UnreadableImage:
    return UnreadableImage(f"cannot open the file ({error.strerror or error})")


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise UnreadableImage(f"{width}x{height} pixels is over the {MAX_PIXELS:,} limit (decompression bomb?)")


JPEG_MAGIC = b"\xff\xd8\xff"      # how every JPEG file begins (SOI, then a marker)
# JPEG markers: frame headers (SOF0-15 but DHT, JPG, DAC), and the segments Pillow skips or
# reads without changing the size (DHT, DAC, DQT, DNL, DRI, APP0-15, COM)
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})


def _jpeg_frame_size(path) -> tuple[int, int] | None:
    """A JPEG's stored size from its frame header, as Pillow's ``Image.open`` reads it (the last
    frame header before the scan) but without parsing every segment in Python (a 108K-image
    dataset: a quarter of a second). None for anything but a plain JPEG: the caller then asks
    Pillow, which also gives the reason when the file is broken."""
    try:
        with (io.BytesIO(path.read()) if isinstance(path, ImageBytes) else open(path, "rb")) as f:
            return _jpeg_stream_size(f)
    except OSError:
        return None


def _jpeg_stream_size(f) -> tuple[int, int] | None:
    """:func:`_jpeg_frame_size` of an open binary file."""
    if f.read(3) != JPEG_MAGIC:
        return None
    f.seek(2)
    size = None
    while True:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker, length = head[1], head[2] << 8 | head[3]
        if marker == 0xDA:                               # start of scan
            return size
        if marker in _JPEG_FRAMES and length >= 8:
            frame = f.read(6)      # precision, height, width, components
            if len(frame) < 6 or frame[0] != 8 or frame[5] not in (1, 3, 4):
                return None
            size = (frame[3] << 8 | frame[4], frame[1] << 8 | frame[2])
            if 0 in size:
                return None
            f.seek(length - 8, 1)
        elif marker in _JPEG_SEGMENTS and length >= 2:
            f.seek(length - 2, 1)
        else:
            return None


class ImageLocator:
    """Finds a record's image under ``--image-root``, which may be the LLaVA data root
    (``ROOT/vg/VG_100K/1.jpg``) or the dataset's own root (``ROOT/VG_100K/1.jpg``).
    Sizes are read from headers once per image (1M referring QAs touch 108K images), and
    remembered for the last 65,536 images."""

    def __init__(self, root):
        self.root = Path(root) if root is not None else None
        self._root = os.fspath(self.root) if self.root is not None else None
        self.real_root = os.path.realpath(self.root) if self.root is not None else None
        self.archive = open_archive(self.root) if self.root is not None and is_archive(self.root) else None
        self._real_folders: dict[str, str] = {}
        self._last: tuple[str | None, str | None] = (None, None)
        self._sizes: dict[str, tuple[int, int]] = {}

    def path(self, relative: str) -> Path:
        """The image's file (which may not exist: then the path under the root as given); an
        image held as bytes (:class:`curate.image_source.ImageBytes`) is its own "file"."""
        found = self.find(relative)
        if isinstance(found, ImageBytes):
            return found
        return Path(found) if found is not None else resolve_image(self.root, relative, self.real_root,
                                                                   self._real_folders)

    def find(self, relative: str) -> str | None:
        """The image's file (as a str), or None when it is in neither place. An image held as
        bytes is found as itself; under an archive root, a member is an ImageBytes."""
        if isinstance(relative, ImageBytes):
            return relative
        if self._last[0] == relative:
            return self._last[1]
        if self.root is None:
            raise UnreadableImage("no --image-root given")
        found = self._existing(relative)
        if found is None:
            head, sep, rest = relative.partition("/")
            found = self._existing(rest) if sep and rest else None
        self._last = (relative, found)     # a reader that looks an image up often sizes it next
        return found

    def read_bytes(self, relative: str) -> bytes:
        """The bytes of a record's image (a file under the root, an archive member or an image
        held as bytes), its size bounded first; UnreadableImage when it is missing, empty or
        over :data:`MAX_IMAGE_BYTES`. For whoever writes images out (embedded or extracted)."""
        found = self.find(relative)
        if found is None:
            raise UnreadableImage(f"{relative!r}: missing file")
        _check_file_size(found)
        return image_bytes(found)

    def _existing(self, relative: str) -> str | None:
        if self.archive is not None:
            _resolve(self._root, relative, self.real_root, None)   # the same refusals as for a folder
            return self.archive.member(os.path.normpath(relative))
        path, exists = _resolve(self._root, relative, self.real_root, self._real_folders)
        return path if (exists if exists is not None else _exists(path)) else None

    def size(self, relative: str) -> tuple[int, int]:
        size = self._sizes.get(relative)
        if size is None:
            if len(self._sizes) >= KEPT_SIZES:
                self._sizes.clear()
            found = self.find(relative)
            size = self._sizes[str(relative)] = image_size(found if found is not None else self.path(relative),
                                                      exif=False)
        return size


def _exists(path: str) -> bool:
    """Like ``Path.exists``, but a name the file system refuses (too long, say) is a reason."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            return False
        raise UnreadableImage(f"cannot look up the image ({e.strerror})") from None
    return True


def load_rgb(path: Path, short_side: int | None = None, long_side: int | None = None,
             long_at_least: int | None = None) -> Image.Image:
    """Decode an image as upright RGB, at reduced size when ``short_side`` allows (JPEG draft;
    ``info["draft"]`` is then True). ``long_side``: at most this long on its longer side (JPEG
    draft, then a resize), for whoever needs a bounded image rather than one at least so large.
    ``long_at_least``: the draft also keeps the longer side at least this long (alone, or with
    ``short_side``: one decode for two users, an embedder and the image filters' look).

    Handles what real datasets hold: CMYK and 16-bit images, palettes with transparency,
    EXIF-rotated photos, PNGs named .jpg. Raises UnreadableImage with a reason otherwise.
    """
    try:
        with open_image(path) as image:
            width, height = image.size
            scale = 0.0                    # the draft's: the largest that a caller needs
            if short_side:
                scale = short_side / min(width, height)
            elif long_side:
                scale = long_side / max(width, height)
            if long_at_least:
                scale = max(scale, long_at_least / max(width, height))
            if 0 < scale < 1 and image.format == "JPEG":
                image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
            image.load()
            drafted = image.size != (width, height)
            upright = _upright_rgb(image)
            if long_side and max(upright.size) > long_side:
                upright = fit_long_side(upright, long_side)
                drafted = True
            upright.info["draft"] = drafted      # reduced-size pixels (signals that need all of them check)
            return upright
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode ({type(e).__name__}: {e})") from None


def fit_long_side(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` resized to ``long_side`` on its longer side when it is longer (as ``load_rgb``
    bounds it), else ``image`` itself."""
    if max(image.size) <= long_side:
        return image
    scale = long_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BILINEAR, reducing_gap=2.0)


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
        raise CurateError(f"{setting('image_root')} is required: the folder that image paths are relative to")
    root = Path(root)
    if not root.is_dir() and not is_archive(root):
        raise CurateError(f"{root}: the image root is not a folder (nor a .zip or .tar archive)")
    if is_archive(root):
        open_archive(root)         # a broken archive is one clear error, before any work
    return root


def image_from_bytes(data, group: str, *, name: str | None = None, origin=None) -> ImageBytes:
    """An image held as bytes (a Parquet cell, an archive member read whole), after the same
    bounds as a file (its size, then the pixel count from its header): bytes that are not an
    image raise UnreadableImage, so that the record is rejected with that reason rather than
    written."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise UnreadableImage(f"the image bytes are a {type(data).__name__}, not bytes")
    data = bytes(data)
    if not data:
        raise UnreadableImage("empty image (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise UnreadableImage(f"{len(data):,} bytes is over the {MAX_IMAGE_BYTES:,}-byte limit for an image")
    size = _jpeg_stream_size(io.BytesIO(data))      # a plain JPEG's header, without Pillow (5x faster)
    if size is not None:
        _check_pixels(*size)
    else:
        try:
            with Image.open(io.BytesIO(data)) as image:
                _check_pixels(*image.size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableImage(f"the bytes are not an image ({type(e).__name__}: {e})") from None
    return ImageBytes.of_content(data, group, name=name, origin=origin)
