"""Embedding vectors out of curate: ``curate embed -o`` (a .npy beside its image listing) and
``curate embed --export`` (the vectors with their image and sample ids, as Parquet or .npy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import Outputs
from .errors import CurateError, setting

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
    vectors = np.ascontiguousarray(found.result.vectors[rows], np.float32)
    with Outputs(inputs, overwrite=overwrite) as outputs:
        outputs.claim(path, "export")
        if path.suffix == ".parquet":
            _write_parquet(outputs.open(path, mode="wb"), images, sample_ids, vectors)
        else:
            listing = outputs.claim(path.with_name(path.name[:-len(".npy")] + ".ids.jsonl"), "export's ids")
            np.save(outputs.open(path, mode="wb"), vectors)
            stream = outputs.open(listing)
            for row, (image, sample_id) in enumerate(zip(images, sample_ids)):
                stream.write(json.dumps({"row": row, "image": image, "sample_id": sample_id}, ensure_ascii=False) + "\n")
    return len(rows)


def _write_parquet(stream, images: list[str], sample_ids: list[str], vectors: np.ndarray) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CurateError(f"{setting('export')} to .parquet needs pyarrow (pip install pyarrow), "
                          "or export to .npy") from None
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    pq.write_table(pa.table({"image": pa.array(images, pa.string()), "sample_id": pa.array(sample_ids, pa.string()),
                             "vector": column}), stream)
