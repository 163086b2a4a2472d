"""InternVL chat data: JSON Lines of LLaVA-shaped records whose grounding is written
``<ref>object</ref><box>[[x1, y1, x2, y2]]</box>`` in integers of [0, 1000) of the original image
(``<ref>`` where the source marks the referring expression, as SVIT does).

InternVL's loader reads only ``.jsonl``, and training takes a meta JSON naming each dataset's
image root, annotation file and length: it is written beside the output."""

from __future__ import annotations

import json
from pathlib import Path


import curate
from curate.boxes import INTERNVL
from curate.media import INTERNVL as INTERNVL_MEDIA
from curate.contracts import Sidecar
from curate.plugins.llama_factory import DATASET_NAME, dataset_name
from curate.plugins.llava import LlavaReader, LlavaWriter
from curate.settings import Setting


class InternVLReader(LlavaReader):
    name = "internvl"
    description = "InternVL chat JSONL (grounding <ref>..</ref><box>[[...]]</box> in [0, 1000))"
    box_style = INTERNVL

    def sniff(self, path, head):
        score = super().sniff(path, head)
        return score + 5 if score and "<box>[[" in head else 0


class InternVLWriter(LlavaWriter):
    name = "internvl"
    description = "InternVL chat JSONL (.jsonl only; <ref>..</ref><box>[[...]]</box> in [0, 1000)), with its meta JSON"
    box_style = INTERNVL
    media_rule = INTERNVL_MEDIA
    suffixes = (".jsonl",)
    jsonl_note = None
    settings = (
        DATASET_NAME,
        Setting("internvl_meta", help="internvl writer: where to write InternVL's meta JSON for this dataset "
                                      "(default: OUTPUT's name with .meta.json; 'none' to skip)."),
    )

    def sidecars(self, output, options):
        where = options.setting("internvl_meta")
        if where == "none":
            return []
        output = Path(output)
        path = Path(where) if where else output.with_name(output.name.removesuffix(".jsonl") + ".meta.json")
        name = dataset_name(output, options)
        root = str(Path(options.image_root).absolute()) + "/" if options.image_root else ""

        def render(written: int, existing: str | None) -> str:
            # InternVL's meta format (its internvl_chat/shell/data/*.json): per dataset, the image
            # root, the annotation file, augmentation, how often to repeat it, and its length
            entry = {"root": root, "annotation": str(output.absolute()), "data_augment": False,
                     "repeat_time": 1, "length": written}
            return json.dumps({name: entry}, indent=2, ensure_ascii=False) + "\n"

        return [Sidecar(path, "InternVL meta JSON", render)]


@curate.hookimpl
def register_readers(register):
    register(InternVLReader)


@curate.hookimpl
def register_writers(register):
    register(InternVLWriter)
