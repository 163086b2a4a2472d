"""The unique images of a run's inputs, in order of first appearance, with what dedup needs
to know of each: the samples that hold it, its source, the first sample's id, and (with
``--against``) the evaluation images that follow the training ones."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .engine import Inputs, RejectSink
from .image_source import ImageBytes, Spool
from .progress import ProgressBar
from .sample import source_of


@dataclass
class ImageTable:
    """Unique images in order of first appearance, with what the report needs of each."""

    paths: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    single_samples: list[int] = field(default_factory=list)  # samples whose only image this is
    first_id: list = field(default_factory=list)             # id of the first sample using it
    sources: list[str] = field(default_factory=list)         # source dataset of each image
    multi_samples: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (source, images)
    sample_sources: dict[str, int] = field(default_factory=dict)   # samples per source dataset
    text_only: int = 0
    video_samples: int = 0          # samples that hold videos: carried, never decoded or compared
    videos: int = 0
    spool: Spool | None = None          # where images held as bytes wait for the embedder
    spool_folder: str | None = None     # its folder (None: the system's temporary folder)
    # --against: the evaluation images follow the training ones, from position ``training`` on,
    # each with the evaluation input it comes from (None: every image is a training image)
    training: int | None = None
    against_input: list[str] = field(default_factory=list)

    @property
    def training_count(self) -> int:
        return len(self.paths) if self.training is None else self.training

    def against_of(self, i: int) -> str | None:
        """The evaluation input image ``i`` comes from, or None for a training image."""
        return None if self.training is None or i < self.training else self.against_input[i - self.training]

    def add_against(self, against: Inputs) -> None:
        """Append the unique images of the evaluation inputs after the training images: each
        gets a position of its own, so an image in both is a pair of identical images (and its
        training samples are removed). Evaluation records are read, never written: a bad one
        stops the run (it could not be accounted for)."""
        self.training = len(self.paths)
        seen: set[str] = set()
        named = dict(zip(against.paths, against.sources))
        for item in against.items(reject=RejectSink("fail")):
            for path in item.sample.images:
                if path not in seen:
                    seen.add(str(path))
                    self._append(path, item.sample.id)
                    self.against_input.append(str(named[item.path]))

    def samples_matched(self, duplicate_of: np.ndarray) -> dict[str, dict[str, int]]:
        """Per evaluation input: the training images removed as a duplicate of one of its images,
        and the training samples removed with one of them (counted for its first such image)."""
        counts: dict[str, dict[str, int]] = {name: {"images": 0, "samples": 0} for name in dict.fromkeys(self.against_input)}
        if self.training is None:
            return counts
        removed = duplicate_of >= 0
        against = [self.against_of(int(j)) if j >= 0 else None for j in duplicate_of.tolist()]
        for i in range(self.training):
            if against[i]:
                counts[against[i]]["images"] += 1
                counts[against[i]]["samples"] += self.single_samples[i]
        for _, positions in self.multi_samples:
            matched = [against[i] for i in positions if against[i]]
            if matched and all(removed[i] for i in positions):
                counts[matched[0]]["samples"] += 1
        return counts

    def add_sample(self, sample) -> None:
        self.sample_sources[sample.source] = self.sample_sources.get(sample.source, 0) + 1
        if sample.video is not None:
            self.video_samples += 1
            self.videos += len(sample.videos)
        elif sample.image is None:
            self.text_only += 1
        positions = tuple(self._add(path, sample.id) for path in sample.images)
        if sample.video is not None:
            return                      # never removed (see Decisions.removal): not counted as removable
        if len(positions) == 1:
            self.single_samples[positions[0]] += 1
        elif positions:
            self.multi_samples.append((sample.source, positions))

    def _add(self, path: str, sample_id) -> int:
        i = self.position.get(path)
        if i is None:
            i = self.position[str(path)] = self._append(path, sample_id)     # the key only: never an image's bytes
        return i

    def _append(self, path: str, sample_id) -> int:
        """A new position for ``path`` (its bytes spooled to disk when it holds them)."""
        if isinstance(path, ImageBytes) and path.data is not None:
            if self.spool is None:
                self.spool = Spool(self.spool_folder)
            path = self.spool.keep(path)      # on disk, not in memory, until it is embedded
        self.paths.append(path)
        self.single_samples.append(0)
        self.first_id.append(sample_id)
        self.sources.append(source_of(path))
        return len(self.paths) - 1

    def samples_removed(self, removed: np.ndarray) -> dict[str, int]:
        """Samples per source whose every image is removed."""
        per_source: dict[str, int] = {}
        for i in np.flatnonzero(removed):
            if self.single_samples[i]:
                source = self.sources[i]
                per_source[source] = per_source.get(source, 0) + self.single_samples[i]
        for source, positions in self.multi_samples:
            if all(removed[i] for i in positions):
                per_source[source] = per_source.get(source, 0) + 1
        return per_source


def scan(inputs: Inputs, *, on_error: str = "fail", show_progress: bool = False,
         spool_folder=None) -> ImageTable:
    """The unique images of the inputs, in order of first appearance. Bad records stop the scan
    under ``on_error="fail"``; otherwise they are left to the writing pass, which accounts for them.
    ``spool_folder``: where images held as bytes wait for the embedder (on Ray, a folder every
    node reads: the cache's)."""
    images = ImageTable(spool_folder=spool_folder)
    with ProgressBar("scan", inputs.total_bytes, enabled=show_progress) as bar:
        for sample in bar.count(inputs.samples(progress=bar.advance, reject=RejectSink(on_error))):
            images.add_sample(sample)
    return images
