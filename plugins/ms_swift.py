"""ms-swift's standard dataset format (its docs, Customization/Custom-dataset.md):
``{"messages": [{"role", "content"}], "images": [...]}`` with one ``<image>`` per image, and
grounding in ms-swift's own model-independent form: the text holds ``<ref-object>`` and
``<bbox>`` placeholders, the record's ``objects`` holds ``ref`` (the objects, in order),
``bbox`` (the boxes, in order) and ``bbox_type``. Boxes are written normalised to [0, 1] of
the original image (``norm1``), so no image size is needed and ms-swift rescales them for
whichever model it trains; ``--boxes pixels`` writes pixels of the original image (``real``),
the only other meaning ``bbox_type`` has. ms-swift pairs each placeholder with the next value,
so a record whose placeholders and objects do not match in number is refused."""

from __future__ import annotations

from typing import Iterable, TextIO

import curate
from curate.boxes import BoxStyle
from curate.errors import RecordError
from curate.formats import Options
from curate.media import MS_SWIFT
from curate.plugins.llama_factory import LlamaFactoryWriter
from curate.sample import Sample


def placeholder_mismatch(sample: Sample) -> str | None:
    """Why ms-swift could not pair the sample's placeholders with its objects, or None."""
    objects = sample.extra.get("objects") or {}
    if not isinstance(objects, dict):
        return "objects must be an object with ref and bbox lists"
    for placeholder, key in (("<ref-object>", "ref"), ("<bbox>", "bbox")):
        values = objects.get(key) or []
        found = sum(turn.text.count(placeholder) for turn in sample.conversations)
        if not isinstance(values, list) or found != len(values):
            count = len(values) if isinstance(values, list) else "not a list of"
            return f"{found} {placeholder} placeholders in the text for {count} objects.{key} values"
    return None


class MsSwiftWriter(LlamaFactoryWriter):
    name = "ms-swift"
    description = "ms-swift messages + images, videos (.jsonl or .json), grounding as objects with <ref-object>/<bbox>"
    box_style = BoxStyle("original", "swift")
    media_rule = MS_SWIFT            # "videos" as LLaMA-Factory's; missing tags are added by ms-swift
    settings = ()

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        return super().write(self._paired(samples, options), stream, options)

    @staticmethod
    def _paired(samples: Iterable[Sample], options: Options) -> Iterable[Sample]:
        for sample in samples:
            problem = placeholder_mismatch(sample)
            if problem is None:
                yield sample
            else:
                options.reject(RecordError(options.path, problem, record_id=sample.id, field="objects"), None)

    def sidecars(self, output, options):
        return []          # ms-swift takes the file itself: --dataset OUTPUT


@curate.hookimpl
def register_writers(register):
    register(MsSwiftWriter)
