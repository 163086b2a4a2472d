"""The dedup report: report.json (everything), report.md (the study's tables) and a
self-contained report.html (thumbnails of duplicate pairs, similarity histograms).
Every string that comes from the data is escaped."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from .atomic import Outputs
from .images import ImageLocator, UnreadableImage, load_rgb
from .progress import ProgressBar
from .sample import TEXT_ONLY, source_of

HTML_PAIRS_PER_SOURCE = 24
TABLE_COLUMNS = ("samples", "unique_images", "unreadable", "similar", "kept", "samples_removed")
HISTOGRAM_BINS = np.round(np.arange(0.0, 1.0001, 0.02), 2)


def build_report(run) -> dict:
    """Everything report.json holds, from a :class:`curate.deduplicate.DedupResult`."""
    found = run.duplicates
    images = found.images
    failures = found.embedding.failures
    report = run.report
    members_of: dict[str, list[int]] = {}
    for i, source in enumerate(images.sources):
        members_of.setdefault(source, []).append(i)
    members_of = {k: np.asarray(v, np.int64) for k, v in members_of.items()}
    unreadable = {name: sum(int(i) in failures for i in members) for name, members in members_of.items()}
    sample_sources = images.sample_sources
    names = sorted(sample_sources, key=lambda s: (s == TEXT_ONLY, -sample_sources[s], s))
    no_members = np.zeros(0, np.int64)
    samples_removed = found.samples_removed()
    tables = []
    for result in found.thresholds:
        rows = []
        removed_samples = samples_removed[result.threshold]
        for name in names:
            members = members_of.get(name, no_members)
            similar = int((result.duplicate_of[members] >= 0).sum())
            rows.append({"source": name, "samples": sample_sources[name], "unique_images": len(members),
                         "unreadable": unreadable.get(name, 0), "similar": similar,
                         "kept": len(members) - similar, "samples_removed": removed_samples.get(name, 0)})
        total = {key: sum(r[key] for r in rows) for key in TABLE_COLUMNS}
        rows.append({"source": "total", **total})
        tables.append({"threshold": result.threshold, "table": rows,
                       "pairs": sampled_pairs(run, result, run.sample_every)})
    embed = found.embedding
    settings = dict(found.settings(), sample_every=run.sample_every, drop_unreadable=run.drop_unreadable)
    return {
        "settings": settings,
        "inputs": report.inputs, "output": report.output,
        "removed_file": str(run.removed_path),
        "rejects_file": report.rejects_path,
        "accounting": {"input": report.records_in, "written": report.written, "removed": report.removed,
                       "rejected": report.rejected},
        "stages_seconds": {k: round(v, 3) for k, v in run.stage_seconds.items()},
        "embedding": {"unique_images": len(images.paths), "embedded": embed.embedded, "cached": embed.cached,
                      "unreadable": len(failures),
                      "images_per_second": round(embed.embedded / embed.seconds, 2) if embed.seconds else None},
        "thresholds": tables,
        "unreadable": [{"image": images.paths[i], "reason": reason, "first_id": images.first_id[i]}
                       for i, reason in sorted(failures.items())],
        "nearest_neighbour_histogram": histograms(found),
    }


def removed_pairs(run, result) -> list[dict]:
    images = run.duplicates.images
    out = []
    for i in np.flatnonzero(result.duplicate_of >= 0):
        j = int(result.duplicate_of[i])
        out.append({"image": images.paths[i], "id": images.first_id[i], "duplicate_of": images.paths[j],
                    "duplicate_of_id": images.first_id[j], "score": round(float(result.score[i]), 4),
                    "source": source_of(images.paths[i])})
    return out


def sampled_pairs(run, result, every: int) -> list[dict]:
    """Every N-th removed image with the kept image it duplicates (as in the study)."""
    return removed_pairs(run, result)[::max(1, every)]


def histograms(found) -> dict:
    """Nearest-neighbour similarity counts per source (within the scope group)."""
    out = {}
    sources = np.asarray(found.images.sources, dtype=object)
    for name in sorted(set(sources)):
        values = found.nn_similarity[(sources == name) & ~np.isnan(found.nn_similarity)]
        counts, _ = np.histogram(np.clip(values, 0, 1), bins=HISTOGRAM_BINS)
        out[name] = {"bins": HISTOGRAM_BINS.tolist(), "counts": counts.tolist(), "images": int(len(values))}
    return out


def render_markdown(data: dict) -> str:
    lines = ["# curate dedup report", ""]
    s = data["settings"]
    lines += [f"- inputs: {_md(', '.join(data['inputs']))}", f"- output: {_md(data['output'])}",
              f"- embedder: {_md(s['embedder'])} ({_md(s['model'])}, {s['dim']}-d), index: {_md(s['index'])}, "
              f"scope: {_md(s['scope'])}",
              f"- records: {data['accounting']['input']:,} in = {data['accounting']['written']:,} written + "
              f"{data['accounting']['removed']:,} removed + {data['accounting']['rejected']:,} rejected",
              f"- images: {data['embedding']['unique_images']:,} unique, {data['embedding']['embedded']:,} embedded, "
              f"{data['embedding']['cached']:,} from cache, {data['embedding']['unreadable']:,} unreadable", ""]
    for block in data["thresholds"]:
        lines += [f"## Threshold {block['threshold']}", "",
                  "| source | samples | unique images | similar | kept | samples removed |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in block["table"]:
            lines.append(f"| {_md(row['source'])} | {row['samples']:,} | {row['unique_images']:,} | "
                         f"{row['similar']:,} | {row['kept']:,} | {row['samples_removed']:,} |")
        lines += ["", f"Sampled pairs (every {s['sample_every']}-th removed image):", "",
                  "| removed image | id | kept image | id | score |", "| --- | --- | --- | --- | ---: |"]
        for p in block["pairs"]:
            lines.append(f"| {_md(p['image'])} | {_md(p['id'])} | {_md(p['duplicate_of'])} | "
                         f"{_md(p['duplicate_of_id'])} | {p['score']:.4f} |")
        lines.append("")
    if data["unreadable"]:
        lines += ["## Unreadable images", "", "| image | reason |", "| --- | --- |"]
        lines += [f"| {_md(u['image'])} | {_md(u['reason'])} |" for u in data["unreadable"]]
    return "\n".join(lines) + "\n"


def _md(value) -> str:
    return escape(str(value)).replace("|", "\\|").replace("\n", " ")


class Thumbnails:
    def __init__(self, image_root: Path, size: int = 160):
        self.locator = ImageLocator(image_root)
        self.size = size
        self.cache: dict[str, str | None] = {}

    def data_uri(self, relative: str) -> str | None:
        if relative not in self.cache:
            try:
                image = load_rgb(self.locator.path(relative), self.size)
                image.thumbnail((self.size, self.size))
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=75)
                self.cache[relative] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
            except (UnreadableImage, OSError):
                self.cache[relative] = None
        return self.cache[relative]


def histogram_svg(hist: dict, thresholds: list[float]) -> str:
    counts = hist["counts"]
    width, height, pad = 640, 170, 24
    top = max(counts) or 1
    bar_w = (width - 2 * pad) / len(counts)
    parts = [f'<svg class="hist" width="{width}" height="{height + 20}" role="img" '
             f'aria-label="nearest-neighbour similarity histogram">']
    for k, c in enumerate(counts):
        h = (height - pad) * c / top
        x = pad + k * bar_w
        parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}">'
                     f'<title>{hist["bins"][k]:.2f}–{hist["bins"][k + 1]:.2f}: {c}</title></rect>')
    for tick in range(0, 11):
        x = pad + tick / 10 * (width - 2 * pad)
        parts.append(f'<text x="{x:.1f}" y="{height + 15}" text-anchor="middle">{tick / 10:.1f}</text>')
    for t in thresholds:
        x = pad + max(0.0, min(1.0, t)) * (width - 2 * pad)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" class="thr"/>'
                     f'<text x="{x + 3:.1f}" y="12" class="thr-label">{t}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(run, data: dict, show_progress: bool = False) -> str:
    thumbs = Thumbnails(run.duplicates.found.image_root)
    thresholds = [block["threshold"] for block in data["thresholds"]]
    s, acc = data["settings"], data["accounting"]
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8><title>curate dedup report</title>",
           "<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;"
           "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,"
           "th:first-child{text-align:left}.pairs{display:flex;flex-wrap:wrap;gap:12px}.pair{border:1px solid "
           "#ddd;padding:6px;width:340px}.pair img{width:160px;height:160px;object-fit:contain;background:#eee}"
           ".pair .cap{font-size:12px;word-break:break-all}.hist rect{fill:#4a78c2}.hist .thr{stroke:#c22;"
           "stroke-dasharray:4}.hist text{font-size:11px}.thr-label{fill:#c22}.missing{display:inline-block;"
           "width:160px;height:160px;background:#fdd}</style></head><body>",
           "<h1>curate dedup report</h1>",
           f"<p>{escape(', '.join(data['inputs']))} → {escape(data['output'])}<br>embedder "
           f"<b>{escape(s['embedder'])}</b> ({escape(s['model'])}, {s['dim']}-d), index <b>{escape(s['index'])}</b>,"
           f" scope <b>{escape(s['scope'])}</b>; output filtered at threshold <b>{thresholds[0]}</b></p>",
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
    pairs_by_threshold = [removed_pairs(run, result) for result in run.duplicates.thresholds]
    sources = [row["source"] for row in data["thresholds"][0]["table"]
               if row["source"] in data["nearest_neighbour_histogram"]]
    with ProgressBar("report", len(sources), unit="sources", enabled=show_progress) as bar:
        for name in sources:
            hist = data["nearest_neighbour_histogram"][name]
            out.append(f"<section class=source><h2>{escape(name)}</h2><p>Similarity of each of the "
                       f"{hist['images']:,} images to its nearest neighbour (dashed: thresholds)</p>")
            out.append(histogram_svg(hist, thresholds))
            for threshold, pairs in zip(thresholds, pairs_by_threshold):
                mine = sorted((p for p in pairs if p["source"] == name), key=lambda p: p["score"])
                if not mine:
                    continue
                shown = [mine[int(k)] for k in np.unique(np.linspace(0, len(mine) - 1,
                                                                     min(len(mine), HTML_PAIRS_PER_SOURCE)).round())]
                out.append(f"<h3>Threshold {threshold}: {len(mine):,} removed; {len(shown)} pairs from the lowest "
                           f"score to the highest</h3><div class=pairs>")
                for p in shown:
                    out.append("<div class=pair>" + _img(thumbs, p["image"]) + _img(thumbs, p["duplicate_of"]) +
                               f"<div class=cap>score <b>{p['score']:.4f}</b><br>removed: {escape(str(p['image']))}"
                               f" ({escape(str(p['id']))})<br>kept: {escape(str(p['duplicate_of']))} "
                               f"({escape(str(p['duplicate_of_id']))})</div></div>")
                out.append("</div>")
            out.append("</section>")
            bar.advance(1)
    if data["unreadable"]:
        out.append("<h2>Unreadable images</h2><table><tr><th>image</th><th>reason</th></tr>")
        out += [f"<tr><td>{escape(u['image'])}</td><td>{escape(u['reason'])}</td></tr>" for u in data["unreadable"]]
        out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _img(thumbs: Thumbnails, relative: str) -> str:
    uri = thumbs.data_uri(relative)
    if uri is None:
        return f'<span class=missing title="{escape(relative)}"></span>'
    return f'<img src="{uri}" alt="{escape(relative)}">'


@dataclass
class ReportFiles:
    """Where a dedup run's report goes; claimed with the run's other outputs."""

    folder: Path
    removed: Path
    json: Path
    markdown: Path
    html: Path

    @classmethod
    def claim(cls, outputs: Outputs, folder: Path) -> "ReportFiles":
        files = cls(folder, folder / "removed.jsonl", folder / "report.json", folder / "report.md",
                    folder / "report.html")
        for role, path in (("removed list", files.removed), ("report", files.json), ("report", files.markdown),
                           ("report", files.html)):
            outputs.claim(path, role, overwrite=True)
        return files


def write_reports(run, files: ReportFiles, outputs: Outputs, show_progress: bool = False) -> dict:
    """report.json, report.md and report.html, into ``outputs`` (they appear when it commits)."""
    data = build_report(run)
    json.dump(data, outputs.open(files.json), indent=1, ensure_ascii=False, default=str)
    outputs.open(files.markdown).write(render_markdown(data))
    outputs.open(files.html).write(render_html(run, data, show_progress))
    return data
