"""LLaMA-Factory's ShareGPT-style multimodal data:
``{"messages": [{"role": "user"|"assistant"|"system", "content": "<image>..."}], "images": [...]}``,
one ``<image>`` token per entry of ``images``. curate also writes ``id`` (and any other key of
the sample), which LLaMA-Factory ignores, so that a round trip loses nothing.

Beside the output goes the ``dataset_info.json`` entry LLaMA-Factory needs to load it
(``formatting: sharegpt``, its columns and its role/content tags: without ``tags`` its
loader looks for ShareGPT's ``from`` and fails), merged into the file when one is there."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, TextIO


import curate
from curate.contracts import Sidecar
from curate.errors import CurateError, RecordError, setting
from curate.jsonstream import strict_decoder, with_member
from curate.formats import Options, Reader, Writer, head_has_keys, samples_from_json
from curate.records import json_type, unsafe_image_path, write_records
from curate.sample import IMAGE_TOKEN, Sample, Turn
from curate.settings import Setting

TO_ROLE = {"user": "human", "assistant": "gpt", "system": "system"}
FROM_ROLE = {v: k for k, v in TO_ROLE.items()}


def record_to_sample(record, path: Path, index: int) -> Sample:
    if not isinstance(record, dict):
        raise RecordError(path, f"the record is a JSON {json_type(record)}, not an object", index=index)
    record_id = record.get("id", f"{path.stem}_{index}")

    def bad(field, reason):
        return RecordError(path, reason, index=index, record_id=record_id, field=field)

    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "missing or empty")
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise bad("images", "must be a list of path strings")
    for image_path in images:
        problem = unsafe_image_path(image_path)
        if problem:
            raise bad("images", problem)
    turns = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in TO_ROLE \
                or not isinstance(message.get("content"), str):
            raise bad(f"messages[{k}]", "needs role user|assistant|system and a string content")
        extra = {key: v for key, v in message.items() if key not in ("role", "content")} or None
        turns.append(Turn(TO_ROLE[message["role"]], message["content"], extra))
    tokens = sum(t.text.count(IMAGE_TOKEN) for t in turns)
    if tokens != len(images):
        raise bad("messages", f"{tokens} {IMAGE_TOKEN} tokens for {len(images)} images")
    image = None if not images else images[0] if len(images) == 1 else list(images)
    extra = {k: v for k, v in record.items() if k not in ("id", "messages", "images")}
    if "id" not in record:
        extra["_generated_id"] = True
    return Sample(record_id, image, turns, extra)


def sample_to_record(sample: Sample, options: Options, index: int) -> dict | None:
    images = sample.images
    tokens = sum(t.text.count(IMAGE_TOKEN) for t in sample.conversations)
    if tokens != len(images):
        options.reject(RecordError(options.path, f"{tokens} {IMAGE_TOKEN} tokens for {len(images)} images: "
                                                 "LLaMA-Factory needs one per image", index=index,
                                   record_id=sample.id, field="conversations"), None)
        return None
    record = {} if sample.extra.get("_generated_id") or sample.id is None else {"id": sample.id}
    record["messages"] = [dict({"role": FROM_ROLE[t.role], "content": t.text}, **(t.extra or {}))
                          for t in sample.conversations]
    record["images"] = images
    for key, value in sample.extra.items():
        if key != "_generated_id":
            record.setdefault(key, value)
    return record


class LlamaFactoryReader(Reader):
    name = "llama-factory"
    description = "LLaMA-Factory ShareGPT-style multimodal JSON (messages + images)"

    def sniff(self, path: Path, head: str) -> int:
        return 15 if head_has_keys(head, "messages", "role", "content") else 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        return samples_from_json(Path(path), options, record_to_sample)


DATASET_NAME = Setting("dataset_name", help="writers with a sidecar file (llama-factory, internvl): the dataset's "
                                           "name in it (default: the output file's name without its extension).")
DATASET_INFO_MODES = ("merge", "overwrite", "none")


def dataset_name(output: Path, options: Options) -> str:
    name = options.setting("dataset_name") or Path(output).name.split(".")[0]
    if not name:
        raise CurateError(f"{setting('dataset_name')}: the dataset needs a name")
    return name


class LlamaFactoryWriter(Writer):
    name = "llama-factory"
    description = "LLaMA-Factory ShareGPT-style multimodal JSON (.json array or .jsonl), with its dataset_info.json"
    loads_with_datasets = True       # LLaMA-Factory's loader: datasets.load_dataset("json", ...)
    settings = (
        DATASET_NAME,
        Setting("dataset_info", default="merge", choices=DATASET_INFO_MODES,
                help="llama-factory writer: the dataset_info.json beside the output: merge this dataset's entry "
                     "into it (creates it when absent), overwrite it with only this entry (needs --overwrite when "
                     "it exists), or none."),
    )

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        records = (sample_to_record(s, options, i) for i, s in enumerate(samples))
        return write_records((r for r in records if r is not None), stream, options.path)

    def sidecars(self, output: Path, options: Options) -> list[Sidecar]:
        mode = options.setting("dataset_info")
        if mode == "none":
            return []
        path = Path(output).parent / "dataset_info.json"
        entry = dataset_info_entry(Path(output).name)
        name = dataset_name(output, options)

        def render(written: int, existing: str | None) -> str:
            if existing is None:
                return with_member("{}\n", name, entry)
            try:
                info = strict_decoder()[0].decode(existing)
            except ValueError as e:
                raise CurateError(f"{path}: not valid JSON, so this dataset cannot be merged into it ({e}); "
                                  f"fix it or pass {setting('dataset_info')} overwrite {setting('overwrite')}") from None
            if not isinstance(info, dict):
                raise CurateError(f"{path}: holds a JSON {type(info).__name__}, not LLaMA-Factory's object of "
                                  "datasets")
            return with_member(existing, name, entry)

        return [Sidecar(path, "LLaMA-Factory dataset list", render, merge=mode == "merge")]


def dataset_info_entry(file_name: str) -> dict:
    """LLaMA-Factory's description of a multimodal ShareGPT file with OpenAI-style roles
    (its data/README.md; the tags say which keys and values mean role and content)."""
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}


@curate.hookimpl
def register_readers(register):
    register(LlamaFactoryReader)


@curate.hookimpl
def register_writers(register):
    register(LlamaFactoryWriter)
