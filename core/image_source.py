"""Images held as bytes rather than as files under ``--image-root``: a cell of a Parquet
file (a Hugging Face ``Image``, ``{bytes, path}``), a member of a tar or zip archive.

Such an image travels through a run as an :class:`ImageBytes`: a ``str`` (so that every
place that handles image paths, from ``Sample.image`` to dedup's decisions, handles it
unchanged) whose value is its key, and which knows how to give its bytes. The image layer
(:mod:`curate.images`) opens it wherever it opens a file, with the same bounds.

Safety: sizes are checked before anything is decoded (:data:`curate.images.MAX_IMAGE_BYTES`),
and an archive member is found only under a plain relative name: members whose names are
absolute, climb with ``..``, or that are links are never served (nor ever written to disk).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import stat
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

from .errors import CurateError

# How an image's format shows in its first bytes, and the extension it is named with.
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
          (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))
_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
                      "TIFF": ".tif", "MPO": ".jpg"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def extension_of(data: bytes) -> str:
    """The usual extension of an image's format, from its first bytes ('' when unknown)."""
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ""


def digest_of(data: bytes) -> str:
    """The content hash that names an image held as bytes (cache key, extracted file name): 128
    bits of SHA-256, which CPUs hash in hardware (2.6x blake2b's speed on the development machine)."""
    return hashlib.sha256(data).hexdigest()[:32]


class ImageBytes(str):
    """An image held as bytes. The string is the image's key in the run: for a Parquet cell
    ``GROUP/DIGEST.EXT`` (content-derived, so that the same picture has the same key on every
    pass and in every shard; ``GROUP``, the subset, is the image's source dataset), for an
    archive member its path in the archive. ``name``: the file name the source gives it (the
    ``path`` of a Hugging Face ``Image``), or None; ``origin``: where it was read, for people
    (``shard.parquet row 12``). The bytes are in ``data``, or read on demand from ``source``
    (an object with ``read()``, ``size`` and ``cache_key()``: an archive member, a spool)."""

    def __new__(cls, key: str, *, data: bytes | None = None, source=None, name: str | None = None,
                origin: str | None = None, digest: str | None = None):
        self = super().__new__(cls, key)
        self.data, self.source, self.name, self.origin, self._digest = data, source, name, origin, digest
        return self

    @classmethod
    def of_content(cls, data: bytes, group: str, *, name: str | None = None, origin: str | None = None):
        digest = digest_of(data)
        extension = extension_of(data) or (os.path.splitext(name or "")[1].lower() if name else "")
        return cls(f"{group}/{digest}{extension}", data=data, name=name, origin=origin, digest=digest)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.size

    def read(self) -> bytes:
        return self.data if self.data is not None else self.source.read()

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = digest_of(self.read())
        return self._digest

    def cache_key(self) -> tuple[str, int, int]:
        """The embedding cache's identity of this image (as ``(path, size, mtime)`` is a file's)."""
        if self.source is not None and hasattr(self.source, "cache_key"):
            return self.source.cache_key()
        return (f"sha256:{self.digest}", self.size, 0)

    def without_data(self, source) -> "ImageBytes":
        """The same image, its bytes now read from ``source`` (a spool)."""
        return ImageBytes(str(self), source=source, name=self.name, origin=self.origin, digest=self._digest)

    def __reduce__(self):          # to decode processes and back, with what it knows
        return _rebuild, (str(self), self.data, self.source, self.name, self.origin, self._digest)


def _rebuild(key, data, source, name, origin, digest):
    return ImageBytes(key, data=data, source=source, name=name, origin=origin, digest=digest)


def image_bytes(image) -> bytes:
    """The bytes of an image: an :class:`ImageBytes` or a file path (bounds: the caller's)."""
    if isinstance(image, ImageBytes):
        return image.read()
    with open(image, "rb") as f:
        return f.read()


# --- spooling: bytes kept on disk while a run needs them again ----------------------------------

class Spooled:
    """Bytes at ``offset`` in a spool file (see :class:`Spool`)."""

    def __init__(self, path: str, offset: int, size: int, digest: str):
        self.path, self.offset, self.size, self.digest = path, offset, size, digest

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)

    def cache_key(self):
        return (f"sha256:{self.digest}", self.size, 0)


class Spool:
    """One temporary file that holds the bytes of images a run needs after its reader has
    moved on (dedup embeds unique images after the scan): memory stays flat, and one file
    instead of a file per image (no inodes exhausted). Removed on :meth:`close`."""

    def __init__(self, folder: Path | None = None):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="curate-spool-", suffix=".bin", dir=folder)
        self.path = name
        self.stream = os.fdopen(fd, "wb")
        self.offset = 0
        atexit.register(self.close)

    def keep(self, image: ImageBytes) -> ImageBytes:
        if image.data is None:
            return image
        data = image.data
        self.stream.write(data)
        self.stream.flush()
        spooled = Spooled(self.path, self.offset, len(data), image.digest)
        self.offset += len(data)
        return image.without_data(spooled)

    def close(self) -> None:
        if not self.stream.closed:
            self.stream.close()
        Path(self.path).unlink(missing_ok=True)


# --- archives: an image root that is a tar or zip file -------------------------------------------

def is_archive(path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES) and Path(path).is_file()


def unsafe_member(name: str) -> str | None:
    """Why an archive member's name could escape a folder it were extracted to, or None."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"the archive member {name!r} has an absolute name"
    if ".." in name.replace("\\", "/").split("/"):
        return f"the archive member {name!r} climbs out with '..'"
    if "\0" in name:
        return "an archive member's name holds a NUL byte"
    return None


class ArchiveMember:
    """One member of an archive, read on demand (through :func:`open_archive`'s shared index)."""

    def __init__(self, archive: str, member: str, size: int, mtime: int):
        self.archive, self.member, self.size, self.mtime = archive, member, size, mtime

    def read(self) -> bytes:
        return open_archive(self.archive).read(self.member)

    def cache_key(self):
        return (f"{self.archive}!{self.member}", self.size, self.mtime)


class Archive:
    """The image members of a zip or tar file, by name. Members that are links, or whose names
    are unsafe, are indexed with the reason they are refused. Reads are serialised (tarfile
    and a shared zip handle are not thread-safe)."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.lock = threading.Lock()
        self.mtime = os.stat(self.path).st_mtime_ns
        self.refused: dict[str, str] = {}
        self.sizes: dict[str, int] = {}
        try:
            if self.path.lower().endswith(".zip"):
                self.zip, self.tar = zipfile.ZipFile(self.path), None
                for info in self.zip.infolist():
                    link = stat.S_ISLNK(info.external_attr >> 16)
                    self._index(info.filename, info.file_size, info.is_dir(), link)
            else:
                self.zip, self.tar = None, tarfile.open(self.path)
                self.members = {}
                for info in self.tar.getmembers():
                    self.members[info.name] = info
                    self._index(info.name, info.size, info.isdir(), info.issym() or info.islnk())
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
            raise CurateError(f"{path}: not a readable archive ({type(e).__name__}: {e})") from None

    def _index(self, name: str, size: int, folder: bool, link: bool) -> None:
        if folder:
            return
        problem = unsafe_member(name) or (f"the archive member {name!r} is a link" if link else None)
        if problem:
            self.refused[name] = problem
        else:
            self.sizes[name] = size

    def member(self, name: str):
        """An :class:`ImageBytes` for the member ``name``, None when there is none; raises
        :class:`curate.images.UnreadableImage` for a refused member."""
        from .images import UnreadableImage
        if name in self.refused:
            raise UnreadableImage(self.refused[name])
        size = self.sizes.get(name)
        if size is None:
            return None
        source = ArchiveMember(self.path, name, size, self.mtime)
        return ImageBytes(name, source=source, name=name, origin=f"{self.path}:{name}")

    def read(self, name: str) -> bytes:
        from .images import MAX_IMAGE_BYTES, UnreadableImage
        size = self.sizes[name]
        if size > MAX_IMAGE_BYTES:
            raise UnreadableImage(f"{size:,} bytes is over the {MAX_IMAGE_BYTES:,}-byte limit for an image")
        with self.lock:
            try:
                if self.zip is not None:
                    with self.zip.open(name) as f:
                        return f.read(MAX_IMAGE_BYTES + 1)
                return self.tar.extractfile(self.members[name]).read(MAX_IMAGE_BYTES + 1)
            except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as e:
                raise UnreadableImage(f"cannot read {name!r} from {self.path} ({type(e).__name__}: {e})") from None


_ARCHIVES: dict[str, Archive] = {}
_ARCHIVES_LOCK = threading.Lock()


def open_archive(path) -> Archive:
    """The archive at ``path``, indexed once per process."""
    key = os.path.abspath(path)
    with _ARCHIVES_LOCK:
        archive = _ARCHIVES.get(key)
        if archive is None:
            archive = _ARCHIVES[key] = Archive(key)
    return archive
