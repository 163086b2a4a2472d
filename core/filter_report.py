"""The filter report (``curate filter --report DIR``): report.json (everything: per filter its
setting, its removals per source, the first removals and, for a threshold filter, the images
nearest its threshold on both sides), report.md (the per-filter, per-source table) and
report.html (:mod:`curate.filter_report_html`). The files are claimed and committed with the
run's other outputs."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .atomic import Outputs
from .jsonstream import dumps
from .stages import Stage

NEAR_THRESHOLD = 12             # images kept per side of a threshold, the nearest to it
MOST_MARKDOWN_ROWS = 200        # sources in report.md's table; report.json has them all


class NearThreshold:
    """The images a threshold filter measured whose value lies nearest its threshold: the
    ``size`` nearest among those it removed and among those it kept, in two small heaps, so a
    run of any size costs a few dozen entries. ``add`` takes the entry as a function, called
    only when the image is near enough to be kept."""

    def __init__(self, threshold: float, size: int = NEAR_THRESHOLD):
        self.threshold = threshold
        self.size = size
        self.sides: dict[bool, list] = {True: [], False: []}       # removed? -> heap of (-distance, -seq, entry)
        self.seq = itertools.count()

    def add(self, value: float, removed: bool, entry) -> None:
        heap = self.sides[removed]
        distance = abs(value - self.threshold)
        if len(heap) == self.size and distance >= -heap[0][0]:
            return
        item = (-distance, -next(self.seq), {**entry(), "value": round(value, 4)})
        if len(heap) < self.size:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)

    def nearest(self, removed: bool) -> list[dict]:
        """The side's entries, nearest the threshold first."""
        return [entry for _, _, entry in sorted(self.sides[removed], reverse=True)]

    def as_json(self) -> dict:
        return {"removed": self.nearest(True), "kept": self.nearest(False)}


class MeasureHistogram:
    """Where a threshold filter's measure fell: counts in ``bins`` equal steps from ``low`` to
    ``high`` (of the logarithm with ``log``, for measures such as a side in pixels), the values
    beyond counted in the end bins. One comparison per image; a run of any size, a few numbers."""

    def __init__(self, low: float, high: float, bins: int = 40, log: bool = False):
        self.log = log
        if log:
            step = (math.log10(high) - math.log10(low)) / bins
            self.edges = [10 ** (math.log10(low) + k * step) for k in range(bins + 1)]
        else:
            self.edges = [low + (high - low) * k / bins for k in range(bins + 1)]
        self.counts = [0] * bins

    def add(self, value: float) -> None:
        k = bisect.bisect_right(self.edges, value) - 1
        self.counts[min(max(k, 0), len(self.counts) - 1)] += 1

    def as_json(self) -> dict:
        return {"edges": [float(f"{edge:.4g}") for edge in self.edges], "counts": self.counts, "log": self.log}


class CountSources(Stage):
    """Counts the samples of each source that reach the filters (the report's first column)."""

    name = "sources"

    def __init__(self):
        super().__init__()
        self.samples: Counter = Counter()

    def process(self, items, context):
        for item in items:
            self.samples[item.sample.source] += 1
            yield item


@dataclass
class FilterReportFiles:
    """Where a filter run's report goes; claimed with the run's other outputs."""

    folder: Path
    json: Path
    markdown: Path
    html: Path

    @classmethod
    def claim(cls, outputs: Outputs, folder: Path) -> "FilterReportFiles":
        folder = Path(folder)
        files = cls(folder, folder / "report.json", folder / "report.md", folder / "report.html")
        for path in (files.json, files.markdown, files.html):
            outputs.claim(path, "report", overwrite=True)
        return files


def build_report(report, filters, sources: CountSources, removed_path) -> dict:
    """Everything report.json holds, from the run's :class:`~curate.engine.Report`, its filter
    stages and the samples per source that reached them."""
    names = [name for name, _ in sources.samples.most_common()]
    return {
        "inputs": report.inputs, "output": report.output, "removed_file": str(removed_path),
        "rejects_file": report.rejects_path,
        "accounting": {"input": report.records_in, "written": report.written, "removed": report.removed,
                       "rejected": report.rejected},
        "sources": {name: sources.samples[name] for name in names},
        "filters": [filter_entry(stage, names) for stage in filters],
    }


def filter_entry(stage, sources: list[str]) -> dict:
    by_source = stage.removed_by_source
    return {"name": stage.name, "description": stage.description, "setting": stage.setting,
            "removed": stage.tally.removed,
            "by_source": {name: by_source[name] for name in [*sources, *sorted(set(by_source) - set(sources))]
                          if by_source[name]},
            "first_removed": stage.examples, **stage.details()}


def table_rows(data: dict) -> list[dict]:
    """The per-source table: samples, then what each filter removed, then what is left; the
    last row is the total."""
    names = [f["name"] for f in data["filters"]]
    rows = []
    for source, samples in data["sources"].items():
        removed = [f["by_source"].get(source, 0) for f in data["filters"]]
        rows.append({"source": source, "samples": samples, "removed": removed, "left": samples - sum(removed)})
    total = {"source": "total", "samples": sum(r["samples"] for r in rows),
             "removed": [sum(r["removed"][k] for r in rows) for k in range(len(names))]}
    total["left"] = total["samples"] - sum(total["removed"])
    return rows + [total]


def threshold_text(entry: dict) -> str:
    """What a filter removes, from its details: ``99th percentile of brightness under 0.17`` for
    a threshold filter, else its setting, or its name."""
    if "threshold" in entry:
        return f"{entry['measure']} {entry['removes']} {entry['threshold']:g}{entry.get('unit', '')}"
    if "limit" in entry:
        return f"over {entry['limit']:,} {entry['unit']}"
    return entry["name"] + (f"={entry['setting']}" if entry["setting"] is not None else "")


def render_markdown(data: dict) -> str:
    from .report import _md, _md_data       # dedup's escaping and cutting (imported late: numpy)
    acc = data["accounting"]
    lines = ["# curate filter report", "",
             f"- inputs: {', '.join(_md_data(p) for p in data['inputs'])}", f"- output: {_md_data(data['output'])}",
             f"- records: {acc['input']:,} in = {acc['written']:,} written + {acc['removed']:,} removed + "
             f"{acc['rejected']:,} rejected", f"- removed samples, each with why: {_md_data(data['removed_file'])}",
             "", "## Filters", "", "| filter | removes | removed |", "| --- | --- | ---: |"]
    lines += [f"| {_md_data(f['name'])} | {_md(threshold_text(f))} | {f['removed']:,} |" for f in data["filters"]]
    names = [f["name"] for f in data["filters"]]
    lines += ["", "## Removed per source", "",
              "| source | samples | " + " | ".join(_md_data(n) for n in names) + " | left |",
              "| --- | ---: | " + "---: | " * len(names) + "---: |"]
    *rows, total = table_rows(data)
    for row in [*rows[:MOST_MARKDOWN_ROWS], total]:
        lines.append(f"| {_md_data(row['source'])} | {row['samples']:,} | "
                     + " | ".join(f"{n:,}" for n in row["removed"]) + f" | {row['left']:,} |")
    if len(rows) > MOST_MARKDOWN_ROWS:
        lines += ["", f"{len(rows) - MOST_MARKDOWN_ROWS:,} more sources are in report.json."]
    return "\n".join(lines) + "\n"


def write_reports(files: FilterReportFiles, outputs: Outputs, report, filters, sources: CountSources,
                  removed_path, image_root) -> dict:
    """report.json, report.md and report.html, into ``outputs`` (they appear when it commits)."""
    from .filter_report_html import render_html
    data = build_report(report, filters, sources, removed_path)
    outputs.open(files.json).write(dumps(data, indent=1, default=str))
    outputs.open(files.markdown).write(render_markdown(data))
    outputs.open(files.html).write(render_html(data, image_root))
    return data
