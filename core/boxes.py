"""Bounding boxes and what their numbers mean.

Formats disagree (LLaVA issues #606, #623, #822 are users lost in exactly this):

- ``original``: [x1, y1, x2, y2] in [0, 1], normalised by the original width and height (SVIT).
- ``padded``: the same after padding the image to a square, centred (LLaVA-1.5, SVIT's LLaVA release).
- ``thousand``: integers in [0, 1000) of the original image (InternVL).
- ``pixels``: absolute pixels of the original image.
- ``smart-resize``: absolute pixels of the image after Qwen2.5-VL's processor resized it
  (``smart_resize``: sides multiples of 28, pixel count within min/max pixels), rounded and
  clamped as QwenLM's ``qwen-vl-finetune/tools/process_bbox.ipynb`` does.
- ``qwen-1000``: integers in [0, 1000] of the original image, as Qwen2-VL and Qwen3-VL
  expect (the same notebook: ``round(x / w * 1000)``, clamped to [0, 1000]).

Readers and writers declare a :class:`BoxStyle` (a convention plus how boxes are written in
text, with the referring expression they belong to where the syntax marks one); ``convert``
rewrites boxes when the two differ, with image sizes from file headers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CurateError, RecordError, setting
from .images import UnreadableImage

CONVENTIONS = ("original", "padded", "thousand", "pixels", "smart-resize", "qwen-1000")
# Qwen2.5-VL's smart_resize (factor, min and max pixels): the processor's own defaults, as QwenLM's
# process_bbox.ipynb uses them, and what qwen-vl-finetune trains with unless told (its DataArguments:
# min_pixels 28*28*16, max_pixels 28*28*576), the default here: boxes must match the training's images
QWEN25_RESIZE = (28, 56 * 56, 14 * 14 * 4 * 1280)
QWEN_FINETUNE_RESIZE = (28, 28 * 28 * 16, 28 * 28 * 576)
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_ONE_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")
_BRACKET_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_INSIDE = re.compile(r"\[([^\[\]]*)\]")                       # what one bracket holds
_INTERNVL_BOX = re.compile(r"<box>([^<]*)</box>")
_BOX_LIST = re.compile(r"\s*\[\s*(\[[^\[\]]*\](?:\s*,\s*\[[^\[\]]*\])*)\s*\]\s*")   # [[..], [..]]
_REF = re.compile(r"<ref>(.*?)</ref>", re.S)
_REF_BEFORE = re.compile(r"<ref>([^<]*)</ref>\s*$")          # a ref right before an InternVL box
_SVIT_REF = re.compile(r"<st>([^<]*)<ed>")
_SVIT_REF_BEFORE = re.compile(r"<st>([^<]*)<ed>(\s*)$")      # SVIT's "<st>object<ed> [box]"
_SVIT_MARKED = re.compile(r"<ed>((?:\s*,?\s*\[[^\[\]]*\])+)")  # the brackets SVIT marks as boxes
_SVIT_BRACKET_IN_REF = re.compile(r"<st>[^<]*\[")
_SVIT_MARKERS = re.compile(r"<st>|<ed>")
_QWEN_JSON = re.compile(r'\[?\{"bbox_2d":\s*\[[^\[\]]*\](?:,\s*"label":\s*"(?:[^"\\]|\\.)*")?\}'
                        r'(?:,\s*\{"bbox_2d":\s*\[[^\[\]]*\](?:,\s*"label":\s*"(?:[^"\\]|\\.)*")?\})*\]?')
_SEPARATOR = re.compile(r"\s*,\s*")
_BRACKET = re.compile(r"\[([^\[\]\0]*)\]")
_THOUSANDTHS = re.compile(r"\s*([01])(?:\.([0-9]{1,3}))?\s*")
_UNUSUAL_GAP = re.compile(r"\](?!, \[)\s*,\s*\[")     # boxes in a row not written "], ["
# the largest value of each convention (the smallest is 0)
TOP = {"original": 1, "padded": 1, "thousand": 1000, "qwen-1000": 1000, "pixels": math.inf, "smart-resize": math.inf}
# ms-swift's objects say what their boxes mean by bbox_type: norm1 ([0, 1] of the image) or real (pixels)
SWIFT_BBOX_TYPES = {"original": "norm1", "pixels": "real"}
SWIFT_PLACEHOLDERS = ("<ref-object>", "<bbox>")

Box = tuple[float, float, float, float]


# --- what a box is ------------------------------------------------------------------------------

class BoxError(CurateError):
    """Something written as a box that is not one (or would not be one once converted): the
    record that holds it is refused, with this reason."""


def shown(values) -> str:
    return "[" + ", ".join(v if isinstance(v, str) else format_number(v) for v in values) + "]"


def check_box(values: list, convention: str, written: str | None = None) -> list[float]:
    """``values`` as a box of ``convention``, or a BoxError saying why they are not one: four
    finite numbers within the convention's range, x1 < x2 and y1 < y2 (not inverted, not empty).
    ``written``: the box as the text writes it, for the message."""
    if len(values) != 4 or not all(type(v) in (int, float) for v in values):
        raise BoxError(f"malformed box {written or shown(map(str, values))}: expected four numbers")
    box = written or shown(values)
    if not all(math.isfinite(v) for v in values):
        raise BoxError(f"box {box} holds a number that is not finite")
    if not all(0 <= v <= TOP[convention] for v in values):
        where = f"[0, {TOP[convention]}]" if math.isfinite(TOP[convention]) else "[0, ∞)"
        raise BoxError(f"box {box} lies outside {where} ({convention})")
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        raise BoxError(f"box {box} has x1 > x2 or y1 > y2")
    if x1 == x2 or y1 == y2:
        raise BoxError(f"box {box} is empty (x1 = x2 or y1 = y2)")
    return values


def parse_box(inside: str, convention: str) -> list[float]:
    """What a bracket the syntax marks as a box holds (``x1, y1, x2, y2``), as a checked box."""
    parts = inside.split(",")
    written = f"[{inside.strip()}]"
    if len(parts) != 4 or not all(_ONE_NUMBER.fullmatch(p) for p in parts):
        raise BoxError(f"malformed box {written}: expected four numbers")
    return check_box([float(p) for p in parts], convention, written)


def is_box(values: list[float], convention: str) -> bool:
    """Whether four numbers in plain text (a bracket no syntax marks) mean a box: finite and
    within the convention's range. Such a box must then pass :func:`check_box` too."""
    return all(math.isfinite(v) and 0 <= v <= TOP[convention] for v in values)


def collapsed(box: list) -> bool:
    """Whether a converted box has no area: thinner than the target's resolution, it rounds to a
    line (a valid box one pixel high, padded and written with three decimals, as SVIT's release
    and LLaVA's own conversion write it). It is written so, never dropped, and counted in the
    run's note: the record is distinct training data, and the trainer's own rule gives this box."""
    return not (box[0] < box[2] and box[1] < box[3])


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
    """The inverse of :func:`pad_box` (within its rounding), clamped to the image."""
    return [round(min(1.0, max(0.0, v)), 3) for v in _unpadded(box, width, height)]


def _unpadded(box, width: int, height: int) -> list[float]:
    """A padded box normalised to the original image, unclamped: outside [0, 1] when it lies in
    the padding (a box written for another image, or sizes read from the wrong one)."""
    side = max(width, height)
    shift = (side - min(width, height)) // 2
    x1, y1, x2, y2 = (v * side for v in box)
    if width > height:
        y1, y2 = y1 - shift, y2 - shift
    elif height > width:
        x1, x2 = x1 - shift, x2 - shift
    return [x1 / width, y1 / height, x2 / width, y2 / height]


def _within_image(original: list[float], source: str, size: tuple[int, int], clamped: list | None) -> list[float]:
    """A box normalised to the original image, clamped to it. Conventions whose numbers depend
    on the image's size (padded, pixels, smart-resize) can point outside it when the box was
    written for another size: such a box is added to ``clamped`` when a corner lies out by more
    than the source's own rounding (a pixel, and the padded value's three decimals)."""
    inside = [min(1.0, max(0.0, v)) for v in original]
    if clamped is not None and inside != original:
        width, height = size
        slack = 1 + (0.0005 * max(width, height) if source == "padded" else 0)      # in pixels
        if any(abs(a - b) * d > slack for a, b, d in zip(original, inside, (width, height, width, height))):
            clamped.append(original)
    return inside


def needs_size(source: str, target: str) -> bool:
    return source != target and ({source, target} - {"original", "thousand", "qwen-1000"}) != set()


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2.5-VL's processor resize: (height, width) with sides multiples of ``factor`` and a
    pixel count within [min_pixels, max_pixels], the aspect ratio kept as well as that allows.
    As in transformers' ``image_processing_qwen2_vl.smart_resize``, shrinking never takes a
    side below one ``factor`` (the notebook's older copy could make it 0, and every box with it)."""
    if height < factor or width < factor:
        raise CurateError(f"the image ({width}x{height}) is smaller than Qwen's resize factor {factor}")
    if max(height, width) / min(height, width) > 200:
        raise CurateError(f"the image ({width}x{height}) is more than 200 times wider than high (Qwen's limit)")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def convert_box(box, source: str, target: str, size: tuple[int, int] | None, resize=QWEN_FINETUNE_RESIZE,
                clamped: list | None = None) -> list:
    """A box from one convention to another (through ``original``); ``resize`` is the
    (factor, min_pixels, max_pixels) of ``smart-resize``. A box that falls outside the image is
    clamped to it, and added to ``clamped`` (see :func:`_within_image`)."""
    if source == target:
        return list(box)
    if source == "original" and target == "padded":      # SVIT -> LLaVA, the common case
        return pad_box(box, *size)
    width, height = size if size else (None, None)
    if source == "original":
        original = [float(v) for v in box]
    elif source == "padded":
        original = [round(v, 3) for v in _within_image(_unpadded(box, width, height), source, size, clamped)]
    elif source in ("thousand", "qwen-1000"):
        original = [v / 1000 for v in box]
    elif source == "pixels":
        original = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
        original = _within_image(original, source, size, clamped)
    elif source == "smart-resize":
        new_height, new_width = smart_resize(height, width, *resize)
        original = [box[0] / new_width, box[1] / new_height, box[2] / new_width, box[3] / new_height]
        original = _within_image(original, source, (new_width, new_height), clamped)
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
    if target == "smart-resize":
        # QwenLM's process_bbox.ipynb, from pixels of the original image: scale, round, clamp
        new_height, new_width = smart_resize(height, width, *resize)
        scale = (new_width / width, new_height / height, new_width / width, new_height / height)
        limit = (new_width - 1, new_height - 1, new_width - 1, new_height - 1)
        pixels = (original[0] * width, original[1] * height, original[2] * width, original[3] * height)
        return [max(0, min(round(v * k), top)) for v, k, top in zip(pixels, scale, limit)]
    if target == "qwen-1000":
        return [max(0, min(round(v * 1000), 1000)) for v in original]
    raise CurateError(f"unknown box convention {target!r}")


def format_number(value) -> str:
    """Python's default formatting (0.5, not 0.500), integers without a point."""
    return str(value) if type(value) is int else repr(float(value))


# --- how boxes are written in text --------------------------------------------------------------

@dataclass
class Group:
    """Boxes written together in a text (``start:end``), with the referring expression they
    belong to when the syntax marks one (``ref``, and ``gap``: the text between it and the boxes)."""

    start: int
    end: int
    boxes: list
    ref: str | None = None
    gap: str = ""


@dataclass(frozen=True)
class BoxStyle:
    """A box convention and its text syntax:

    - ``bracket``: ``[x1, y1, x2, y2], [...]`` (LLaVA); a referring expression is plain text;
    - ``svit``: SVIT's ``<st>object<ed> [x1, y1, x2, y2]``;
    - ``internvl``: ``<ref>object</ref><box>[[x1, y1, x2, y2]]</box>``;
    - ``qwen-json``: ``object {"bbox_2d": [x1, y1, x2, y2], "label": "object"}`` (a JSON list
      for several boxes), Qwen2.5-VL's and Qwen3-VL's grounding answers;
    - ``swift``: ms-swift's placeholders ``<ref-object><bbox>``, the values in the record's
      ``objects`` (written only).

    ``resize``: the (factor, min_pixels, max_pixels) of the ``smart-resize`` convention."""

    convention: str
    syntax: str = "bracket"
    resize: tuple = QWEN_FINETUNE_RESIZE

    def groups(self, text: str):
        """Each :class:`Group` of boxes in the text, in order. Whatever the syntax marks as a box
        must be one (:func:`check_box`), and so must four numbers in a bracket that fall within
        the convention's range; anything else raises a BoxError."""
        if self.syntax == "internvl":
            yield from self._internvl_groups(text)
        elif self.syntax == "qwen-json":
            yield from self._qwen_groups(text)
        elif self.syntax == "swift":
            raise CurateError("ms-swift's <bbox> placeholders are written, not read")
        elif self.syntax == "svit":
            yield from self._svit_groups(text)
        else:
            yield from self._bracket_groups(text)

    def find(self, text: str):
        """(start, end, [boxes]) for each box group in the text."""
        for group in self.groups(text):
            yield group.start, group.end, group.boxes

    def _internvl_groups(self, text: str):
        for m in _INTERNVL_BOX.finditer(text):
            inside = _BOX_LIST.fullmatch(m.group(1))
            if inside is None:
                raise BoxError(f"malformed <box>{m.group(1)}</box>: expected [[x1, y1, x2, y2], ...]")
            boxes = [parse_box(b, self.convention) for b in _INSIDE.findall(inside.group(1))]
            yield _with_ref(Group(m.start(), m.end(), boxes), text, _REF_BEFORE)

    def _qwen_groups(self, text: str):
        for m in _QWEN_JSON.finditer(text):
            try:
                found = json.loads(m.group())
            except ValueError:
                continue
            objects = found if isinstance(found, list) else [found]
            yield Group(m.start(), m.end(), [check_box(o["bbox_2d"], self.convention) for o in objects])

    def _svit_groups(self, text: str):
        for m in _SVIT_MARKED.finditer(text):        # every bracket right after <ed> is a box
            for inside in _INSIDE.findall(m.group(1)):
                parse_box(inside, self.convention)
        refs = [m.span(1) for m in _SVIT_REF.finditer(text)]
        for group in self._bracket_groups(text):
            if any(start <= group.start < end for start, end in refs):
                raise BoxError(f"box {text[group.start:group.end]} is inside the referring expression "
                               "<st>...<ed> (SVIT writes boxes after <ed>)")
            yield _with_ref(group, text, _SVIT_REF_BEFORE)

    def _bracket_groups(self, text: str):
        group = None   # boxes written one after another ("[..], [..]") form one group
        for m in _BRACKET_BOX.finditer(text):
            values = [float(v) for v in m.groups()]
            if not is_box(values, self.convention):
                continue  # four numbers that are not a box of this convention
            check_box(values, self.convention, m.group())
            if group and _SEPARATOR.fullmatch(text, group.end, m.start()):
                group.end = m.end()
                group.boxes.append(values)
                continue
            if group:
                yield group
            group = Group(m.start(), m.end(), [values])
        if group:
            yield group

    def render(self, boxes: list[list], ref: str | None = None, gap: str = "", objects: dict | None = None) -> str:
        """The text for ``boxes`` (already in this convention), after their referring expression."""
        numbers = ["[" + ", ".join(map(format_number, b)) + "]" for b in boxes]
        if self.syntax == "internvl":
            return (f"<ref>{ref}</ref>" if ref is not None else "") + f"<box>[{', '.join(numbers)}]</box>"
        if self.syntax == "qwen-json":
            items = [dict({"bbox_2d": b}, **({"label": ref} if ref is not None else {})) for b in boxes]
            value = json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)
            return (ref + (gap or " ") if ref is not None else "") + value
        if self.syntax == "swift":
            if ref is not None:
                objects["ref"].append(ref)
            objects["bbox"].extend(boxes)
            return ("<ref-object>" if ref is not None else "") + "<bbox>" * len(boxes)
        inner = ", ".join(numbers)
        if ref is None:
            return inner
        if self.syntax == "svit":
            return f"<st>{ref}<ed>{gap or ' '}{inner}"
        return ref + (gap or " ") + inner

    def strip_markup(self, text: str) -> str:
        """The text without this syntax's marks (for a target that does not use them)."""
        if self.syntax == "internvl":
            return _REF.sub(r"\1", text)
        if self.syntax == "svit":
            return _SVIT_MARKERS.sub("", text)
        return text

    def attach(self, sample, objects: dict) -> None:
        """Where the syntax keeps values outside the text (ms-swift's ``objects``), put them on the sample."""
        if self.syntax == "swift" and (objects["bbox"] or objects["ref"]):
            sample.extra["objects"] = {"ref": objects["ref"], "bbox": objects["bbox"],
                                       "bbox_type": SWIFT_BBOX_TYPES[self.convention]}


def _with_ref(group: Group, text: str, pattern) -> Group:
    """The group, widened to the referring expression written right before it."""
    m = pattern.search(text, 0, group.start)
    if m:
        group.start, group.ref = m.start(), m.group(1)
        group.gap = m.group(2) if pattern.groups > 1 else ""
    return group


BRACKET_PADDED = BoxStyle("padded")
BRACKET_ORIGINAL = BoxStyle("original")
SVIT_ORIGINAL = BoxStyle("original", "svit")
INTERNVL = BoxStyle("thousand", "internvl")


def rewrite_boxes(text: str, source: BoxStyle, target: BoxStyle, size: Callable[[], tuple[int, int]],
                  objects: dict | None = None, thin: list | None = None,
                  clamped: list | None = None) -> tuple[str, int]:
    """Rewrite every box of ``text`` from one style to another; returns (text, boxes rewritten).
    ``objects`` collects what a ``swift`` target keeps outside the text; ``thin`` the boxes that
    rounding left without area (see :func:`collapsed`); ``clamped`` those that fell outside the
    image (see :func:`convert_box`). A box that is not one raises a BoxError."""
    if target.syntax == "swift":
        _refuse_placeholders(text)
    pieces, last, count = [], 0, 0
    for group in list(source.groups(text)):
        dims = size() if needs_size(source.convention, target.convention) else None
        converted = [convert_box(b, source.convention, target.convention, dims, target.resize, clamped)
                     for b in group.boxes]
        if thin is not None:
            thin += [box for box in converted if collapsed(box)]
        pieces.append(text[last:group.start])
        if group.ref is None and target.syntax == "bracket" and source.syntax == "internvl" and group.start \
                and not text[group.start - 1].isspace():
            pieces.append(" ")   # "dog<box>..." becomes "dog [...]"
        pieces.append(target.render(converted, group.ref, group.gap, objects))
        last = group.end
        count += len(group.boxes)
    pieces.append(text[last:])
    out = "".join(pieces)
    return (source.strip_markup(out) if source.syntax != target.syntax else out), count


def _refuse_placeholders(text: str) -> None:
    """ms-swift counts its placeholders against the record's objects: the text may hold none of its own."""
    for placeholder in SWIFT_PLACEHOLDERS:
        if placeholder in text:
            raise BoxError(f"the text already holds {placeholder}, ms-swift's placeholder for a "
                           f"{'referring expression' if placeholder == '<ref-object>' else 'box'}: it would not "
                           "match the record's objects")


def one_style(readers) -> tuple[BoxStyle | None, str | None]:
    """For a writer that keeps its input's box convention (it declares none): the style to write
    when the readers disagree, and a note saying so; (None, None) when they agree. Boxes of
    several conventions in one file cannot be told apart by any trainer, so they are all written
    in the first input's (the user orders the inputs; ``--boxes`` chooses another)."""
    styles = [(reader.name, reader.box_style) for reader in readers if reader.box_style is not None]
    if len({style.convention for _, style in styles}) < 2:
        return None, None
    first = styles[0][1]
    target = BoxStyle(first.convention, "bracket" if first.syntax == "svit" else first.syntax)
    said = ", ".join(dict.fromkeys(f"{name}: {style.convention}" for name, style in styles))
    return target, (f"the inputs hold boxes in different conventions ({said}) and this writer keeps its input's, "
                    f"so every box was written as {first.convention}, the first input's ({setting('boxes')} "
                    "chooses another)")


def style_for(convention: str, like: BoxStyle) -> BoxStyle:
    """``like`` with another convention (for --boxes)."""
    if convention not in CONVENTIONS:
        raise CurateError(f"{setting('boxes')} must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    if like.syntax == "swift" and convention not in SWIFT_BBOX_TYPES:
        raise CurateError(f"{setting('boxes')} {convention}: ms-swift's bbox_type says only norm1 ({setting('boxes')} original) or "
                          f"real pixels ({setting('boxes')} pixels)")
    return BoxStyle(convention, like.syntax, like.resize)


class _NotSimple(Exception):
    """The fast lane's way out: the text holds something only :func:`rewrite_boxes` handles."""


class _Thousandths(dict):
    """A written number -> its value in thousandths (0..1000), for numbers in [0, 1] written
    with at most three decimals, as SVIT and LLaVA write boxes (anything else is not for the
    lane). ``k / 1000`` is the very float that ``float(text)`` gives (both are the double
    nearest to the same rational), so tables indexed by ``k`` give pad_box's exact results."""

    _LIMIT = 65_536           # odd spellings (spaces, trailing zeros) must not grow it without end

    def __missing__(self, token: str) -> int:
        match = _THOUSANDTHS.fullmatch(token)
        if match is None:
            raise _NotSimple
        whole, decimals = match.groups()
        k = int(whole) * 1000 + int((decimals or "").ljust(3, "0"))
        if k > 1000:
            raise _NotSimple
        if len(self) >= self._LIMIT:
            self.clear()
        self[token] = k
        return k


class PaddingLane:
    """:func:`rewrite_boxes` for SVIT -> LLaVA-1.5, the common case that must be fast: boxes
    normalised to the original image (bracket or SVIT syntax) written padded to a square, in
    one split per record and table lookups per number (pixels per image dimension, the text
    of ``round(p / side, 3)`` per square side), for exactly :func:`pad_box`'s results.

    The lane takes texts only when every bracket in them is a box of four numbers in [0, 1]
    with at most three decimals, x1 < x2 and y1 < y2 before and after padding, none inside
    SVIT's ``<st>...<ed>`` (so :func:`check_box` would pass each);
    otherwise it returns None and the caller uses :func:`rewrite_boxes`, which gives the same
    text for what the lane takes (a test compares the two case by case)."""

    _KEPT = 1_024             # pixel tables (one per dimension, 1,001 entries each)
    _KEPT_TEXT_ENTRIES = 1 << 21    # entries of the text tables (one per side), 16 MB of pointers

    def __init__(self, source: BoxStyle):
        self.svit = source.syntax == "svit"
        self.numbers = _Thousandths()
        self._pixels: dict[int, list[int]] = {}
        self._ints: list[int] = []
        self._texts: dict[int, list[str]] = {}
        self._shared_texts: dict[float, str] = {}

    @staticmethod
    def supports(source: BoxStyle | None, target: BoxStyle | None) -> bool:
        return (source is not None and target is not None and source.syntax in ("bracket", "svit")
                and target.syntax == "bracket" and (source.convention, target.convention) == ("original", "padded"))

    def __call__(self, texts: list[str], size: Callable[[], tuple[int, int]],
                 thin: list | None = None) -> tuple[list[str], int] | None:
        """The texts rewritten and how many boxes they held, or None. The texts of a record are
        taken together (joined by NUL, which no bracket may hold) to pay the per-call costs once.
        ``thin`` collects the boxes that padding left without area (see :func:`collapsed`);
        without it, such a text is left to :func:`rewrite_boxes`."""
        text = "\0".join(texts)
        if text.count("\0") != len(texts) - 1:
            return None                      # a text holds a NUL itself: they could not be split back
        parts = _BRACKET.split(text)         # text, inside of a bracket, text, ..., text
        if len(parts) > 1:
            if _UNUSUAL_GAP.search(text) or (self.svit and "<ed>[" in text):
                return None                  # rewrite_boxes writes ", " and "<ed> [" there
            if self.svit and _SVIT_BRACKET_IN_REF.search(text):
                return None                  # a box inside <st>...<ed> is refused there
            numbers = self.numbers
            try:
                width, height = size()
                x_pixels, y_pixels = self._pixel_table(width), self._pixel_table(height)
                x_texts, y_texts = self._text_tables(width, height)
                for i in range(1, len(parts), 2):
                    x1, y1, x2, y2 = parts[i].split(",")
                    x1, y1, x2, y2 = numbers[x1], numbers[y1], numbers[x2], numbers[y2]
                    if x1 >= x2 or y1 >= y2:
                        return None          # inverted or empty: rewrite_boxes says which
                    left, top, right, bottom = (x_texts[x_pixels[x1]], y_texts[y_pixels[y1]],
                                                x_texts[x_pixels[x2]], y_texts[y_pixels[y2]])
                    if left == right or top == bottom:
                        if thin is None:
                            return None      # no area once padded: rewrite_boxes writes and counts it
                        thin.append([float(left), float(top), float(right), float(bottom)])
                    parts[i] = f"[{left}, {top}, {right}, {bottom}]"
            except (_NotSimple, ValueError, CurateError):     # ValueError: not four numbers
                return None
            text = "".join(parts)
        if self.svit:
            text = _SVIT_MARKERS.sub("", text)
        return (text.split("\0") if len(texts) > 1 else [text]), len(parts) // 2

    def _pixel_table(self, dimension: int) -> list[int]:
        """``round(v * dimension)`` for v = k / 1000, k = 0..1000 (pad_box's first step)."""
        table = self._pixels.get(dimension)
        if table is None:
            if len(self._pixels) >= self._KEPT:
                self._pixels.clear()
            if len(self._ints) <= dimension:   # one int object per pixel value, shared by the tables
                self._ints = list(range(2 * dimension + 1))
            ints = self._ints
            table = self._pixels[dimension] = [ints[round((k / 1000) * dimension)] for k in range(1001)]
        return table

    def _text_tables(self, width: int, height: int) -> tuple[list[str], list[str]]:
        """The text of ``round((p + shift) / side, 3)`` for pixel p along x and along y (the
        short side is shifted by half the padding)."""
        side = max(width, height)
        shift = (side - min(width, height)) // 2
        texts = self._texts.get(side)
        if texts is None:
            if sum(map(len, self._texts.values())) + side + 1 > self._KEPT_TEXT_ENTRIES:
                self._texts.clear()
            shared = self._shared_texts       # at most 1,001 distinct texts, shared by every table
            texts = self._texts[side] = [shared.get(v) or shared.setdefault(v, format_number(v))
                                         for v in (round(p / side, 3) for p in range(side + 1))]
        if width > height:
            return texts, texts[shift:]
        if height > width:
            return texts[shift:], texts
        return texts, texts


class BoxRewriter:
    """Rewrites the boxes of each sample from the reader's style to the writer's, if they differ.

    The box stage (:class:`curate.stages.ConvertBoxes`) calls :meth:`apply` on each sample; a
    reader that converts its own records (curate's SVIT, :class:`curate.stages.ConvertsOwnBoxes`)
    calls :meth:`rewrite_texts` in its own pass, so that each text is parsed, checked and
    converted once."""

    def __init__(self, source: BoxStyle | None, target: BoxStyle | None, locator):
        if target is None and source is not None and source.syntax == "svit":
            target = BoxStyle(source.convention)     # SVIT's <st>/<ed> marks are no trainer's text
        self.source, self.target, self.locator = source, target, locator
        self.active = source is not None and target is not None and source != target
        self.lane = PaddingLane(source) if self.active and PaddingLane.supports(source, target) else None
        self.boxes = 0
        self.images: set[str] = set()
        self.thin: list = []             # converted boxes that rounding left without area
        self.clamped: list = []          # boxes that fell outside their image once converted

    def rewrite_texts(self, texts: list[str], size: Callable[[], tuple[int, int]],
                      refuse: Callable[[int, str], Exception] | None = None,
                      objects: dict | None = None) -> tuple[list[str], int]:
        """The texts in the target style, and how many boxes they held (for :meth:`tally`, once
        the record is kept). ``refuse(k, reason)`` gives the error to raise for a bad box in
        text ``k`` (the caller names the record and field); without it the BoxError is raised."""
        done = self.lane(texts, size, self.thin) if self.lane is not None else None
        if done is not None:
            return done
        out, total = [], 0
        for k, text in enumerate(texts):
            one = self.lane([text], size, self.thin) if self.lane is not None and len(texts) > 1 else None
            if one is None:
                try:
                    text, count = rewrite_boxes(text, self.source, self.target, size, objects, self.thin,
                                                self.clamped)
                except RecordError:
                    raise
                except CurateError as e:
                    if refuse is None:
                        raise
                    raise refuse(k, str(e)) from None
                one = ([text], count)
            out += one[0]
            total += one[1]
        return out, total

    def tally(self, boxes: int, image: str | None) -> None:
        """Count the boxes of a record that was kept (for the note), and its image when its
        size was needed for them."""
        self.boxes += boxes
        if boxes and image is not None and needs_size(self.source.convention, self.target.convention):
            self.images.add(image)

    def image_size(self, image: str, path, **where) -> tuple[int, int]:
        """The stored size of ``image`` (from its header, once per image), or a RecordError
        located by ``where`` (index, record_id) that says why it is needed."""
        try:
            return self.locator.size(image)
        except UnreadableImage as e:
            hint = f" (pass {setting('image_root')})" if self.locator.root is None else ""
            raise RecordError(path, f"image {image!r}: {e}; its size is needed to convert boxes from "
                                    f"{self.source.convention} to {self.target.convention}{hint}",
                              field="image", **where) from None

    def apply(self, sample, path):
        if not self.active:
            return sample

        def size():
            if not sample.images:
                raise RecordError(path, "the text has boxes but the record has no image", record_id=sample.id,
                                  field="image")
            return self.image_size(sample.images[0], path, record_id=sample.id)

        def refuse(k, reason):
            return RecordError(path, reason, record_id=sample.id, field=f"conversations[{k}]")

        objects = {"ref": [], "bbox": []}
        texts, total = self.rewrite_texts([turn.text for turn in sample.conversations], size, refuse, objects)
        for turn, text in zip(sample.conversations, texts):
            turn.text = text
        self.target.attach(sample, objects)
        self.tally(total, sample.images[0] if sample.images else None)
        return sample

    def note(self) -> str | None:
        if not self.active:
            return None
        what = (f"{self.source.convention} ({self.source.syntax}) to {self.target.convention} "
                f"({self.target.syntax})")
        if not self.boxes:
            return f"boxes would be converted from {what}; the samples written hold none{self._resize_note()}"
        sizes = f", with the sizes of {len(self.images):,} images read from their headers" if self.images else ""
        thin = (f"; {len(self.thin):,} thinner than the target's resolution round to a line (e.g. "
                f"{shown(self.thin[0])}), written so, as the trainer's own rule gives them") if self.thin else ""
        clamped = (f"; {len(self.clamped):,} fell outside their image once converted and were clamped to it (e.g. "
                   f"{shown([round(v, 3) for v in self.clamped[0]])} of the image's width and height): boxes written "
                   f"for other image sizes, or a wrong {setting('image_root')}; check them") if self.clamped else ""
        return f"converted {self.boxes:,} boxes from {what}{sizes}{thin}{clamped}{self._resize_note()}"

    def _resize_note(self) -> str:
        """Which pixel limits boxes after Qwen's smart_resize assume: they are right only for a
        training that resizes images with the same limits."""
        if self.target.convention != "smart-resize":
            return ""
        _, low, high = self.target.resize
        return (f"; the boxes assume Qwen2.5-VL's smart_resize with min_pixels {low:,} and max_pixels {high:,} "
                f"(train with these, or set {setting('qwen_min_pixels')}/{setting('qwen_max_pixels')} to yours)")
