"""LLaMA-Factory's ShareGPT-style multimodal data:
``{"messages": [{"role": "user"|"assistant"|"system", "content": "<image>..."}], "images": [...]}``,
one ``<image>`` token per entry of ``images`` (and ``videos``, one ``<video>`` each, on records
that hold videos). curate also writes ``id`` (and any other key of
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
from curate.media import LLAMA_FACTORY, checked
from curate.records import json_type, unsafe_image_path, write_records
from curate.sample import IMAGE_TOKEN, VIDEO_TOKEN, Sample, Turn
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
    images, videos = record.get("images", []), record.get("videos")
    for key, paths in (("images", images), ("videos", videos or [])):
        if not isinstance(paths, list) or not all(isinstance(i, str) and i for i in paths):
            raise bad(key, "must be a list of path strings")
        for path_text in paths:
            problem = unsafe_image_path(path_text)
            if problem:
                raise bad(key, problem)
    turns = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in TO_ROLE \
                or not isinstance(message.get("content"), str):
            raise bad(f"messages[{k}]", "needs role user|assistant|system and a string content")
        extra = {key: v for key, v in message.items() if key not in ("role", "content")} or None
        turns.append(Turn(TO_ROLE[message["role"]], message["content"], extra))
    for tag, paths, what in ((IMAGE_TOKEN, images, "images"), (VIDEO_TOKEN, videos or [], "videos")):
        tokens = sum(t.text.count(tag) for t in turns)
        if tokens != len(paths):
            raise bad("messages", f"{tokens} {tag} tokens for {len(paths)} {what}")
    image = None if not images else images[0] if len(images) == 1 else list(images)
    video = None if not videos else videos[0] if len(videos) == 1 else list(videos)
    extra = {k: v for k, v in record.items() if k not in ("id", "messages", "images", "videos")}
    if "id" not in record:
        extra["_generated_id"] = True
    if "videos" in record and not videos:
        extra["videos"] = record["videos"]        # an empty list (or null) survives the round trip
    return Sample(record_id, image, turns, extra, video)


def sample_to_record(sample: Sample) -> dict:
    record = {} if sample.extra.get("_generated_id") or sample.id is None else {"id": sample.id}
    record["messages"] = [dict({"role": FROM_ROLE[t.role], "content": t.text}, **(t.extra or {}))
                          for t in sample.conversations]
    record["images"] = sample.images
    if sample.video is not None:
        record["videos"] = sample.videos
    for key, value in sample.extra.items():
        if key != "_generated_id":
            record.setdefault(key, value)
    return record


class LlamaFactoryReader(Reader):
    name = "llama-factory"
    description = "LLaMA-Factory ShareGPT-style multimodal JSON (messages + images, videos)"

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
    media_rule = LLAMA_FACTORY
    settings = (
        DATASET_NAME,
        Setting("dataset_info", default="merge", choices=DATASET_INFO_MODES,
                help="llama-factory writer: the dataset_info.json beside the output: merge this dataset's entry "
                     "into it (creates it when absent), overwrite it with only this entry (needs --overwrite when "
                     "it exists), or none."),
    )

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        def records():
            for sample in checked(samples, self.media_rule, options):
                if sample.video is not None:
                    options.state["videos written"] = True      # the sidecar then maps the column
                yield sample_to_record(sample)
        return write_records(records(), stream, options.path)

    def sidecars(self, output: Path, options: Options) -> list[Sidecar]:
        mode = options.setting("dataset_info")
        if mode == "none":
            return []
        path = Path(output).parent / "dataset_info.json"
        name = dataset_name(output, options)

        def render(written: int, existing: str | None) -> str:
            entry = dataset_info_entry(Path(output).name, options.state.get("videos written", False))
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


def dataset_info_entry(file_name: str, videos: bool = False) -> dict:
    """LLaMA-Factory's description of a multimodal ShareGPT file with OpenAI-style roles
    (its data/README.md; the tags say which keys and values mean role and content). ``videos``
    maps the column of the same name, for a file where some record holds videos."""
    columns = {"messages": "messages", "images": "images", **({"videos": "videos"} if videos else {})}
    return {"file_name": file_name, "formatting": "sharegpt", "columns": columns,
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant", "system_tag": "system"}}


@curate.hookimpl
def register_readers(register):
    register(LlamaFactoryReader)


@curate.hookimpl
def register_writers(register):
    register(LlamaFactoryWriter)
