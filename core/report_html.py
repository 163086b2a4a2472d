"""report.html: one self-contained page to choose a threshold by. Per source: the
nearest-neighbour histogram, the kept-against-threshold curve, removed pairs from the
lowest score up, and the closest pairs that were kept. Thumbnails are small and come out
of a fixed byte budget, with their captions, and every string from the data is cut to a
bounded length, so the page stays under ~2 MB whatever the data."""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np

from .charts import histogram_svg, kept_curve_svg
from .images import ImageLocator, UnreadableImage, load_rgb
from .progress import ProgressBar, shown

THUMBNAIL_SIZE = 112                 # pixels, longest side
THUMBNAIL_QUALITY = 70
THUMBNAIL_BUDGET = 1_400_000         # bytes of base64 images in the page
TYPICAL_THUMBNAIL = 5_000            # bytes, a photo at the size and quality above (for planning only)
MOST_PAIRS_PER_GALLERY, FEWEST_PAIRS_PER_GALLERY = 12, 2
MOST_SOURCES = 24                    # sections; the rest are in report.json
MOST_UNREADABLE_ROWS = 100

STYLE = """body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:16px}
.pairs{display:flex;flex-wrap:wrap;gap:10px}.pair{border:1px solid #ddd;padding:5px;width:240px}
.pair img,.missing{width:112px;height:112px;object-fit:contain;background:#eee;vertical-align:top}
.missing{display:inline-block;background:#f4f4f4;font-size:10px;color:#888;overflow:hidden}
.pair .cap{font-size:12px;word-break:break-all}.kept-pairs .pair{border-color:#8c8}
svg text{font-size:11px;fill:#333}svg .grid{stroke:#eee}svg .axis{stroke:#888}
.hist rect{fill:#4a78c2}.thr{stroke:#c22;stroke-dasharray:4}svg .thr-label{fill:#c22;font-weight:600}
.kept{fill:none;stroke:#2a7;stroke-width:2}.run{fill:#c22}"""


def text(value) -> str:
    """:func:`shown`, escaped for HTML."""
    return escape(shown(value))


class Thumbnails:
    """The galleries' pairs: small JPEG data URIs (each image encoded once) and their captions,
    drawn from one byte budget; every placement of an image and every caption counts, and no
    pair is drawn once the budget is spent."""

    def __init__(self, image_root, size: int = THUMBNAIL_SIZE, budget: int = THUMBNAIL_BUDGET):
        self.locator = ImageLocator(image_root)
        self.size = size
        self.budget = budget
        self.spent = 0
        self.cache: dict[str, str | None] = {}

    @property
    def full(self) -> bool:
        return self.spent >= self.budget

    def data_uri(self, relative: str) -> str | None:
        if relative not in self.cache:
            try:
                image = load_rgb(self.locator.path(relative), self.size)
                image.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
                self.cache[relative] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
            except (UnreadableImage, OSError):
                self.cache[relative] = None
        return self.cache[relative]

    def img(self, relative: str) -> str:
        uri = None if self.full else self.data_uri(relative)
        if uri is None:
            why = "not shown: page size limit" if self.full else "unreadable"
            return self._spend(f'<span class=missing title="{text(relative)}">{why}</span>')
        return self._spend(f'<img src="{uri}" alt="{text(relative)}">')

    def pair(self, left: str, right: str, caption: str) -> str | None:
        """One pair of images with its caption (HTML), or None once the page is full."""
        return self.figure([left, right], caption)

    def figure(self, images: list[str], caption: str, css_class: str = "pair") -> str | None:
        """Images side by side with their caption (HTML), or None once the page is full."""
        if self.full:
            return None
        drawn = "".join(self.img(image) for image in images)
        return f"<div class={css_class}>" + drawn + self._spend(f"<div class=cap>{caption}</div></div>")

    def _spend(self, html: str) -> str:
        self.spent += len(html.encode())
        return html


def pairs_per_gallery(galleries: int, images: int = 2, most: int = MOST_PAIRS_PER_GALLERY) -> int:
    """As many figures of ``images`` images as the thumbnail budget allows for every gallery,
    within bounds."""
    fit = THUMBNAIL_BUDGET // (TYPICAL_THUMBNAIL * images * max(galleries, 1))
    return int(min(most, max(FEWEST_PAIRS_PER_GALLERY, fit)))


def spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= count:
        return items
    return [items[int(k)] for k in np.unique(np.linspace(0, len(items) - 1, count).round())]


def render_html(run, data: dict, pairs_by_threshold: list[list[dict]], show_progress: bool = False) -> str:
    thumbs = Thumbnails(run.duplicates.found.image_root)
    thresholds = [block["threshold"] for block in data["thresholds"]]
    sources = [row["source"] for row in data["thresholds"][0]["table"]
               if row["source"] in data["nearest_neighbour_histogram"]]
    shown_sources, hidden = sources[:MOST_SOURCES], sources[MOST_SOURCES:]
    per_gallery = pairs_per_gallery(len(shown_sources) * (len(thresholds) + 2))
    out = [_head(data, thresholds)]
    with ProgressBar("report", len(shown_sources), unit="sources", enabled=show_progress) as bar:
        for name in shown_sources:
            out.append(_source_section(name, data, thresholds, pairs_by_threshold, thumbs, per_gallery))
            bar.advance(1)
    if hidden:
        out.append(f"<p>{len(hidden):,} more sources are in report.json: "
                   f"{', '.join(map(text, hidden[:50]))}{' …' if len(hidden) > 50 else ''}</p>")
    if data["unreadable"]:
        rows = data["unreadable"][:MOST_UNREADABLE_ROWS]
        out.append(f"<h2>Unreadable images ({len(data['unreadable']):,})</h2><table><tr><th>image</th>"
                   "<th>reason</th></tr>")
        out += [f"<tr><td>{text(u['image'])}</td><td>{text(u['reason'])}</td></tr>" for u in rows]
        out.append("</table>")
        if len(data["unreadable"]) > len(rows):
            out.append(f"<p>The first {len(rows)} are shown; report.json lists all.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _head(data: dict, thresholds: list[float]) -> str:
    s, acc = data["settings"], data["accounting"]
    signals = ", ".join(s.get("signals", [])) or "embedding"
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8><title>curate dedup report</title>",
           f"<style>{STYLE}</style></head><body>", "<h1>curate dedup report</h1>",
           f"<p>{escape(', '.join(data['inputs']))} → {escape(data['output'])}<br>embedder "
           f"<b>{escape(s['embedder'])}</b> ({escape(s['model'])}, {s['dim']}-d), index <b>{escape(s['index'])}</b>,"
           f" scope <b>{escape(s['scope'])}</b>, signals <b>{escape(signals)}</b>; output filtered at threshold "
           f"<b>{thresholds[0]}</b></p>",
           f"<p class=intent>This run removes <b>{escape(s['intent'])}</b>.</p>",
           f"<p class=accounting>{acc['input']:,} records in = {acc['written']:,} written + {acc['removed']:,} "
           f"removed + {acc['rejected']:,} rejected</p>"]
    if data.get("filters"):              # curate dedup --filter: they ran before the duplicate filter
        from .filter_report import threshold_text
        out += ["<h2>Filters, before the duplicate filter</h2><table><tr><th>filter</th><th>removes</th>"
                "<th>samples removed</th></tr>",
                *[f"<tr><td>{text(f['name'])}</td><td>{text(threshold_text(f))}</td><td>{f['removed']:,}</td></tr>"
                  for f in data["filters"]], "</table>"]
    for block in data["thresholds"]:
        out.append(f"<h2>Threshold {block['threshold']}</h2><table><tr><th>source</th><th>samples</th>"
                   "<th>unique images</th><th>similar</th><th>kept</th><th>samples removed</th></tr>")
        *sources, total = block["table"]
        out += [_table_row(row) for row in sources[:MOST_SOURCES]]
        if len(sources) > MOST_SOURCES:
            out.append(f"<tr><td colspan=6>{len(sources) - MOST_SOURCES:,} more sources are in report.json</td></tr>")
        out += [_table_row(total), "</table>"]
    return "\n".join(out)


def _table_row(row: dict) -> str:
    return (f"<tr><td>{text(row['source'])}</td><td>{row['samples']:,}</td><td>{row['unique_images']:,}</td>"
            f"<td>{row['similar']:,}</td><td>{row['kept']:,}</td><td>{row['samples_removed']:,}</td></tr>")


def _source_section(name: str, data: dict, thresholds: list[float], pairs_by_threshold: list[list[dict]],
                    thumbs: Thumbnails, per_gallery: int) -> str:
    hist = data["nearest_neighbour_histogram"][name]
    out = [f"<section class=source><h2>{text(name)}</h2>",
           f"<p>Left: similarity of each of the {hist['images']:,} images to its nearest neighbour. Right: images "
           "kept at each embedding threshold (line: the embedding alone; dots: this run, every signal). "
           "Red dashes: the thresholds of this run.</p><div class=charts>",
           histogram_svg(hist["bins"], hist["counts"], thresholds)]
    curve = data["kept_curve"].get(name)
    if curve:
        kept_at = {block["threshold"]: row["kept"] for block in data["thresholds"]
                   for row in block["table"] if row["source"] == name}
        out.append(kept_curve_svg(curve["thresholds"], curve["kept"], curve["images"],
                                  [(t, kept_at[t]) for t in thresholds if t in kept_at]))
    out.append("</div>")
    for threshold, pairs in zip(thresholds, pairs_by_threshold):
        mine = sorted((p for p in pairs if p["source"] == name), key=lambda p: p["score"])
        drawn = [_removed_pair(p, thumbs) for p in spread(mine, per_gallery)]
        out += gallery(f"Removed at threshold {threshold}: {len(mine):,} images; {{}} pairs from the lowest score "
                        "to the highest", "pairs", drawn)
    for block in data["thresholds"][:1]:
        looked = [p for p in block["looked_alike_kept"] if p["source"] == name][:per_gallery]
        drawn = [_looked_alike_pair(p, thumbs) for p in looked]
        out += gallery("Looked alike, kept: different content ({} of the pairs the signals proposed and the "
                        "verifier refused, most similar first)", "pairs looked-pairs", drawn)
    kept = data["closest_kept_pairs"].get(name, [])[:per_gallery]
    drawn = [_kept_pair(p, thumbs) for p in kept]
    out += gallery(f"Closest pairs kept (below {min(thresholds)}): the {{}} most similar pairs that both stayed",
                    "pairs kept-pairs", drawn)
    out.append("</section>")
    return "\n".join(out)


def gallery(title: str, css_class: str, drawn: list[str | None], what: str = "pairs") -> list[str]:
    """A heading (``{}`` in ``title`` becomes the number of figures drawn) and the figures
    drawn; nothing for none; a note for the ``what`` the page had no room for."""
    if not drawn:
        return []
    figures = [html for html in drawn if html is not None]
    out = [f"<h3>{title.format(len(figures))}</h3><div class='{css_class}'>", *figures, "</div>"]
    if len(figures) < len(drawn):
        out.append(f"<p>{len(drawn) - len(figures)} more {what} not shown: page size limit (report.json lists "
                   "them)</p>")
    return out


def _removed_pair(p: dict, thumbs: Thumbnails) -> str | None:
    how = p["signal"] + (f", distance {p['distance']}" if "distance" in p else "")
    if p.get("verify_score") is not None:
        how += f"; verified ({p['verified_by']} {p['verify_score']})"
    return thumbs.pair(p["image"], p["duplicate_of"], f"{escape(how)} <b>{p['score']:.4f}</b><br>removed: "
                       f"{text(p['image'])} ({text(p['id'])})<br>kept: {text(p['duplicate_of'])} "
                       f"({text(p['duplicate_of_id'])})")


def _looked_alike_pair(p: dict, thumbs: Thumbnails) -> str | None:
    how = f"{p['signal']} {p['score']:.4f}; {p['verified_by']}: {p['why_kept']}"
    return thumbs.pair(p["image"], p["looked_like"], f"{escape(how)}<br>kept: {text(p['image'])} ({text(p['id'])})"
                       f"<br>looked like: {text(p['looked_like'])} ({text(p['looked_like_id'])})")


def _kept_pair(p: dict, thumbs: Thumbnails) -> str | None:
    return thumbs.pair(p["image"], p["neighbour"], f"embedding <b>{p['score']:.4f}</b><br>{text(p['image'])} "
                       f"({text(p['id'])})<br>{text(p['neighbour'])} ({text(p['neighbour_id'])})")
