"""The dedup report: report.json (everything), report.md (the study's tables) and a
self-contained report.html (see :mod:`curate.report_html`). Besides what was removed it
records what was kept closest to the line, so a person can judge recall and a safe threshold.
Every string that comes from the data is escaped."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from .atomic import Outputs
from .filter_report import filter_entry, threshold_text
from .jsonstream import dumps
from .report_html import render_html, shown
from .sample import TEXT_ONLY, source_of
from .similarity import CURVE_THRESHOLDS, kept_counts

KEPT_PAIRS_PER_SOURCE = 24
LOOKED_ALIKE_LISTED = 1000      # per threshold in report.json, most similar first
TABLE_COLUMNS = ("samples", "unique_images", "unreadable", "similar", "kept", "samples_removed")
HISTOGRAM_BINS = np.round(np.arange(0.0, 1.0001, 0.02), 2)


def build_report(run, pairs_by_threshold: list[list[dict]]) -> dict:
    """Everything report.json holds, from a :class:`curate.deduplicate.DedupResult` and each
    threshold's :func:`removed_pairs` (listed once, for the HTML report too)."""
    found = run.duplicates
    images = found.images
    failures = found.embedding.failures
    report = run.report
    members_of: dict[str, list[int]] = {}
    for i, source in enumerate(images.sources[:images.training_count]):    # not the evaluation images
        members_of.setdefault(source, []).append(i)
    members_of = {k: np.asarray(v, np.int64) for k, v in members_of.items()}
    unreadable = {name: sum(int(i) in failures for i in members) for name, members in members_of.items()}
    sample_sources = images.sample_sources
    names = sorted(sample_sources, key=lambda s: (s == TEXT_ONLY, -sample_sources[s], s))
    no_members = np.zeros(0, np.int64)
    samples_removed = found.samples_removed()
    tables = []
    for result, pairs in zip(found.thresholds, pairs_by_threshold):
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
                       "against": images.samples_matched(result.duplicate_of),
                       "against_pairs": [pair for pair in pairs if pair.get("against")][:LOOKED_ALIKE_LISTED],
                       "pairs": pairs[::max(1, run.sample_every)],
                       "looked_alike_kept": looked_alike_kept(found, result)})
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
                      "runtime": embed.runtime, "unreadable": len(failures),
                      "images_per_second": round(embed.embedded / embed.seconds, 2) if embed.seconds else None},
        "thresholds": tables,
        "filters": [filter_entry(stage, names) for stage in run.filters],
        "unreadable": [{"image": images.paths[i], "reason": reason, "first_id": images.first_id[i]}
                       for i, reason in sorted(failures.items())],
        "nearest_neighbour_histogram": histograms(found, members_of),
        "kept_curve": kept_curves(found, members_of),
        "closest_kept_pairs": closest_kept_pairs(found, members_of),
    }


def removed_pairs(run, result) -> list[dict]:
    found = run.duplicates
    images = found.images
    out = []
    for i in np.flatnonzero(result.duplicate_of >= 0):
        j = int(result.duplicate_of[i])
        out.append({"image": images.paths[i], "id": images.first_id[i], "duplicate_of": images.paths[j],
                    "duplicate_of_id": images.first_id[j], **found.match(result, i),
                    "source": source_of(images.paths[i])})
    return out


def looked_alike_kept(found, result) -> list[dict]:
    """Pairs a signal proposed and the verifier refused (both images stayed): what verification
    saved, most similar first, for a person to judge (one per image that stayed)."""
    images, names = found.images, found.signal_names
    out = []
    for looked in sorted(result.refused, key=lambda looked: -looked.similarity)[:LOOKED_ALIKE_LISTED]:
        i, j = looked.candidate, looked.kept
        detail = str(looked.verdict.detail)[:200]          # a plugin's words: bounded
        out.append({"image": images.paths[i], "id": images.first_id[i], "looked_like": images.paths[j],
                    "looked_like_id": images.first_id[j], "signal": names[looked.signal],
                    "score": round(float(looked.similarity), 6), "verified_by": found.search.verify,
                    "verify_score": _finite(looked.verdict.score),
                    "why_kept": f"different content ({detail})" if detail else "different content",
                    "source": source_of(images.paths[i])})
    return out


def _finite(value: float):
    return round(float(value), 4) if np.isfinite(value) else None


def histograms(found, members_of: dict[str, np.ndarray]) -> dict:
    """Nearest-neighbour similarity counts per source (within the scope group)."""
    out = {}
    nn = found.neighbourhood.nn_similarity
    for name in sorted(members_of):
        values = nn[members_of[name]]
        values = values[~np.isnan(values)]
        counts, _ = np.histogram(np.clip(values, 0, 1), bins=HISTOGRAM_BINS)
        out[name] = {"bins": HISTOGRAM_BINS.tolist(), "counts": counts.tolist(), "images": int(len(values))}
    return out


def kept_curves(found, members_of: dict[str, np.ndarray]) -> dict:
    """Per source, how many of its embedded images the walk would keep at each embedding
    threshold from 0.50 to 1.00 (the embedding alone, from each image's nearest neighbours)."""
    ok = found.embedding.ok
    out = {}
    for name, members in members_of.items():
        embedded = members[ok[members]]
        if len(embedded):
            out[name] = {"thresholds": CURVE_THRESHOLDS.tolist(), "images": int(len(embedded)),
                         "kept": kept_counts(found.neighbourhood.kept_bits[embedded])}
    return out


def closest_kept_pairs(found, members_of: dict[str, np.ndarray], limit: int = KEPT_PAIRS_PER_SOURCE) -> dict:
    """Per source, the most similar pairs that stayed (both images kept at every threshold),
    most similar first: what the lowest threshold only just let through."""
    hood, images = found.neighbourhood, found.images
    out = {}
    for name, members in members_of.items():
        mine = members[hood.closest_kept[members] >= 0]
        order = mine[np.argsort(-hood.closest_kept_similarity[mine], kind="stable")]
        pairs, seen = [], set()
        for i in order.tolist():
            j = int(hood.closest_kept[i])
            if (min(i, j), max(i, j)) in seen:
                continue
            seen.add((min(i, j), max(i, j)))
            pairs.append({"image": images.paths[i], "id": images.first_id[i], "neighbour": images.paths[j],
                          "neighbour_id": images.first_id[j],
                          "score": round(float(hood.closest_kept_similarity[i]), 4)})
            if len(pairs) == limit:
                break
        out[name] = pairs
    return out


def render_markdown(data: dict) -> str:
    lines = ["# curate dedup report", ""]
    s = data["settings"]
    lines += [f"- removes: {_md(s['intent'])}",
              f"- inputs: {_md(', '.join(data['inputs']))}", f"- output: {_md(data['output'])}",
              f"- embedder: {_md(s['embedder'])} ({_md(s['model'])}, {s['dim']}-d), index: {_md(s['index'])}, "
              f"scope: {_md(s['scope'])}",
              f"- records: {data['accounting']['input']:,} in = {data['accounting']['written']:,} written + "
              f"{data['accounting']['removed']:,} removed + {data['accounting']['rejected']:,} rejected",
              f"- images: {data['embedding']['unique_images']:,} unique, {data['embedding']['embedded']:,} embedded, "
              f"{data['embedding']['cached']:,} from cache, {data['embedding']['unreadable']:,} unreadable"]
    lines += [f"- filter {_md_data(f['name'])} ({_md(threshold_text(f))}): removed {f['removed']:,} samples"
              for f in data.get("filters", ())]
    lines.append("")
    for block in data["thresholds"]:
        lines += [f"## Threshold {block['threshold']}", "",
                  "| source | samples | unique images | similar | kept | samples removed |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in block["table"]:
            lines.append(f"| {_md_data(row['source'])} | {row['samples']:,} | {row['unique_images']:,} | "
                         f"{row['similar']:,} | {row['kept']:,} | {row['samples_removed']:,} |")
        for name, matched in block["against"].items():
            lines.append(f"\nAgainst {_md_data(name)}: {matched['samples']:,} training samples removed "
                         f"({matched['images']:,} images matched its images)")
        against = block["against_pairs"]
        if against:
            lines += ["", "| removed training image | id | evaluation image | evaluation input | score |",
                      "| --- | --- | --- | --- | ---: |"]
            lines += [f"| {_md_data(p['image'])} | {_md_data(p['id'])} | {_md_data(p['duplicate_of'])} | "
                      f"{_md_data(p['against'])} | {p['score']:.4f} |" for p in against[:50]]
        lines += ["", f"Sampled pairs (every {s['sample_every']}-th removed image):", "",
                  "| removed image | id | kept image | id | score |", "| --- | --- | --- | --- | ---: |"]
        for p in block["pairs"]:
            lines.append(f"| {_md_data(p['image'])} | {_md_data(p['id'])} | {_md_data(p['duplicate_of'])} | "
                         f"{_md_data(p['duplicate_of_id'])} | {p['score']:.4f} |")
        looked = block["looked_alike_kept"]
        if looked:
            lines += ["", f"Looked alike, kept: different content ({len(looked):,} pairs the signals proposed and "
                      f"verifier {_md(s['verify'])} refused; the 20 most similar):", "",
                      "| image | looked like | signal | score | verifier score | why kept |",
                      "| --- | --- | --- | ---: | ---: | --- |"]
            lines += [f"| {_md_data(p['image'])} | {_md_data(p['looked_like'])} | {_md(p['signal'])} | "
                      f"{p['score']:.4f} | {_md(p['verify_score'])} | {_md(p['why_kept'])} |" for p in looked[:20]]
        lines.append("")
    lines += ["## Closest pairs kept", "", "Per source, the most similar pairs that both stayed (embedding similarity)."
              , "", "| source | image | nearest kept image | score |", "| --- | --- | --- | ---: |"]
    for name, pairs in data["closest_kept_pairs"].items():
        lines += [f"| {_md_data(name)} | {_md_data(p['image'])} | {_md_data(p['neighbour'])} | {p['score']:.4f} |"
                  for p in pairs[:5]]
    lines.append("")
    if data["unreadable"]:
        lines += ["## Unreadable images", "", "| image | reason |", "| --- | --- |"]
        lines += [f"| {_md_data(u['image'])} | {_md_data(u['reason'])} |" for u in data["unreadable"]]
    return "\n".join(lines) + "\n"


def _md(value) -> str:
    return escape(str(value)).replace("|", "\\|").replace("\n", " ")


def _md_data(value) -> str:
    """A string from the data (an id, a path, a source, a reason), cut as the HTML page cuts it."""
    return _md(shown(value))


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
    pairs_by_threshold = [removed_pairs(run, result) for result in run.duplicates.thresholds]
    data = build_report(run, pairs_by_threshold)
    outputs.open(files.json).write(dumps(data, indent=1, default=str))
    outputs.open(files.markdown).write(render_markdown(data))
    outputs.open(files.html).write(render_html(run, data, pairs_by_threshold, show_progress))
    return data
