"""Bounding boxes and what their numbers mean.

Formats disagree (LLaVA issues #606, #623, #822 are users lost in exactly this):

- ``original``: [x1, y1, x2, y2] in [0, 1], normalised by the original width and height (SVIT).
- ``padded``: the same after padding the image to a square, centred (LLaVA-1.5, SVIT's LLaVA release).
- ``thousand``: integers in [0, 1000) of the original image (InternVL).
- ``pixels``: absolute pixels of the original image (Qwen2.5-VL).

Readers and writers declare a :class:`BoxStyle` (a convention plus how boxes are written in
text); ``convert`` rewrites boxes when the two differ, with image sizes from file headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CurateError

CONVENTIONS = ("original", "padded", "thousand", "pixels")
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?"
_BRACKET_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_INTERNVL_BOX = re.compile(r"<box>\s*\[(\s*\[[^\[\]]*\]\s*(?:,\s*\[[^\[\]]*\]\s*)*)\]\s*</box>")
_REF = re.compile(r"<ref>(.*?)</ref>", re.S)
_SEPARATOR = re.compile(r"\s*,\s*")

Box = tuple[float, float, float, float]


# --- the SVIT / LLaVA-1.5 square padding recipe -------------------------------------------------

def pad_box(box, width: int, height: int) -> list[float]:
    """Original-normalised box to the square-padded image, exactly as SVIT's release does it."""
    x1, y1, x2, y2 = (round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height))
    side = max(width, height)
    shift = (side - min(width, height)) // 2
    if width > height:
        y1, y2 = y1 + shift, y2 + shift
    elif height > width:
        x1, x2 = x1 + shift, x2 + shift
    return [round(v / side, 3) for v in (x1, y1, x2, y2)]


def unpad_box(box, width: int, height: int) -> list[float]:
    """The inverse of :func:`pad_box` (within its rounding)."""
    side = max(width, height)
    shift = (side - min(width, height)) // 2
    x1, y1, x2, y2 = (v * side for v in box)
    if width > height:
        y1, y2 = y1 - shift, y2 - shift
    elif height > width:
        x1, x2 = x1 - shift, x2 - shift
    return [round(min(1.0, max(0.0, v)), 3) for v in (x1 / width, y1 / height, x2 / width, y2 / height)]


def needs_size(source: str, target: str) -> bool:
    return source != target and ({source, target} - {"original", "thousand"}) != set()


def convert_box(box, source: str, target: str, size: tuple[int, int] | None) -> list:
    """A box from one convention to another (through ``original``)."""
    if source == target:
        return list(box)
    if source == "original" and target == "padded":      # SVIT -> LLaVA, the common case
        return pad_box(box, *size)
    width, height = size if size else (None, None)
    if source == "original":
        original = [float(v) for v in box]
    elif source == "padded":
        original = unpad_box(box, width, height)
    elif source == "thousand":
        original = [v / 1000 for v in box]
    elif source == "pixels":
        original = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
    else:
        raise CurateError(f"unknown box convention {source!r}")
    if target == "original":
        return [round(v, 3) for v in original]
    if target == "padded":
        return pad_box(original, width, height)
    if target == "thousand":
        return [min(999, max(0, int(round(v * 1000)))) for v in original]
    if target == "pixels":
        return [round(original[0] * width), round(original[1] * height), round(original[2] * width),
                round(original[3] * height)]
    raise CurateError(f"unknown box convention {target!r}")


def format_number(value) -> str:
    """Python's default formatting (0.5, not 0.500), integers without a point."""
    return str(value) if type(value) is int else repr(float(value))


# --- how boxes are written in text --------------------------------------------------------------

@dataclass(frozen=True)
class BoxStyle:
    """A box convention and its text syntax: ``bracket`` ``[x1, y1, x2, y2]`` or ``internvl``
    ``<box>[[x1, y1, x2, y2]]</box>`` (with ``<ref>..</ref>`` around the object)."""

    convention: str
    syntax: str = "bracket"

    def find(self, text: str):
        """(start, end, [boxes]) for each box group in the text."""
        if self.syntax == "internvl":
            for m in _INTERNVL_BOX.finditer(text):
                boxes = [[float(v) for v in b.split(",")] for b in re.findall(r"\[([^\[\]]*)\]", m.group(1))]
                if all(len(b) == 4 for b in boxes):
                    yield m.start(), m.end(), boxes
            return
        group = None   # boxes written one after another ("[..], [..]") form one group
        for m in _BRACKET_BOX.finditer(text):
            values = [float(v) for v in m.groups()]
            if self.convention in ("original", "padded") and not all(0.0 <= v <= 1.0 for v in values):
                continue  # four numbers that are not a normalised box
            if group and _SEPARATOR.fullmatch(text, group[1], m.start()):
                group = (group[0], m.end(), group[2] + [values])
                continue
            if group:
                yield group
            group = (m.start(), m.end(), [values])
        if group:
            yield group

    def render(self, boxes: list[list]) -> str:
        inner = ", ".join("[" + ", ".join(map(format_number, b)) + "]" for b in boxes)
        return f"<box>[{inner}]</box>" if self.syntax == "internvl" else inner

    def strip_markup(self, text: str) -> str:
        return _REF.sub(r"\1", text) if self.syntax == "internvl" else text

    def add_markup(self, text: str) -> str:
        return text


BRACKET_PADDED = BoxStyle("padded")
BRACKET_ORIGINAL = BoxStyle("original")
INTERNVL = BoxStyle("thousand", "internvl")


def rewrite_boxes(text: str, source: BoxStyle, target: BoxStyle, size: Callable[[], tuple[int, int]]) -> tuple[str, int]:
    """Rewrite every box of ``text`` from one style to another; returns (text, boxes rewritten)."""
    pieces, last, count = [], 0, 0
    for start, end, boxes in list(source.find(text)):
        dims = size() if needs_size(source.convention, target.convention) else None
        converted = [convert_box(b, source.convention, target.convention, dims) for b in boxes]
        pieces.append(text[last:start])
        if source.syntax != target.syntax and target.syntax == "bracket" and start and not text[start - 1].isspace():
            pieces.append(" ")   # "<ref>dog</ref><box>..." becomes "dog [...]"
        pieces.append(target.render(converted))
        last = end
        count += len(boxes)
    if not count:
        return source.strip_markup(text) if source.syntax != target.syntax else text, 0
    pieces.append(text[last:])
    out = "".join(pieces)
    return (source.strip_markup(out) if source.syntax != target.syntax else out), count


def style_for(convention: str, like: BoxStyle) -> BoxStyle:
    """``like`` with another convention (for --boxes)."""
    if convention not in CONVENTIONS:
        raise CurateError(f"--boxes must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    return BoxStyle(convention, like.syntax)


class BoxRewriter:
    """Rewrites the boxes of each sample from the reader's style to the writer's, if they differ."""

    def __init__(self, source: BoxStyle | None, target: BoxStyle | None, locator):
        self.source, self.target, self.locator = source, target, locator
        self.active = source is not None and target is not None and source != target
        self.boxes = 0
        self.images: set[str] = set()

    def apply(self, sample, path):
        from .errors import RecordError
        from .images import UnreadableImage
        if not self.active:
            return sample

        def size():
            images = sample.images
            if not images:
                raise RecordError(path, "the text has boxes but the record has no image", record_id=sample.id,
                                  field="image")
            try:
                dims = self.locator.size(images[0])
            except UnreadableImage as e:
                hint = " (pass --image-root)" if self.locator.root is None else ""
                raise RecordError(path, f"image {images[0]!r}: {e}; its size is needed to convert boxes from "
                                        f"{self.source.convention} to {self.target.convention}{hint}",
                                  record_id=sample.id, field="image") from None
            self.images.add(images[0])
            return dims

        for turn in sample.conversations:
            turn.text, count = rewrite_boxes(turn.text, self.source, self.target, size)
            self.boxes += count
        return sample

    def note(self) -> str | None:
        if not self.active:
            return None
        what = (f"{self.source.convention} ({self.source.syntax}) to {self.target.convention} "
                f"({self.target.syntax})")
        if not self.boxes:
            return f"boxes would be converted from {what}; none were found"
        sizes = f", with the sizes of {len(self.images):,} images read from their headers" if self.images else ""
        return f"converted {self.boxes:,} boxes from {what}{sizes}"
