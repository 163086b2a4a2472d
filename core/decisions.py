"""Dedup's decisions on disk: one row per unique image, kept or removed, and why.

``curate dedup`` identifies near-duplicates, writes these decisions (``decisions.jsonl`` in its
report folder, or alone with ``--decisions-only``) and applies them; ``curate apply`` applies a
decisions file to any input that names the same images: the same data re-run, reviewed and
edited by hand (a row turned to ``keep``), or exported in another format. The removal can then
be re-run on its own, reviewed, or applied to another export of the same data (as NeMo
Curator writes the ids to remove and applies them in a separate stage).

The file is JSON Lines. Its first line says what it is and how it was made::

    {"curate_decisions": 1, "threshold": 0.8, "verify": "content", "signals": [...], ...}

and each further line is one image, in order of first appearance::

    {"image": "coco/1.jpg", "decision": "keep"}
    {"image": "coco/2.jpg", "decision": "remove", "duplicate_of": "coco/1.jpg",
     "duplicate_of_id": "a1", "signal": "embedding", "score": 0.97, ..., "threshold": 0.8}
    {"image": "coco/3.jpg", "decision": "keep", "unreadable": "truncated file"}

A sample is removed when every one of its images is removed (as dedup decides); an image the
file does not name is kept. A removal whose kept image is not kept in the file (a hand edit
removed it too, or left a cycle) is not carried out: the image is kept, with a warning, so that
no picture is lost with all of its copies. A removal ``"against"`` an evaluation input
(``curate dedup --against``) duplicates an image of that input, which is never written: it needs
no kept image in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .stages import Filter, Item
from .errors import CurateError, RecordError
from .jsonstream import dumps, iter_records

VERSION = 1
KEEP, REMOVE = "keep", "remove"
# The fields of a row that are not the match (signal, score, distance, verification).
ROW_FIELDS = ("image", "decision", "duplicate_of", "duplicate_of_id", "threshold", "unreadable")


@dataclass
class Decisions:
    """Per image: the row that decides it (``decision``, and for a removal, what it duplicates)."""

    header: dict
    rows: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_duplicates(cls, duplicates) -> "Decisions":
        """The decisions of a dedup run, at the threshold its output is filtered at."""
        result, images = duplicates.applied, duplicates.images
        settings = duplicates.settings()
        header = {"curate_decisions": VERSION, "threshold": result.threshold,
                  **{key: settings[key] for key in ("verify", "intent", "signals", "scope", "embedder", "model")}}
        decisions = cls(header)
        failures = duplicates.embedding.failures
        for i, path in enumerate(images.paths[:images.training_count]):    # evaluation images: not decided
            kept = int(result.duplicate_of[i])
            if kept >= 0:
                row = {"image": path, "decision": REMOVE, "duplicate_of": images.paths[kept],
                       "duplicate_of_id": images.first_id[kept], **duplicates.match(result, i),
                       "threshold": result.threshold}
            else:
                row = {"image": path, "decision": KEEP}
                if i in failures:
                    row["unreadable"] = failures[i]
            decisions.rows[path] = row
        return decisions

    @classmethod
    def load(cls, path: Path) -> "Decisions":
        """Read and check a decisions file: a one-line error names the line and field of the
        first row that is not a decision."""
        path = Path(path)
        try:
            records = iter(iter_records(path))
            header = next(records, (0, None))[1]
            if isinstance(header, RecordError):
                raise header
            if not (isinstance(header, dict) and header.get("curate_decisions") == VERSION):
                raise CurateError(f"{path}: not a curate decisions file (its first line must be the header "
                                  f"{{\"curate_decisions\": {VERSION}, ...}} that curate dedup writes)")
            decisions = cls(header)
            for index, row in records:
                decisions._add(path, index, row)
        except OSError as e:
            raise CurateError(f"{path}: cannot read the decisions file ({e.strerror or e})") from None
        decisions._check_chains()
        return decisions

    def _add(self, path: Path, index: int, row) -> None:
        def bad(field_name: str, reason: str) -> RecordError:
            return RecordError(path, reason, index=index, field=field_name)
        if isinstance(row, RecordError):
            raise row
        if not isinstance(row, dict):
            raise bad(None, "a decision must be a JSON object")
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise bad("image", "missing, or not a path")
        decision = row.get("decision")
        if decision not in (KEEP, REMOVE):
            raise bad("decision", f"must be {KEEP!r} or {REMOVE!r}, not {decision!r}")
        if decision == REMOVE and not isinstance(row.get("duplicate_of"), str):
            raise bad("duplicate_of", "a removal must name the image it duplicates")
        if image in self.rows:
            raise bad("image", f"{image!r} is decided twice")
        self.rows[image] = row

    def _check_chains(self) -> None:
        """Turn into keeps the removals whose kept image is not kept (following removals of
        removals): a hand edit that removed both of two copies, or made a cycle."""
        orphans = []
        for image, row in self.rows.items():
            if row["decision"] == REMOVE and not row.get("against") and not self._survives(row["duplicate_of"]):
                orphans.append(image)
        for image in orphans:
            self.rows[image] = {**self.rows[image], "decision": KEEP}
        if orphans:
            self.warnings.append(f"{len(orphans):,} removals were not carried out because the image they duplicate "
                                 f"is not kept in the decisions (e.g. {orphans[0]!r}); those images were kept")

    def kept_image(self, image: str) -> str:
        """The kept image at the end of ``image``'s chain of removals (``image`` when kept)."""
        seen = set()
        row = self.rows.get(image)
        while row is not None and row["decision"] == REMOVE and image not in seen:
            seen.add(image)
            image = row["duplicate_of"]
            row = self.rows.get(image)
        return image

    def kept_images_with_copies(self) -> set[str]:
        """The kept images that some removal duplicates (not counting evaluation images)."""
        return {self.kept_image(row["duplicate_of"]) for row in self.rows.values()
                if row["decision"] == REMOVE and not row.get("against")}

    def _survives(self, image: str) -> bool:
        """Whether ``image``'s chain of removals ends at a kept image (not a cycle, not an image
        the file does not name)."""
        row = self.rows.get(self.kept_image(image))
        return row is not None and row["decision"] == KEEP

    def removal(self, sample) -> dict | None:
        """Why ``sample`` is removed (its line in the removed list), or None when it stays: a
        sample goes only when all of its images are removed, and never when it holds a video
        (videos are carried, not compared: nothing says the video is a duplicate)."""
        if sample.video is not None:
            return None
        rows = [self.rows.get(path) for path in sample.images]
        if not rows or not all(row is not None and row["decision"] == REMOVE for row in rows):
            return None
        matches = [{key: value for key, value in row.items() if key not in ROW_FIELDS} for row in rows]
        single = len(rows) == 1
        shown = matches[0] if single else {key: [m.get(key) for m in matches] for key in matches[0]}
        kept = [row["duplicate_of"] for row in rows]
        return {"id": sample.id, "image": sample.image, "duplicate_of": kept[0] if single else kept,
                "duplicate_of_id": rows[0].get("duplicate_of_id"), **shown, "threshold": rows[0].get("threshold")}

    def unreadable(self, sample) -> tuple[str, str] | None:
        """The first of the sample's images that could not be read when the decisions were made."""
        for path in sample.images:
            row = self.rows.get(path)
            if row is not None and row.get("unreadable"):
                return path, row["unreadable"]
        return None

    def write(self, stream) -> None:
        stream.write(dumps(self.header))
        stream.write("\n")
        for row in self.rows.values():
            stream.write(dumps(row, default=str))
            stream.write("\n")


class DecisionFilter(Filter):
    """The stage that applies decisions: drops samples whose images are all removed (to the
    removed list), and with ``drop_unreadable`` sets samples with an unreadable image aside as
    rejects. Counts the images the decisions do not name (they are kept).

    A removal is carried out only when the image it duplicates is already in the output: when
    the samples that hold it were removed by a filter before this stage (``curate dedup
    --filter``), or are not in this input (``curate apply`` on another export), the sample stays,
    counted in a note, so that no picture leaves the output with all of its copies. Removals
    against an evaluation input (``--against``) need no copy in the output."""

    name = "decisions"

    def __init__(self, decisions: Decisions, removed_path: Path, drop_unreadable: bool = False):
        super().__init__(removed_path)
        self.decisions = decisions
        self.drop_unreadable = drop_unreadable
        self.undecided: set[str] = set()
        self.kept_images = decisions.kept_images_with_copies()
        self.written: set[str] = set()         # those of ``kept_images`` the output holds so far
        self.kept_alone: list = []             # ids of samples kept because no copy was written

    def decide(self, item: Item):
        sample = item.sample
        self.undecided.update(str(path) for path in sample.images if path not in self.decisions.rows)
        removal = self.decisions.removal(sample)
        if removal is not None and not self._copies_written(sample):
            self.kept_alone.append(sample.id)
            removal = None
        if removal is not None:
            return removal
        if self.drop_unreadable:
            bad = self.decisions.unreadable(sample)
            if bad:
                return RecordError(item.path, f"image {bad[0]!r} is unreadable: {bad[1]}", index=item.number,
                                   record_id=sample.id, field="image")
        self.written.update(key for key in map(str, sample.images) if key in self.kept_images)
        return None

    def _copies_written(self, sample) -> bool:
        """Whether each image of ``sample`` duplicates an image the output already holds (or
        one of an evaluation input)."""
        for path in sample.images:
            row = self.decisions.rows[path]
            if not row.get("against") and self.decisions.kept_image(row["duplicate_of"]) not in self.written:
                return False
        return True

    def exclusion(self, item: Item, outcome: dict) -> dict:
        """Dedup's removed.jsonl line (id, image, what it duplicates), and for images held as
        bytes where they were read (the shard and row, the archive and member)."""
        origins = [image.origin for image in item.sample.images if getattr(image, "origin", None)]
        if origins:
            return {**outcome, "origin": origins[0] if len(origins) == 1 else origins}
        return outcome

    def finish(self) -> None:
        self.tally.notes += [note for note in (self.note(), self._kept_alone_note()) if note]

    def note(self) -> str | None:
        if not self.undecided:
            return None
        example = next(iter(sorted(self.undecided)))
        return (f"{len(self.undecided):,} images are not in the decisions (e.g. {example!r}); "
                f"their samples were kept")

    def _kept_alone_note(self) -> str | None:
        if not self.kept_alone:
            return None
        return (f"{len(self.kept_alone):,} samples whose images duplicate others were kept (e.g. id "
                f"{self.kept_alone[0]!r}): the image they duplicate is not in the output (its samples were "
                f"removed by a filter, or are not in this input), so removing them would lose the picture")


def apply(decisions_path, inputs, output, *, drop_unreadable: bool = False, **settings):
    """Filter ``inputs`` (an :class:`~curate.engine.Inputs`) with a decisions file into ``output``:
    samples whose images are all removed go to the removed list (``removed``, default
    ``OUTPUT.removed.jsonl``) with what they duplicate, the rest is written in input order.
    ``settings``: those of :func:`curate.filtering.run_filters`. Returns the run's Report."""
    from .filtering import run_filters
    decisions_path = Path(decisions_path)
    decisions = Decisions.load(decisions_path)
    stage = DecisionFilter(decisions, None, drop_unreadable)
    report = run_filters(inputs, output, [stage], extra_sources=[decisions_path], **settings)
    report.warnings += decisions.warnings
    return report
