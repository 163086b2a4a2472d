"""ms-swift's standard dataset format (its docs, Customization/Custom-dataset.md):
``{"messages": [{"role", "content"}], "images": [...]}`` with one ``<image>`` per image, and
grounding in ms-swift's own model-independent form: the text holds ``<ref-object>`` and
``<bbox>`` placeholders, the record's ``objects`` holds ``ref`` (the objects, in order),
``bbox`` (the boxes, in order) and ``bbox_type``. Boxes are written normalised to [0, 1] of
the original image (``norm1``), so no image size is needed and ms-swift rescales them for
whichever model it trains."""

from __future__ import annotations

import curate
from curate.boxes import BoxStyle
from curate.plugins.llama_factory import LlamaFactoryWriter


class MsSwiftWriter(LlamaFactoryWriter):
    name = "ms-swift"
    description = "ms-swift messages + images (.jsonl or .json), grounding as objects with <ref-object>/<bbox>"
    box_style = BoxStyle("original", "swift")
    cli_options = []

    def sidecars(self, output, options):
        return []          # ms-swift takes the file itself: --dataset OUTPUT


@curate.hookimpl
def register_writers(register):
    register(MsSwiftWriter)
