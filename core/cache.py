"""Embeddings kept on disk so that a re-run (or a run after a kill) embeds only what is new.

One folder per (embedder, model, weights digest). Inside, ``vectors.f32`` holds rows of
float32 and ``keys.jsonl`` one line per row: ``[absolute path, size, mtime_ns, check]``. Rows
are appended vectors first, key second, each flushed; on open, a torn tail (a partial line, a
vector without its key) is cut off. So a SIGKILL at any moment loses at most one batch.

Nothing read back is trusted: ``check`` is a keyed hash of the row's bytes (the key is the
folder's model identity), so a row that was overwritten, or copied from another model's
cache, fails it; so does a row that is not a finite unit vector. Such rows, and a folder
whose ``meta.json`` is unreadable or names another model, are embedded again, with a warning.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import CurateError

ImageKey = tuple[str, int, int]


def image_key(path: Path) -> ImageKey:
    """Identity of an image file for the cache: absolute path, size and modification time."""
    st = os.stat(path)
    return (str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EmbeddingCache:
    def __init__(self, root: Path, embedder: str, model: str, weights_digest: str, dim: int):
        self.dim = dim
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{embedder}-{model}")
        digest = hashlib.sha256(f"{embedder}\0{model}\0{weights_digest}".encode()).hexdigest()[:12]
        self.folder = Path(root) / f"{slug}-{digest}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.folder / "lock", "w")
        except OSError as e:
            raise CurateError(f"{root}: cannot use the cache folder ({e.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CurateError(f"{self.folder}: the cache is in use by another curate process") from None
        meta = {"embedder": embedder, "model": model, "weights_digest": weights_digest, "dim": dim}
        self.fingerprint = json.dumps(meta, sort_keys=True).encode()
        self.warnings: list[str] = []
        self.vectors_path = self.folder / "vectors.f32"
        self.keys_path = self.folder / "keys.jsonl"
        meta_path = self.folder / "meta.json"
        if meta_path.exists() and _read_json(meta_path) != meta:
            self.warnings.append(f"{self.folder}: the cache's meta.json is unreadable or names another model; "
                                 "its vectors are not used and the images are embedded again")
            self.vectors_path.unlink(missing_ok=True)
            self.keys_path.unlink(missing_ok=True)
        meta_path.write_text(json.dumps(meta, indent=1))
        self.rows: dict[ImageKey, int] = {}
        self.checks: list[str | None] = []
        self._repair_and_load()
        self._vectors_out = open(self.vectors_path, "ab")
        self._keys_out = open(self.keys_path, "a", encoding="utf-8")

    def _repair_and_load(self) -> None:
        keys: list[ImageKey] = []
        good_bytes = 0
        if self.keys_path.exists():
            with open(self.keys_path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    try:
                        path, size, mtime, *check = json.loads(line)
                    except (ValueError, TypeError):
                        break
                    keys.append((path, size, mtime))
                    self.checks.append(check[0] if check else None)
                    good_bytes += len(line)
        row_bytes = self.dim * 4
        stored = self.vectors_path.stat().st_size // row_bytes if self.vectors_path.exists() else 0
        count = min(len(keys), stored)
        if self.keys_path.exists() and (count < len(keys) or good_bytes != self.keys_path.stat().st_size):
            with open(self.keys_path, "rb") as f:
                kept = b"".join(line for _, line in zip(range(count), f))
            self.keys_path.write_bytes(kept)
        if self.vectors_path.exists() and self.vectors_path.stat().st_size != count * row_bytes:
            os.truncate(self.vectors_path, count * row_bytes)
        self.rows = {key: row for row, key in enumerate(keys[:count])}
        del self.checks[count:]

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, keys: list[ImageKey]) -> dict[int, int]:
        """For each position in ``keys`` found in the cache, its row."""
        return {i: self.rows[k] for i, k in enumerate(keys) if k in self.rows}

    def read_rows(self, rows) -> np.ndarray:
        if not len(self.rows):
            return np.zeros((0, self.dim), np.float32)
        self._vectors_out.flush()
        matrix = np.memmap(self.vectors_path, dtype=np.float32, mode="r", shape=(len(self.checks), self.dim))
        return np.asarray(matrix[np.asarray(rows, dtype=np.int64)])

    def read_verified(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``rows`` and which of them pass verification (see the module's doc)."""
        vectors = self.read_rows(rows)
        good = np.isfinite(vectors).all(axis=1) & (np.abs(np.linalg.norm(vectors, axis=1) - 1) < 1e-3)
        for k, row in enumerate(rows):
            if good[k] and self.checks[row] != self._check(vectors[k]):
                good[k] = False
        if not good.all():
            self.warnings.append(f"{self.folder}: {int((~good).sum()):,} cached vectors failed verification "
                                 "(changed, copied from another model, or not finite); embedded again")
        return vectors, good

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
        self._keys_out.write("".join(json.dumps([*k, c]) + "\n" for k, c in zip(keys, checks)))
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
