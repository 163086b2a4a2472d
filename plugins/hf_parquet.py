"""Hugging Face Parquet datasets, images embedded as ``Image`` cells (``{bytes, path}``).

Read: a file, a folder of shards or a glob (the engine expands folders and globs), streamed
row group by row group with pyarrow, a few rows at a time, so memory stays bounded whatever
the shard's size. The schemas recognised (from their dataset cards; docs/FORMATS.md):

- LLaVA-OneVision-Data (lmms-lab/LLaVA-OneVision-Data): ``id``, ``image`` (``Image``),
  ``conversations`` (``[{from, value}]``, LLaVA's), ``data_source``.
- the_cauldron (HuggingFaceM4/the_cauldron) and FineVision (HuggingFaceM4/FineVision):
  ``images`` (``[Image]``), ``texts`` (``[{user, assistant, source}]``, no ``<image>`` tag: one
  is put before the first question per image, as LLaVA places it); FineVision's rating
  columns are kept in ``extra``. Rows have no id: each gets ``SUBSET/SHARD/ROW``.
- Mantis-Instruct (TIGER-Lab/Mantis-Instruct): ``id``, ``images`` (``[{bytes: null, path}]``,
  the files in a zip per subset: pass it as ``--image-root``), ``conversation``
  (``[{role, content}]``).
- curate's own output (the writer below): ``id``, ``images``, ``conversations`` and ``extra``
  (the records' other keys, as JSON).

Every other column is kept in the Sample's ``extra``. Images held as bytes become
:class:`curate.image_source.ImageBytes` keyed ``GROUP/DIGEST.EXT`` (GROUP: ``data_source``, the
Image's own folder, or the shard's folder, the subset), so their source is their subset.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import curate
from curate import Options, Reader, RecordError, Sample, Setting, Turn, Writer
from curate.errors import CurateError, setting
from curate.images import ImageLocator, UnreadableImage, image_from_bytes
from curate.plugins.llava import record_to_sample
from curate.records import json_type, unsafe_image_path
from curate.sample import IMAGE_TOKEN

PARQUET_MAGIC = "PAR1"
ROWS_PER_BATCH = 64                  # rows decoded at once: memory is a few batches of images
MAX_ROW_GROUP_BYTES = 1 << 30        # a row group is read whole: refuse what would not fit

_ONEVISION = ("id", "image", "conversations")
_CAULDRON = ("images", "texts")
_MANTIS = ("images", "conversation")
_CURATE = ("images", "conversations")
_MANTIS_ROLES = {"user": "human", "assistant": "gpt", "system": "system", "human": "human", "gpt": "gpt"}


def open_parquet(path: Path):
    """The file's ``pyarrow.parquet.ParquetFile``; a file pyarrow cannot read is one clear error."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())[:200]})") from None


IMAGE_COLUMN = Setting("parquet_image_column", str, None,
                       help="hf-parquet reader, for a schema curate does not recognise: the column of each row's "
                            "image or list of images (Hugging Face Image cells {bytes, path}, bytes, or paths).")
CONVERSATION_COLUMN = Setting("parquet_conversation_column", str, None,
                              help="hf-parquet reader, for a schema curate does not recognise: the column of each "
                                   "row's turns, a list of {from, value} (LLaVA), {role, content} (messages) or "
                                   "{user, assistant} pairs (no <image> tags: one per image goes before the first).")
ID_COLUMN = Setting("parquet_id_column", str, None,
                    help="hf-parquet reader, with --parquet-conversation-column: the column of each row's id "
                         "(default: SUBSET/SHARD/ROW).")
MAPPING = (IMAGE_COLUMN, CONVERSATION_COLUMN, ID_COLUMN)


def schema_of(columns, path: Path) -> str:
    """Which known schema the columns are, or a one-line error saying what was expected and
    how to name the columns of another schema."""
    names = set(columns)
    for schema, needed in (("onevision", _ONEVISION), ("cauldron", _CAULDRON), ("mantis", _MANTIS),
                           ("curate", _CURATE)):
        if all(n in names for n in needed):
            return schema
    raise CurateError(f"{path}: the Parquet columns ({', '.join(sorted(names))}) match no schema curate reads: "
                      f"LLaVA-OneVision ({', '.join(_ONEVISION)}), the_cauldron/FineVision ({', '.join(_CAULDRON)}), "
                      f"Mantis ({', '.join(_MANTIS)}) or curate's own ({', '.join(_CURATE)}); name its columns with "
                      f"{setting(CONVERSATION_COLUMN.name)} (and {setting(IMAGE_COLUMN.name)}, "
                      f"{setting(ID_COLUMN.name)})")


def mapping_of(columns, path: Path, options: Options) -> dict | None:
    """The columns the user named (``--parquet-*-column``), checked against the file's, or None
    when none was named."""
    named = {one.name: options.setting(one.name) for one in MAPPING}
    if not any(named.values()):
        return None
    if not named[CONVERSATION_COLUMN.name]:
        raise CurateError(f"{path}: {setting(CONVERSATION_COLUMN.name)} is needed with "
                          f"{setting(next(name for name, column in named.items() if column))}: name the column of the turns")
    for name, column in named.items():
        if column and column not in columns:
            raise CurateError(f"{path}: {setting(name)} names the column {column!r}, which the file does not have "
                              f"(its columns: {', '.join(columns)})")
    return {"image": named[IMAGE_COLUMN.name], "turns": named[CONVERSATION_COLUMN.name],
            "id": named[ID_COLUMN.name]}


_UNSAFE_GROUP = re.compile(r"[^A-Za-z0-9._()+-]+")


def group_name(text) -> str:
    """A subset's name as one safe folder name (``dvqa(cauldron,llava_format)`` stays readable)."""
    name = _UNSAFE_GROUP.sub("_", str(text)).strip("._") or "images"
    return name[:100]


class RowContext:
    """Where one row is: for its id, its images' keys and origin, and its errors."""

    def __init__(self, path: Path, subset: str, row: int, record_id=None):
        self.path, self.subset, self.row, self.record_id = path, subset, row, record_id

    def error(self, field, reason) -> RecordError:
        return RecordError(self.path, reason, index=self.row, record_id=self.record_id, field=field)

    def image(self, cell, field: str, group: str | None = None):
        """A Hugging Face ``Image`` cell as the Sample's image: ImageBytes when it holds bytes,
        its path (a file under --image-root, or a member of an archive root) when it does not."""
        if cell is None:
            return None
        if isinstance(cell, (bytes, str)):
            cell = {"bytes": cell, "path": None} if isinstance(cell, bytes) else {"bytes": None, "path": cell}
        if not isinstance(cell, dict):
            raise self.error(field, f"an image must be a {{bytes, path}} struct, not a {type(cell).__name__}")
        data, name = cell.get("bytes"), cell.get("path")
        if data is None:
            if not name:
                raise self.error(field, "the image has neither bytes nor a path")
            problem = unsafe_image_path(name)
            if problem:
                raise self.error(field, problem)
            return name
        folder = os.path.dirname(name) if isinstance(name, str) and not unsafe_image_path(name) else ""
        group = group or (group_name(folder.split("/")[0]) if folder else self.subset)
        try:
            return image_from_bytes(data, group, name=name if isinstance(name, str) else None,
                                    origin={"shard": str(self.path), "row": self.row})
        except UnreadableImage as e:
            raise self.error(field, str(e)) from None


def _without_bytes(row: dict) -> dict:
    """A row as the rejects file shows it: image bytes replaced by their length."""
    def shown(value):
        if isinstance(value, bytes):
            return f"<{len(value):,} bytes>"
        if isinstance(value, dict):
            return {k: shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shown(v) for v in value]
        return value
    return shown(row)


def _images(images) -> object:
    """A Sample's image field from a list of images (one: the path itself, as LLaVA writes it)."""
    if not images:
        return None
    return images[0] if len(images) == 1 else images


def onevision_sample(row: dict, where: RowContext) -> Sample:
    """LLaVA-OneVision: a LLaVA record whose ``image`` is an Image cell."""
    group = group_name(row["data_source"]) if row.get("data_source") else None
    image = where.image(row.get("image"), "image", group)
    record = {k: v for k, v in row.items() if k != "image"}
    if record.get("id") is None:
        record["id"] = f"{where.subset}/{where.path.stem}/{where.row}"
    if image is not None:
        record["image"] = "image.jpg"           # checked as a path; the image itself replaces it
    sample = record_to_sample(record, where.path, where.row)
    sample.image = image
    return sample


def curate_sample(row: dict, where: RowContext) -> Sample:
    """curate's own Parquet: LLaVA's fields, ``images`` a list of Image cells, ``extra`` JSON."""
    images = [where.image(cell, f"images[{k}]") for k, cell in enumerate(row.get("images") or [])]
    record = {k: v for k, v in row.items() if k not in ("images", "extra")}
    if record.get("id") is None:
        record["id"] = f"{where.subset}/{where.path.stem}/{where.row}"
    if images:
        record["image"] = ["image.jpg"] * len(images)
    if row.get("extra"):
        try:
            extra = json.loads(row["extra"])
        except ValueError as e:
            raise where.error("extra", f"not JSON ({e})") from None
        if not isinstance(extra, dict):
            raise where.error("extra", f"must be a JSON object, not a JSON {json_type(extra)}")
        record.update({k: v for k, v in extra.items() if k not in record})
    sample = record_to_sample(record, where.path, where.row)
    sample.image = _images(images)
    return sample


def cauldron_sample(row: dict, where: RowContext) -> Sample:
    """the_cauldron / FineVision: ``texts`` are question-answer pairs, without image tags."""
    images = [where.image(cell, f"images[{k}]") for k, cell in enumerate(row.get("images") or [])]
    texts = row.get("texts")
    if not isinstance(texts, list) or not texts:
        raise where.error("texts", "must be a non-empty list of {user, assistant} pairs")
    turns, sources = [], []
    for k, pair in enumerate(texts):
        if not isinstance(pair, dict) or not isinstance(pair.get("user"), str) \
                or not isinstance(pair.get("assistant"), str):
            raise where.error(f"texts[{k}]", "must hold a user and an assistant text")
        turns += [Turn("human", pair["user"]), Turn("gpt", pair["assistant"])]
        sources.append(pair.get("source"))
    if images:
        turns[0].text = (IMAGE_TOKEN + "\n") * len(images) + turns[0].text
    extra = {k: v for k, v in row.items() if k not in ("images", "texts")}
    if any(s is not None for s in sources):
        extra["texts_source"] = sources[0] if len(set(sources)) == 1 else sources
    return Sample(f"{where.subset}/{where.path.stem}/{where.row}", _images(images), turns, extra)


def mantis_sample(row: dict, where: RowContext) -> Sample:
    """Mantis-Instruct: ``conversation`` of ``{role, content}``; images usually paths only."""
    images = [where.image(cell, f"images[{k}]") for k, cell in enumerate(row.get("images") or [])]
    conversation = row.get("conversation")
    if not isinstance(conversation, list):
        raise where.error("conversation", "must be a list of {role, content} turns")
    turns = []
    for k, turn in enumerate(conversation):
        role = _MANTIS_ROLES.get(turn.get("role")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("content"), str):
            raise where.error(f"conversation[{k}]", "a turn must have a role (user, assistant, system) and a text")
        turns.append({"from": role, "value": turn["content"]})
    record = {k: v for k, v in row.items() if k not in ("images", "conversation")}
    record["conversations"] = turns
    if record.get("id") is None:
        record["id"] = f"{where.subset}/{where.path.stem}/{where.row}"
    if images:
        record["image"] = ["image.jpg"] * len(images)
    sample = record_to_sample(record, where.path, where.row)
    sample.image = _images(images)
    return sample


def turns_of(value, column: str, where: RowContext) -> tuple[list[dict], bool]:
    """A named column's turns as LLaVA's ``{from, value}``, and whether they came as
    ``{user, assistant}`` pairs (which carry no image tags)."""
    if not isinstance(value, list) or not value:
        raise where.error(column, "must be a non-empty list of turns ({from, value}, {role, content} or "
                                  "{user, assistant})")
    turns, pairs = [], False
    for k, turn in enumerate(value):
        turn = turn if isinstance(turn, dict) else {}
        if isinstance(turn.get("user"), str) and isinstance(turn.get("assistant"), str):
            turns += [{"from": "human", "value": turn["user"]}, {"from": "gpt", "value": turn["assistant"]}]
            pairs = True
            continue
        role = _MANTIS_ROLES.get(turn.get("from", turn.get("role")))
        text = turn.get("value", turn.get("content"))
        if role is None or not isinstance(text, str):
            raise where.error(f"{column}[{k}]", "a turn must be {from, value} or {role, content} (roles user, "
                                                "assistant, system, human, gpt; the text a string) or "
                                                "{user, assistant}")
        turns.append({"from": role, "value": text})
    return turns, pairs


def mapped_sample(row: dict, where: RowContext, columns: dict) -> Sample:
    """A row of a schema curate does not know, read through the columns the user named."""
    cell = row.get(columns["image"]) if columns["image"] else None
    cells = cell if isinstance(cell, list) else [] if cell is None else [cell]
    images = [where.image(one, f"{columns['image']}[{k}]" if isinstance(cell, list) else columns["image"])
              for k, one in enumerate(cells)]
    turns, pairs = turns_of(row.get(columns["turns"]), columns["turns"], where)
    if pairs and images:
        turns[0]["value"] = (IMAGE_TOKEN + "\n") * len(images) + turns[0]["value"]
    record = {k: v for k, v in row.items() if k not in columns.values()}
    record_id = row.get(columns["id"]) if columns["id"] else None
    record["id"] = record_id if record_id is not None else f"{where.subset}/{where.path.stem}/{where.row}"
    record["conversations"] = turns
    if images:
        record["image"] = ["image.jpg"] * len(images)
    sample = record_to_sample(record, where.path, where.row)
    sample.image = _images(images)
    return sample


SCHEMAS = {"onevision": onevision_sample, "cauldron": cauldron_sample, "mantis": mantis_sample,
           "curate": curate_sample}


def subset_of(path: Path) -> str:
    """The subset a shard belongs to: its folder (``the_cauldron/ai2d/train-0.parquet``: ai2d),
    skipping the ``data`` folder that ``datasets`` writes shards into."""
    folder = path.resolve().parent
    if folder.name == "data" and folder.parent.name:
        folder = folder.parent
    return group_name(folder.name)


class HfParquetReader(Reader):
    name = "hf-parquet"
    description = ("Hugging Face Parquet, images embedded (LLaVA-OneVision, the_cauldron, FineVision, Mantis, "
                   "curate's own); a file, a folder of shards or a glob")
    holds_images = True
    settings = MAPPING

    def sniff(self, path: Path, head: str) -> int:
        return 20 if head.startswith(PARQUET_MAGIC) else 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        import pyarrow as pa
        path = Path(path)
        parquet = open_parquet(path)
        columns = mapping_of(parquet.schema_arrow.names, path, options)
        schema = "mapped" if columns else schema_of(parquet.schema_arrow.names, path)
        to_sample = SCHEMAS[schema] if columns is None else lambda row, where: mapped_sample(row, where, columns)
        if schema == "mantis" and options.image_root is None:
            options.state.setdefault("notes", {})["hf-parquet mantis"] = (
                f"{path.name}: Mantis rows name their images (no bytes); pass {setting('image_root')} with the "
                "subset's folder or its train_images.zip to read them")
        subset = subset_of(path)
        metadata = parquet.metadata
        row = 0
        for group in range(metadata.num_row_groups):
            info = metadata.row_group(group)
            if info.total_byte_size > MAX_ROW_GROUP_BYTES:
                raise CurateError(f"{path}: row group {group} holds {info.total_byte_size / 2**30:.1f} GB uncompressed "
                                  f"(at most {MAX_ROW_GROUP_BYTES / 2**30:.0f} GB, read whole); rewrite the file with "
                                  "smaller row groups (pyarrow's row_group_size)")
            try:
                batches = parquet.iter_batches(batch_size=ROWS_PER_BATCH, row_groups=[group])
                for batch in batches:
                    for record in batch.to_pylist():
                        where = RowContext(path, subset, row, record.get(columns["id"] if columns else "id"))
                        row += 1
                        try:
                            yield to_sample(record, where)
                        except RecordError as error:
                            options.reject(error, _without_bytes(record))
            except (pa.ArrowException, OSError) as e:
                raise CurateError(f"{path}: row group {group} cannot be read ({' '.join(str(e).split())[:200]})") \
                    from None
            if options.progress:
                options.progress(sum(info.column(c).total_compressed_size for c in range(info.num_columns)))


# --- writing ------------------------------------------------------------------------------------

ROWS_PER_GROUP = 256                 # rows per row group (``datasets`` writes 100 for images)
GROUP_BYTES = 64 << 20               # ... or fewer, when their images pass this many bytes
SHARD_MB = Setting("shard_size_mb", int, 500, minimum=1, maximum=1 << 20,
                   help="hf-parquet and webdataset writers: start a new shard once one holds this many megabytes.")
_STRING = {"dtype": "string", "_type": "Value"}
# What ``datasets`` reads from the schema's metadata: which columns are images, decoded on access.
FEATURES = {"id": _STRING, "images": {"feature": {"_type": "Image"}, "_type": "Sequence"},
            "conversations": [{"from": _STRING, "value": _STRING}], "extra": _STRING}


def parquet_schema():
    import pyarrow as pa
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    schema = pa.schema([("id", pa.string()), ("images", pa.list_(image)), ("conversations", pa.list_(turn)),
                        ("extra", pa.string())])
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": FEATURES}})})


class Shards:
    """Parquet shards ``data/train-NNNNN.parquet`` under the output folder, each closed once it
    holds ``max_bytes``; every file opened through the run's outputs (atomic, all or nothing)."""

    def __init__(self, options: Options, max_bytes: int):
        self.folder = Path(options.folder) / "data"
        self.outputs, self.max_bytes = options.outputs, max_bytes
        self.schema = parquet_schema()
        self.paths: list[Path] = []
        self.writer, self.stream, self.size = None, None, 0

    def add(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        if self.writer is None:
            path = self.folder / f"train-{len(self.paths):05d}.parquet"
            self.stream = self.outputs.open(self.outputs.claim(path, "shard"), "wb")
            self.writer = pq.ParquetWriter(self.stream, self.schema, compression="zstd")
            self.paths.append(path)
            self.size = 0
        if not rows:                  # an empty dataset: the schema, no row group (datasets refuses an empty one)
            return
        table = pa.Table.from_pylist(rows, schema=self.schema)
        self.writer.write_table(table, row_group_size=len(rows))
        self.size += table.nbytes
        if self.size >= self.max_bytes:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def drop_stale(self) -> None:
        """Shards of an earlier run that this one did not rewrite go at commit (a dataset must not
        mix two runs' shards)."""
        written = {p.name for p in self.paths}
        for old in sorted(self.folder.glob("train-*.parquet")) if self.folder.is_dir() else []:
            if old.name not in written:
                self.outputs.claim(old, "stale shard")
                self.outputs.discard_at_commit(old)


def dataset_card(written: int, sources: dict, shards: int, images: int) -> str:
    """README.md: the configuration ``datasets`` and the Hub read, and what the dataset holds."""
    rows = "\n".join(f"| {source} | {count:,} |" for source, count in sorted(sources.items(), key=lambda kv: -kv[1]))
    return (f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
            f"---\n\n# Dataset written by curate\n\n{written:,} samples, {images:,} images (embedded as Hugging Face "
            f"`Image`), in {shards} Parquet shard{'s' if shards != 1 else ''}.\n\n"
            "Columns: `id`, `images` (list of `Image`), `conversations` (LLaVA's `{from, value}` turns, one "
            "`<image>` per image), `extra` (the records' other fields, as JSON).\n\n"
            "Load it with `datasets.load_dataset(\"parquet\", data_dir=\"data\")`, or `load_dataset(\"PATH\")`.\n\n"
            f"| source | samples |\n|---|---|\n{rows}\n")


class HfParquetWriter(Writer):
    name = "hf-parquet"
    description = "Hugging Face Parquet dataset (a folder: data/train-*.parquet, images embedded, README.md card)"
    embeds_images = True
    writes_folder = True
    settings = (SHARD_MB,)

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        shards = Shards(options, options.setting("shard_size_mb") * (1 << 20))
        try:
            return self._write(samples, stream, options, shards)
        finally:
            shards.close()        # also when the run fails: the file is closed before the run removes it

    def _write(self, samples, stream, options: Options, shards: Shards) -> int:
        locator = ImageLocator(options.image_root)
        rows, size, written, images = [], 0, 0, 0
        sources: Counter = Counter()
        for sample in samples:
            try:
                row = self.row(sample, locator)
            except UnreadableImage as e:
                options.reject(RecordError(options.path, f"the image cannot be embedded: {e}", record_id=sample.id,
                                           field="image"), sample.as_record())
                continue
            rows.append(row)
            size += sum(len(cell["bytes"]) for cell in row["images"])
            written += 1
            images += len(row["images"])
            sources[sample.source] += 1
            if len(rows) >= ROWS_PER_GROUP or size >= GROUP_BYTES:
                shards.add(rows)
                rows, size = [], 0
        if rows or not shards.paths:
            shards.add(rows)
        shards.close()
        shards.drop_stale()
        stream.write(dataset_card(written, dict(sources), len(shards.paths), images))
        return written

    @staticmethod
    def row(sample: Sample, locator) -> dict:
        cells = []
        for image in sample.images:
            cells.append({"bytes": locator.read_bytes(image), "path": getattr(image, "name", None) or str(image)})
        turns = [{"from": turn.role, "value": turn.text} for turn in sample.conversations]
        return {"id": None if sample.id is None else sample.id if isinstance(sample.id, str) else json.dumps(sample.id),
                "images": cells, "conversations": turns,
                "extra": json.dumps(sample.extra, ensure_ascii=False) if sample.extra else None}


@curate.hookimpl
def register_readers(register):
    register(HfParquetReader)


@curate.hookimpl
def register_writers(register):
    register(HfParquetWriter)
