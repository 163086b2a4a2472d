"""Embedding vectors out of curate: ``curate embed -o`` (a .npy beside its image listing) and
``curate embed --export`` (the vectors with their image and sample ids, as Parquet or .npy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import Outputs
from .errors import CurateError, setting
from .gather import gather

if TYPE_CHECKING:
    from .deduplicate import Embeddings


def save_embeddings(found: Embeddings, output: Path, *, inputs=(), overwrite: bool = False) -> None:
    """The vectors as ``OUTPUT.npy`` and, beside it, ``OUTPUT.json`` listing each row's image."""
    output = Path(output)
    with Outputs(inputs, overwrite=overwrite) as outputs:
        listing = outputs.claim(output.with_name(output.name + ".json"), "image listing")
        np.save(outputs.open(outputs.claim(output, "vectors file"), mode="wb"), found.result.vectors)
        failures = found.result.failures
        json.dump([{"image": p, "ok": bool(found.result.ok[i]), "reason": failures.get(i)}
                   for i, p in enumerate(found.images.paths)], outputs.open(listing), indent=0)


EXPORT_SUFFIXES = (".parquet", ".npy")
EXPORT_ROWS = 65_536          # vectors read and written at a time


def check_export(path) -> Path:
    """``path`` if its suffix names an export format (checked before any image is embedded)."""
    path = Path(path)
    if path.suffix not in EXPORT_SUFFIXES:
        raise CurateError(f"{setting('export')} {path}: the file name must end in .parquet or .npy "
                          "(the suffix chooses the format)")
    return path


def export_embeddings(found: Embeddings, path: Path, *, inputs=(), overwrite: bool = False) -> int:
    """The vectors of the embedded images with their ids, for a user's own analysis: by the
    suffix of ``path``, a Parquet table (image, sample_id, vector) or a .npy of the vectors with,
    beside it, PATH.ids.jsonl naming each row's image and sample id. Images that could not be
    embedded are left out (the run lists them). Returns how many rows were written."""
    path = check_export(path)
    rows = np.flatnonzero(found.result.ok)
    images = [found.images.paths[i] for i in rows.tolist()]
    sample_ids = [str(found.images.first_id[i]) for i in rows.tolist()]   # ids may mix numbers and strings
    vectors = found.result.vectors
    with Outputs(inputs, overwrite=overwrite) as outputs:
        outputs.claim(path, "export")
        if path.suffix == ".parquet":
            _write_parquet(outputs.open(path, mode="wb"), images, sample_ids, vectors, rows)
        else:
            listing = outputs.claim(path.with_name(path.name[:-len(".npy")] + ".ids.jsonl"), "export's ids")
            _write_npy(outputs.open(path, mode="wb"), vectors, rows)
            stream = outputs.open(listing)
            for row, (image, sample_id) in enumerate(zip(images, sample_ids)):
                stream.write(json.dumps({"row": row, "image": image, "sample_id": sample_id}, ensure_ascii=False) + "\n")
    return len(rows)


def _parts(vectors: np.ndarray, rows: np.ndarray):
    """(start, the vectors of ``rows[start:start + EXPORT_ROWS]``): a run's vectors may be a map
    of a file larger than memory, so they are read and written a part at a time."""
    for start in range(0, len(rows), EXPORT_ROWS):
        yield start, np.ascontiguousarray(gather(vectors, rows[start:start + EXPORT_ROWS]), np.float32)


def _write_npy(stream, vectors: np.ndarray, rows: np.ndarray) -> None:
    np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                  "fortran_order": False, "shape": (len(rows), vectors.shape[1])})
    for _, part in _parts(vectors, rows):
        stream.write(part.tobytes())


def _write_parquet(stream, images: list[str], sample_ids: list[str], vectors: np.ndarray, rows: np.ndarray) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CurateError(f"{setting('export')} to .parquet needs pyarrow (pip install pyarrow), "
                          "or export to .npy") from None
    dim = vectors.shape[1]
    schema = pa.schema([("image", pa.string()), ("sample_id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(stream, schema) as writer:
        for start, part in _parts(vectors, rows):
            stop = start + len(part)
            writer.write_table(pa.table({"image": pa.array(images[start:stop], pa.string()),
                                         "sample_id": pa.array(sample_ids[start:stop], pa.string()),
                                         "vector": pa.FixedSizeListArray.from_arrays(
                                             pa.array(part.reshape(-1), pa.float32()), dim)}, schema=schema))
        if not len(rows):
            writer.write_table(schema.empty_table())
