"""The filter report's report.html: one self-contained page in the style of dedup's
(:mod:`curate.report_html`, whose thumbnails, galleries and cut strings it reuses). The
per-source table of removals, then per filter what it removes and, for a threshold filter, the
removed and the kept images nearest its threshold, each captioned with its measure. Thumbnails
come out of dedup's byte budget and every string from the data is cut, so the page stays under
~2 MB whatever the data."""

from __future__ import annotations

from html import escape

from .charts import histogram_svg
from .filter_report import NEAR_THRESHOLD, table_rows, threshold_text
from .report_html import MOST_SOURCES, STYLE, Thumbnails, gallery, pairs_per_gallery, text

STYLE_SINGLE = (".one{border:1px solid #ddd;padding:5px;width:124px}.one img{width:112px;height:112px;"
                "object-fit:contain;background:#eee;vertical-align:top}.one .cap{font-size:12px;"
                "word-break:break-all}.kept-side .one{border-color:#8c8}.removed-side .one{border-color:#d99}")
DESCRIPTION_CHARS = 400         # a plugin's description, cut


def render_html(data: dict, image_root) -> str:
    thumbs = Thumbnails(image_root)
    galleries = sum(2 if "near_threshold" in f else 1 for f in data["filters"])
    per_gallery = pairs_per_gallery(galleries, images=1, most=NEAR_THRESHOLD)
    out = [_head(data), _source_table(data)]
    out += [_filter_section(k, entry, thumbs, per_gallery) for k, entry in enumerate(data["filters"])]
    out.append("</body></html>\n")
    return "\n".join(out)


def _head(data: dict) -> str:
    acc = data["accounting"]
    inputs = ", ".join(text(p) for p in data["inputs"][:MOST_SOURCES])
    return "\n".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>curate filter report</title>",
        f"<style>{STYLE}\n{STYLE_SINGLE}</style></head><body>", "<h1>curate filter report</h1>",
        f"<p>{inputs} → {text(data['output'])}; removed samples, each with why, in {text(data['removed_file'])}</p>",
        f"<p class=accounting>{acc['input']:,} records in = {acc['written']:,} written + {acc['removed']:,} "
        f"removed + {acc['rejected']:,} rejected</p>",
        "<table><tr><th>filter</th><th>removes</th><th>removed</th></tr>",
        *[f"<tr><td><a href='#filter-{k}'>{text(f['name'])}</a></td><td>{text(threshold_text(f))}</td>"
          f"<td>{f['removed']:,}</td></tr>" for k, f in enumerate(data["filters"])],
        "</table>"])


def _source_table(data: dict) -> str:
    names = [f["name"] for f in data["filters"]]
    *rows, total = table_rows(data)
    out = ["<h2>Removed per source</h2><table><tr><th>source</th><th>samples</th>",
           *[f"<th>{text(name)}</th>" for name in names], "<th>left</th></tr>"]
    out += [_row(row) for row in rows[:MOST_SOURCES]]
    if len(rows) > MOST_SOURCES:
        out.append(f"<tr><td colspan={len(names) + 3}>{len(rows) - MOST_SOURCES:,} more sources are in "
                   "report.json</td></tr>")
    out += [_row(total), "</table>"]
    return "".join(out)


def _row(row: dict) -> str:
    cells = "".join(f"<td>{n:,}</td>" for n in row["removed"])
    return f"<tr><td>{text(row['source'])}</td><td>{row['samples']:,}</td>{cells}<td>{row['left']:,}</td></tr>"


def _filter_section(number: int, entry: dict, thumbs: Thumbnails, per_gallery: int) -> str:
    description = entry["description"][:DESCRIPTION_CHARS]
    out = [f"<section class=filter id='filter-{number}'><h2>{text(entry['name'])}: {entry['removed']:,} "
           f"removed</h2>", f"<p>Removes: <b>{text(threshold_text(entry))}</b>. {escape(description)}</p>"]
    near = entry.get("near_threshold")
    histogram = entry.get("histogram")
    if histogram is not None and sum(histogram["counts"]):
        measure, unit = entry["measure"], entry.get("unit", "").strip()
        out += [f"<p>Where each image's {escape(measure)} fell ({sum(histogram['counts']):,} images; those beyond "
                f"the chart in its end bars); the line is the threshold.</p>",
                histogram_svg(histogram["edges"], histogram["counts"], [entry["threshold"]],
                              label=f"{measure} histogram", x_title=measure + (f" ({unit})" if unit else ""),
                              log=histogram["log"])]
    if near is not None:
        unit = entry.get("unit", "")
        for side, css, title in (("removed", "removed-side", "Removed nearest the threshold"),
                                 ("kept", "kept-side", "Kept nearest the threshold")):
            drawn = [_measured(e, unit, thumbs) for e in near[side][:per_gallery]]
            out += gallery(f"{title}: the {{}} {side} images whose {escape(entry['measure'])} is closest to "
                           f"{entry['threshold']:g}{escape(unit)}, nearest first", f"pairs {css}", drawn, "images")
    else:
        drawn = [_removal(line, thumbs) for line in entry["first_removed"][:per_gallery]]
        out += gallery("The first {} removed", "pairs removed-side", drawn, "samples")
    out.append("</section>")
    return "\n".join(out)


def _measured(example: dict, unit: str, thumbs: Thumbnails) -> str | None:
    """An image with its measure (the gallery's heading names it), its path and its sample's id."""
    return thumbs.figure([example["image"]], f"<b>{example['value']:g}</b>{escape(unit)}<br>"
                         f"{text(example['image'])} ({text(example['id'])})", "one")


def _removal(line: dict, thumbs: Thumbnails) -> str | None:
    image = line.get("image")
    images = image[:1] if isinstance(image, list) else [image] if isinstance(image, str) else []
    return thumbs.figure(images, f"{text(line.get('reason', ''))}<br>{text(image)} ({text(line.get('id'))})", "one")
