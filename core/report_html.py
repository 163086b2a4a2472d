"""report.html: one self-contained page to choose a threshold by. Per source: the
nearest-neighbour histogram, the kept-against-threshold curve, removed pairs from the
lowest score up, and the closest pairs that were kept. Thumbnails are small and come out
of a fixed byte budget, so the page stays under ~2 MB whatever the dataset's size."""

from __future__ import annotations

import base64
import io
from html import escape

import numpy as np

from .charts import histogram_svg, kept_curve_svg
from .images import ImageLocator, UnreadableImage, load_rgb
from .progress import ProgressBar

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


class Thumbnails:
    """Small JPEG data URIs, each image encoded once, none once the byte budget is spent."""

    def __init__(self, image_root, size: int = THUMBNAIL_SIZE, budget: int = THUMBNAIL_BUDGET):
        self.locator = ImageLocator(image_root)
        self.size = size
        self.budget = budget
        self.spent = 0
        self.cache: dict[str, str | None] = {}

    def data_uri(self, relative: str) -> str | None:
        if relative in self.cache:
            return self.cache[relative]
        if self.spent >= self.budget:
            return None                  # not cached: the page is full, not the image unreadable
        try:
            image = load_rgb(self.locator.path(relative), self.size)
            image.thumbnail((self.size, self.size))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
            uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
        except (UnreadableImage, OSError):
            uri = None
        self.spent += len(uri or "")
        self.cache[relative] = uri
        return uri

    def img(self, relative: str) -> str:
        uri = self.data_uri(relative)
        if uri is None:
            why = "not shown: page size limit" if self.spent >= self.budget else "unreadable"
            return f'<span class=missing title="{escape(relative)}">{why}</span>'
        return f'<img src="{uri}" alt="{escape(relative)}">'


def pairs_per_gallery(galleries: int) -> int:
    """As many pairs as the thumbnail budget allows for every gallery, within bounds."""
    fit = THUMBNAIL_BUDGET // (TYPICAL_THUMBNAIL * 2 * max(galleries, 1))
    return int(min(MOST_PAIRS_PER_GALLERY, max(FEWEST_PAIRS_PER_GALLERY, fit)))


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
                   f"{escape(', '.join(hidden[:50]))}{' …' if len(hidden) > 50 else ''}</p>")
    if data["unreadable"]:
        rows = data["unreadable"][:MOST_UNREADABLE_ROWS]
        out.append(f"<h2>Unreadable images ({len(data['unreadable']):,})</h2><table><tr><th>image</th>"
                   "<th>reason</th></tr>")
        out += [f"<tr><td>{escape(u['image'])}</td><td>{escape(u['reason'])}</td></tr>" for u in rows]
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
    for block in data["thresholds"]:
        out.append(f"<h2>Threshold {block['threshold']}</h2><table><tr><th>source</th><th>samples</th>"
                   "<th>unique images</th><th>similar</th><th>kept</th><th>samples removed</th></tr>")
        for row in block["table"]:
            out.append(f"<tr><td>{escape(row['source'])}</td><td>{row['samples']:,}</td>"
                       f"<td>{row['unique_images']:,}</td><td>{row['similar']:,}</td><td>{row['kept']:,}</td>"
                       f"<td>{row['samples_removed']:,}</td></tr>")
        out.append("</table>")
    return "\n".join(out)


def _source_section(name: str, data: dict, thresholds: list[float], pairs_by_threshold: list[list[dict]],
                    thumbs: Thumbnails, per_gallery: int) -> str:
    hist = data["nearest_neighbour_histogram"][name]
    out = [f"<section class=source><h2>{escape(name)}</h2>",
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
        if not mine:
            continue
        shown = spread(mine, per_gallery)
        out.append(f"<h3>Removed at threshold {threshold}: {len(mine):,} images; {len(shown)} pairs from the "
                   "lowest score to the highest</h3><div class=pairs>")
        for p in shown:
            how = p["signal"] + (f", distance {p['distance']}" if "distance" in p else "")
            if p.get("verify_score") is not None:
                how += f"; verified ({p['verified_by']} {p['verify_score']})"
            out.append("<div class=pair>" + thumbs.img(p["image"]) + thumbs.img(p["duplicate_of"]) +
                       f"<div class=cap>{escape(how)} <b>{p['score']:.4f}</b><br>removed: "
                       f"{escape(str(p['image']))} ({escape(str(p['id']))})<br>kept: "
                       f"{escape(str(p['duplicate_of']))} ({escape(str(p['duplicate_of_id']))})</div></div>")
        out.append("</div>")
    for block in data["thresholds"][:1]:
        looked = [p for p in block["looked_alike_kept"] if p["source"] == name][:per_gallery]
        if looked:
            out.append(f"<h3>Looked alike, kept: different content ({len(looked)} of the pairs the signals "
                       "proposed and the verifier refused, most similar first)</h3><div class='pairs looked-pairs'>")
            for p in looked:
                how = f"{p['signal']} {p['score']:.4f}; {p['verified_by']}: {p['why_kept']}"
                out.append("<div class=pair>" + thumbs.img(p["image"]) + thumbs.img(p["looked_like"]) +
                           f"<div class=cap>{escape(how)}<br>kept: {escape(str(p['image']))} "
                           f"({escape(str(p['id']))})<br>looked like: {escape(str(p['looked_like']))} "
                           f"({escape(str(p['looked_like_id']))})</div></div>")
            out.append("</div>")
    kept = data["closest_kept_pairs"].get(name, [])[:per_gallery]
    if kept:
        out.append(f"<h3>Closest pairs kept (below {min(thresholds)}): the {len(kept)} most similar pairs that "
                   "both stayed</h3><div class='pairs kept-pairs'>")
        for p in kept:
            out.append("<div class=pair>" + thumbs.img(p["image"]) + thumbs.img(p["neighbour"]) +
                       f"<div class=cap>embedding <b>{p['score']:.4f}</b><br>{escape(str(p['image']))} "
                       f"({escape(str(p['id']))})<br>{escape(str(p['neighbour']))} "
                       f"({escape(str(p['neighbour_id']))})</div></div>")
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)
