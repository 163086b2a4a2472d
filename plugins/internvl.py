"""InternVL chat data: JSON Lines of LLaVA-shaped records whose grounding is written
``<ref>object</ref><box>[[x1, y1, x2, y2]]</box>`` in integers of [0, 1000) of the original image."""

from __future__ import annotations

import curate
from curate.boxes import INTERNVL
from curate.plugins.llava import LlavaReader, LlavaWriter


class InternVLReader(LlavaReader):
    name = "internvl"
    description = "InternVL chat JSONL (grounding <ref>..</ref><box>[[...]]</box> in [0, 1000))"
    box_style = INTERNVL

    def sniff(self, path, head):
        score = super().sniff(path, head)
        return score + 5 if score and "<box>[[" in head else 0


class InternVLWriter(LlavaWriter):
    name = "internvl"
    description = "InternVL chat JSONL (.jsonl; boxes as <box>[[...]]</box> in [0, 1000))"
    box_style = INTERNVL


@curate.hookimpl
def register_readers(register):
    register(InternVLReader)


@curate.hookimpl
def register_writers(register):
    register(InternVLWriter)
