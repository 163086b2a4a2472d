"""`curate preview`: a self-contained HTML page of records with their image and their boxes
drawn as the format means them (an image whose boxes are normalised to the square-padded
image is drawn padded), so that a conversion can be checked by eye."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from PIL import Image

from .boxes import BoxError, BoxStyle, convert_box
from .images import ImageLocator, UnreadableImage, load_rgb, open_image

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")
SIZE = 384


def _encode(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure(sample, style: BoxStyle | None, locator: ImageLocator) -> tuple[str, list]:
    """(SVG of the image with its boxes, [(turn, start, end, colour)] to mark in the text)."""
    marks, rects = [], []
    if not sample.images:
        if sample.videos:        # carried, never decoded: named, not drawn
            return f"<div class=noimg>video: {escape(', '.join(sample.videos))} (not decoded)</div>", marks
        return "<div class=noimg>text-only</div>", marks
    try:
        path = locator.path(sample.images[0])
        image = load_rgb(path, SIZE)
        with open_image(path) as raw:
            width, height = raw.size    # boxes mean the stored size, as LLaVA pads it
    except (UnreadableImage, OSError) as e:
        return f"<div class=noimg>{escape(sample.images[0])}: {escape(str(e))}</div>", marks
    padded = style is not None and style.convention == "padded"
    side = max(width, height)
    canvas_w, canvas_h = (side, side) if padded else (width, height)
    scale = SIZE / max(canvas_w, canvas_h)
    # Scale first, then pad: the page never holds more than SIZE x SIZE pixels of an image
    # (a 1x100000 image padded to its square at full size would be 30 GB).
    thumb = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    if padded:
        square = Image.new("RGB", (max(1, round(side * scale)),) * 2, (128, 128, 128))
        square.paste(thumb, (round((side - width) / 2 * scale), round((side - height) / 2 * scale)))
        thumb = square
    n, problem = 0, ""
    try:
        found = [(k, list(style.find(turn.text))) for k, turn in enumerate(sample.conversations)] if style else []
    except BoxError as e:           # drawn without boxes, and the reason said under the image
        found, problem = [], f"; not drawn: {e}"
    for k, groups in found:
        for start, end, boxes in groups:
            colour = COLOURS[n % len(COLOURS)]
            marks.append((k, start, end, colour))
            for box in boxes:
                if padded:
                    x1, y1, x2, y2 = (v * side for v in box)
                else:
                    x1, y1, x2, y2 = (v * s for v, s in zip(convert_box(box, style.convention, "original",
                                                                        (width, height)),
                                                            (width, height, width, height)))
                rects.append(f'<rect x="{x1 * scale:.1f}" y="{y1 * scale:.1f}" width="{(x2 - x1) * scale:.1f}" '
                             f'height="{(y2 - y1) * scale:.1f}" stroke="{colour}"/>')
            n += 1
    svg = (f'<svg width="{thumb.width}" height="{thumb.height}" viewBox="0 0 {thumb.width} {thumb.height}">'
           f'<image href="{_encode(thumb)}" width="{thumb.width}" height="{thumb.height}"/>{"".join(rects)}</svg>')
    note = " (drawn padded to a square, as the boxes mean)" if padded else ""
    return (f"<figure>{svg}<figcaption>{escape(sample.images[0])} {width}×{height}{note}{escape(problem)}"
            "</figcaption></figure>", marks)


def _marked(text: str, marks: list) -> str:
    out, last = [], 0
    for start, end, colour in sorted(marks):
        out.append(escape(text[last:start]))
        out.append(f'<mark style="border-color:{colour}">{escape(text[start:end])}</mark>')
        last = end
    out.append(escape(text[last:]))
    return "".join(out)


def render_preview(items, locator: ImageLocator, title: str) -> str:
    """The page for ``items`` (engine Items); each record's boxes are drawn as its own reader means them."""
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8><title>curate preview</title><style>"
             "body{font:14px system-ui,sans-serif;margin:2em;color:#222}.rec{display:flex;gap:16px;border-top:1px "
             "solid #ddd;padding:12px 0}.turns{flex:1;white-space:pre-wrap}.role{font-weight:bold}"
             "svg rect{fill:none;stroke-width:2}mark{background:none;border:2px solid;padding:0 2px}"
             "figure{margin:0}figcaption{font-size:12px;color:#555}.noimg{width:384px;color:#999}</style></head><body>",
             f"<h1>curate preview</h1><p>{escape(title)}</p>"]
    count = 0
    for item in items:
        sample, style = item.sample, item.reader.box_style
        svg, marks = figure(sample, style, locator)
        turns = []
        for k, turn in enumerate(sample.conversations):
            mine = [(s, e, c) for t, s, e, c in marks if t == k]
            turns.append(f"<div><span class=role>{escape(turn.role)}:</span> {_marked(turn.text, mine)}</div>")
        boxes = f"; {escape(item.reader.name)}, boxes: {escape(style.convention)}" if style else ""
        parts.append(f"<section class=rec><div>{svg}</div><div class=turns><h3>{escape(str(sample.id))} "
                     f"<small>{escape(sample.source)}{boxes}</small></h3>{''.join(turns)}</div></section>")
        count += 1
    parts.append(f"<p>{count} records</p></body></html>\n")
    return "\n".join(parts)


def write_preview(inputs, output: Path, *, limit: int = 50, ids: set[str] | None = None,
                  overwrite: bool = False) -> None:
    """The first ``limit`` records of ``inputs`` (or those whose id is in ``ids``) as one HTML page."""
    import itertools
    from .atomic import Outputs
    with Outputs(inputs.sources, overwrite=overwrite) as outputs:
        outputs.claim(output)
        items = (item for item in inputs.items() if ids is None or str(item.sample.id) in ids)
        html = render_preview(itertools.islice(items, limit), ImageLocator(inputs.image_root),
                              ", ".join(str(p) for p in inputs.sources))
        outputs.open(output).write(html)
