"""Embeddings kept on disk so that a re-run (or a run after a kill) embeds only what is new.

One folder per (embedder, model, weights digest). Inside, ``vectors.f32`` holds rows of
float32 and ``keys.jsonl`` one line per row: ``[absolute path, size, mtime_ns, check]``. Rows
are appended vectors first, key second, each flushed; on open, a torn tail (a partial line, a
vector without its key) is cut off. So a SIGKILL at any moment loses at most one batch.

Nothing read back is trusted: ``check`` is a keyed hash of the row's bytes (the key is the
folder's model identity), so a row that was overwritten, or copied from another model's
cache, fails it; so does a row that is not a finite unit vector, and a key line that is not
``[path, size, mtime_ns, check]``. Such rows, and a folder whose ``meta.json`` is unreadable or
names another model, are embedded again, with a warning. Cache files are opened without
following symbolic links: a link (to anywhere) is an error naming it, never a target truncated.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
from dataclasses import dataclass
import json
import os
import stat
from pathlib import Path

import numpy as np

from .errors import CurateError

ImageKey = tuple[str, int, int]


def image_key(path: Path) -> ImageKey:
    """Identity of an image file for the cache: absolute path, size and modification time (an
    image held as bytes: its content hash, or its archive member)."""
    if hasattr(path, "cache_key"):
        return path.cache_key()
    st = os.stat(path)
    return (str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


def open_cache_file(path: Path, flags: int):
    """A cache file opened without following a symbolic link (one could point anywhere, and
    the cache truncates and overwrites its files), and only when it is a regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CurateError(f"{path}: the cache file is a symbolic link; curate does not follow links "
                              "in its cache (remove it)") from None
        raise CurateError(f"{path}: cannot open the cache file ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CurateError(f"{path}: the cache file is not a regular file (remove it)")
    return os.fdopen(fd, "r+b" if flags & os.O_RDWR else "rb")


def _read_meta(path: Path):
    """The parsed ``meta.json``, None when it is unreadable, or ``_ABSENT``."""
    if not os.path.lexists(path):
        return _ABSENT
    with open_cache_file(path, os.O_RDONLY) as f:
        try:
            return json.loads(f.read())
        except (ValueError, RecursionError):
            return None


_ABSENT = object()


def key_row(line: bytes) -> tuple[ImageKey, str] | None:
    """One ``keys.jsonl`` line as (image key, check), or None when it is not
    ``[path, size, mtime_ns, check]``."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (type(row) is list and len(row) == 4 and type(row[0]) is str and type(row[1]) is int
            and type(row[2]) is int and type(row[3]) is str):
        return (row[0], row[1], row[2]), row[3]
    return None


# Vectors of images decoded on the device differ a little from Pillow's: they are kept apart.
DEVICE_DECODE_TAG = ";decoded-by-torchvision"


@dataclass(frozen=True)
class CacheIdentity:
    """What a cache folder holds vectors of, the one place it is decided: everything that changes
    a vector (the embedder, its model, the weights' digest and how images were decoded, or a
    signal and its version) names the folder and is checked against its meta.json."""

    embedder: str
    model: str
    weights_digest: str
    dim: int

    @classmethod
    def of_model(cls, model, decoded_on_device: bool = False) -> "CacheIdentity":
        digest = model.weights_digest + (DEVICE_DECODE_TAG if decoded_on_device else "")
        return cls(model.embedder, model.model_name, digest, model.dim)

    @classmethod
    def of_signal(cls, signal) -> "CacheIdentity":
        # a signal's settings key its cache too (a signal without settings keeps its old folder)
        values = ",".join(f"{name}={value}" for name, value in sorted(signal.values.items()))
        return cls("signal", signal.name, signal.version + (f"+{values}" if values else ""), signal.dim)

    @property
    def folder_name(self) -> str:
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{self.embedder}-{self.model}")
        digest = hashlib.sha256(f"{self.embedder}\0{self.model}\0{self.weights_digest}".encode()).hexdigest()[:12]
        return f"{slug}-{digest}"

    @property
    def meta(self) -> dict:
        return {"embedder": self.embedder, "model": self.model, "weights_digest": self.weights_digest, "dim": self.dim}


class EmbeddingCache:
    def __init__(self, root: Path, identity: CacheIdentity):
        self.dim = identity.dim
        self.folder = Path(root) / identity.folder_name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CurateError(f"{root}: cannot use the cache folder ({e.strerror})") from None
        self._lock = open_cache_file(self.folder / "lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CurateError(f"{self.folder}: the cache is in use by another curate process") from None
        meta = identity.meta
        self.fingerprint = json.dumps(meta, sort_keys=True).encode()
        self._notes: list[str] = []
        self.rejected = 0                   # cached vectors that failed verification in this run
        self.vectors_path = self.folder / "vectors.f32"
        self.keys_path = self.folder / "keys.jsonl"
        meta_path = self.folder / "meta.json"
        if _read_meta(meta_path) not in (meta, _ABSENT):
            self._notes.append(f"{self.folder}: the cache's meta.json is unreadable or names another model; "
                                 "its vectors are not used and the images are embedded again")
            self.vectors_path.unlink(missing_ok=True)
            self.keys_path.unlink(missing_ok=True)
        with open_cache_file(meta_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC) as f:
            f.write(json.dumps(meta, indent=1).encode())
        self.rows: dict[ImageKey, int] = {}
        self.checks: list[str | None] = []
        self._vectors_out = open_cache_file(self.vectors_path, os.O_RDWR | os.O_CREAT)
        self._keys_out = open_cache_file(self.keys_path, os.O_RDWR | os.O_CREAT)
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        """Read every complete key line, cut a torn tail off both files (a partial line, a vector
        without its key, a key without its vector), and leave both positioned for appending. A
        line that is not a valid key keeps its row, unused (its image is embedded again), and is
        blanked, so that the warning about it is given once."""
        keys: list[ImageKey | None] = []
        ends = [0]                                   # byte offset after each complete line
        for line in self._keys_out:
            if not line.endswith(b"\n"):
                break
            found = key_row(line)
            keys.append(found[0] if found else None)
            self.checks.append(found[1] if found else None)
            ends.append(ends[-1] + len(line))
        row_bytes = self.dim * 4
        count = min(len(keys), os.fstat(self._vectors_out.fileno()).st_size // row_bytes)
        for f, size in ((self._keys_out, ends[count]), (self._vectors_out, count * row_bytes)):
            f.truncate(size)
        self.rows = {key: row for row, key in enumerate(keys[:count]) if key is not None}
        del self.checks[count:]
        self._blank_bad_rows([row for row, key in enumerate(keys[:count]) if key is None], ends)
        self._keys_out.seek(ends[count])
        self._vectors_out.seek(count * row_bytes)

    def _blank_bad_rows(self, rows: list[int], ends: list[int]) -> None:
        """Overwrite the key lines of ``rows`` with spaces (a blank line is a row given up)."""
        f = self._keys_out
        bad = 0
        for row in rows:
            f.seek(ends[row])
            length = ends[row + 1] - ends[row] - 1
            if f.read(length).strip():
                bad += 1
                f.seek(ends[row])
                f.write(b" " * length)
        f.flush()
        if bad:
            self._notes.append(f"{self.keys_path}: {bad:,} rows are not [path, size, mtime, check]; "
                                 "ignored, and their images embedded again")

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, keys: list[ImageKey]) -> dict[int, int]:
        """For each position in ``keys`` found in the cache, its row."""
        return {i: self.rows[k] for i, k in enumerate(keys) if k in self.rows}

    def read_rows(self, rows) -> np.ndarray:
        if not len(self.rows):
            return np.zeros((0, self.dim), np.float32)
        self._vectors_out.flush()
        matrix = np.memmap(self._vectors_out, dtype=np.float32, mode="r", shape=(len(self.checks), self.dim))
        return np.asarray(matrix[np.asarray(rows, dtype=np.int64)])

    def read_verified(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``rows`` and which of them pass verification (see the module's doc)."""
        vectors = self.read_rows(rows)
        good = np.isfinite(vectors).all(axis=1) & (np.abs(np.linalg.norm(vectors, axis=1) - 1) < 1e-3)
        for k, row in enumerate(rows):
            if good[k] and self.checks[row] != self._check(vectors[k]):
                good[k] = False
        self.rejected += int((~good).sum())
        return vectors, good

    @property
    def warnings(self) -> list[str]:
        """What the user should know about this cache: one line per problem, however many reads."""
        rejected = [f"{self.folder}: {self.rejected:,} cached vectors failed verification (changed, copied "
                    "from another model, or not finite); embedded again"] if self.rejected else []
        return self._notes + rejected

    def _check(self, vector: np.ndarray) -> str:
        return hashlib.blake2b(np.ascontiguousarray(vector, np.float32).tobytes(), key=self.fingerprint[:64],
                               digest_size=8).hexdigest()

    def append(self, keys: list[ImageKey], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        assert vectors.shape == (len(keys), self.dim)
        self._vectors_out.write(vectors.tobytes())
        self._vectors_out.flush()
        os.fsync(self._vectors_out.fileno())
        start = len(self.checks)
        checks = [self._check(v) for v in vectors]
        self._keys_out.write("".join(json.dumps([*k, c]) + "\n" for k, c in zip(keys, checks)).encode())
        self._keys_out.flush()
        for offset, key in enumerate(keys):
            self.rows[key] = start + offset
        self.checks.extend(checks)

    def close(self) -> None:
        self._vectors_out.close()
        self._keys_out.close()
        self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
