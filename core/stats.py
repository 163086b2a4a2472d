"""Per-source summary of a dataset, for ``curate inspect``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

from .sample import Sample

PLACEMENTS = ("prefix", "suffix", "middle", "none")


@dataclass
class SourceStats:
    source: str
    samples: int = 0
    unique_images: int = 0
    text_only: int = 0
    turns: int = 0
    placement: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLACEMENTS, 0))

    def as_json(self) -> dict:
        return asdict(self)


def summarise(samples: Iterable[Sample]) -> list[SourceStats]:
    """One row per source dataset, largest first, then a total row."""
    rows: dict[str, SourceStats] = {}
    images: dict[str, set] = defaultdict(set)
    total = SourceStats("total")
    all_images = set()
    for sample in samples:
        source = sample.source
        row = rows.get(source)
        if row is None:
            row = rows[source] = SourceStats(source)
        placement = sample.image_placement
        for r in (row, total):
            r.samples += 1
            r.turns += len(sample.conversations)
            r.placement[placement] += 1
        if sample.image is None and sample.video is None:
            row.text_only += 1
            total.text_only += 1
        else:
            keys = [str(image) for image in sample.images]     # the keys, not images held as bytes
            images[source].update(keys)
            all_images.update(keys)
    for source, row in rows.items():
        row.unique_images = len(images[source])
    total.unique_images = len(all_images)
    return sorted(rows.values(), key=lambda r: (-r.samples, r.source)) + [total]


def summarise_inputs(inputs, on_error: str = "fail", show_progress: bool = False):
    """``summarise`` over every input, and the sink that counted the bad records (with
    ``on_error="skip"`` they are left out of the rows)."""
    from .engine import RejectSink
    from .progress import ProgressBar
    rejected = RejectSink(on_error)
    with ProgressBar("inspect", inputs.total_bytes, enabled=show_progress) as bar:
        rows = summarise(bar.count(inputs.samples(progress=bar.advance, reject=rejected)))
    return rows, rejected
