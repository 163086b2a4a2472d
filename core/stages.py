"""The stages of a run: each turns an iterator of :class:`Item` into an iterator of items and
keeps its own :class:`Tally` (removed, notes, warnings), as datatrove's pipeline steps do; the
:class:`~curate.engine.Run` only composes reader -> stages -> writer and adds the tallies up.

Built in: :class:`CheckDuplicateIds` (a warning), :class:`ConvertBoxes` (the reader's box
convention to the writer's), :class:`ApplyIds` (``--ids``), and :class:`Filter`, the base of
every stage that drops items with a reason (dedup's :class:`~curate.decisions.DecisionFilter`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Iterator, NamedTuple

from .boxes import BoxRewriter
from .errors import CurateError, RecordError, setting
from .jsonstream import dumps
from .progress import shown
from .records import json_type
from .sample import Sample
from .settings import SettingError, values_for

if TYPE_CHECKING:
    from .contracts import Reader


class Item(NamedTuple):
    """A sample with where it came from: its file, that file's reader, its position among the
    file's samples."""

    path: Path
    reader: "Reader"
    number: int
    sample: Sample



ID_MODES = ("keep", "string", "drop")
# The kinds of id that the mixed-types warning counts, by exact Python type (True is no integer here)
_ID_KINDS = {int: "integers", str: "strings", float: "fractional numbers", bool: "booleans"}


def id_problem(value) -> str | None:
    """Why ``value`` cannot be a record's id, or None. An id is a JSON scalar (a string, a
    number, a boolean) or absent (None): an object or a list cannot be compared, counted or
    written as one id."""
    if value is None or type(value) in _ID_KINDS and (type(value) is not float or math.isfinite(value)):
        return None
    kind = f"a JSON {json_type(value)}" if type(value) in (dict, list) else f"a {type(value).__name__}"
    return f"the id must be a string or a number, not {kind}"


class IdPolicy:
    """How ids are written (``--ids``; None: the writer's default), and what the summary says.

    A JSON column whose ids mix integers and strings is fine for trainers that read JSON
    themselves (LLaVA, InternVL, qwen-vl-finetune: lossless ``keep``), but not for those that
    load through Hugging Face ``datasets`` (``Writer.loads_with_datasets``: LLaMA-Factory,
    ms-swift). Measured with the real package on such a file: before 4.7 it does not load
    (an Arrow type error on ``id``; LLaMA-Factory pins datasets<=4.0.0), and from 4.7 (ms-swift
    allows up to 4.8.4; 5.x too) it loads with ``"000000033471"`` silently read as 33471. So
    those writers write every id as a string by default (``string``: numbers and booleans as
    JSON spells them), and warn only when told ``--ids keep`` on such a mix."""

    def __init__(self, mode: str | None = "keep", loads_with_datasets: bool = False):
        if mode is not None and mode not in ID_MODES:
            raise CurateError(f"{setting('ids')} must be one of {', '.join(ID_MODES)}, not {mode!r}")
        self.defaulted = mode is None
        self.mode = ("string" if loads_with_datasets else "keep") if mode is None else mode
        self.loads_with_datasets = loads_with_datasets
        self.kinds: Counter = Counter()

    def apply(self, sample: Sample) -> Sample:
        """``sample`` with its id as the policy says (changed in place, and returned)."""
        kind = _ID_KINDS.get(type(sample.id))
        if kind is not None:
            self.kinds[kind] += 1
            if self.mode == "string" and kind != "strings":
                sample.id = dumps(sample.id)
        if self.mode == "drop":
            sample.id = None
        return sample

    def _mix(self) -> str:
        parts = [f"{kind} ({self.kinds[kind]:,})" for kind in _ID_KINDS.values() if kind in self.kinds]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def note(self) -> str | None:
        """Said when the writer's default turned ids that were not strings into strings."""
        changed = sum(n for kind, n in self.kinds.items() if kind != "strings")
        if not (self.defaulted and self.mode == "string" and changed):
            return None
        return (f"wrote {changed:,} ids that were not strings as strings, as the trainer loads the file with Hugging "
                f"Face datasets, which holds one type per column (pass {setting('ids')} keep to write them as read)")

    def warning(self) -> str | None:
        if self.mode != "keep" or not self.loads_with_datasets or len(self.kinds) < 2:
            return None
        return (f"ids mix {self._mix()}: this trainer loads the file with Hugging Face datasets, which before 4.7 "
                "cannot load it (an Arrow type error on id; LLaMA-Factory pins datasets<=4.0.0) and from 4.7 on "
                f"reads ids like \"000000033471\" as the number 33471; pass {setting('ids')} string (the default for "
                f"this writer) or {setting('ids')} drop")


class DuplicateIds:
    """Counts samples whose id was seen before (a warning: LLaVA trains fine on them, but users
    should know). Keeps an 8-byte hash per sample, not the ids, so that memory stays small
    (5 MB for the 665K mix); the first repeat is named when it comes early."""

    _NAMED_UP_TO = 50_000    # ids kept as strings for the first samples, to name a repeat

    def __init__(self):
        self.hashes = array("q")
        self.first_ids: set = set()
        self.first = None

    def add(self, sample, path) -> None:
        key = (type(sample.id) is int, sample.id)
        hashes = self.hashes
        hashes.append(hash(key))
        if len(hashes) <= self._NAMED_UP_TO:
            if key in self.first_ids and self.first is None:
                self.first = (sample.id, path)
            self.first_ids.add(key)

    @property
    def count(self) -> int:
        if not self.hashes:
            return 0
        import numpy as np
        values = np.frombuffer(self.hashes, dtype=np.int64)
        return int(len(values) - len(np.unique(values)))

    def warning(self) -> str | None:
        count = self.count
        if not count:
            return None
        example = f" (first: {shown(repr(self.first[0]))} in {self.first[1]})" if self.first else ""
        return f"{count:,} samples repeat an id seen before{example}; they were kept"


@dataclass
class Tally:
    """What one stage did: items it removed (each with a reason in its exclusion file), and
    what it has to say in the run's summary."""

    removed: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Stage:
    """One step of a run. :meth:`process` takes the items of the step before and yields the
    items for the next; ``context`` is the run's :class:`StageContext` (its outputs, to open an
    exclusion file, and its reject sink). :meth:`finish` runs once the writer took every item:
    the place for notes and warnings."""

    name = "stage"

    def __init__(self):
        self.tally = Tally()

    def process(self, items: Iterator[Item], context: "StageContext") -> Iterator[Item]:
        raise NotImplementedError

    def finish(self) -> None:
        pass


@dataclass
class StageContext:
    """What a stage may use of its run: ``outputs`` (claimed paths open with
    ``outputs.open``, committed with the run's other files), ``sink`` (``sink(error, raw)``
    rejects a record as ``--on-error`` says; ``sink.set_aside(error, raw)`` always sets it
    aside) and ``images`` (a :class:`curate.images.ImageLocator` under ``--image-root``:
    ``images.size(path)``, ``images.find(path)``, with curate's safety rules)."""

    outputs: object
    sink: object
    images: object = None


class Filter(Stage, ABC):
    """A stage that drops some items, each with a reason: the contract of a filter plugin
    (``register_filters``), and of dedup's. ``decide(item)`` returns None to keep the item, a
    dict to remove it (why: it becomes the item's line in the exclusion file), or a RecordError
    to set it aside as a reject. ``curate filter`` makes a fresh instance of the registered class
    for each run.

    ``settings``: its :class:`curate.Setting` declarations (flags of ``curate filter``, ``-O
    NAME=VALUE``); their typed values are in ``self.values``. The first is the filter's primary
    setting: ``--filter NAME=VALUE`` sets it (:meth:`configure`). ``default``: runs when ``curate
    filter`` is given no ``--filter`` (in ``order``, lowest first)."""

    name = "filter"
    description = ""
    default = False
    order = 100
    settings: tuple = ()
    setting: str | None = None          # the VALUE of ``--filter NAME=VALUE`` as given, for the report
    EXAMPLES = 8                        # removals kept whole for the filter report (the first ones)

    def __init__(self, exclusions: Path | None = None):
        super().__init__()
        self.exclusions = exclusions
        self.values = MappingProxyType(values_for(self, {}))
        self.removed_by_source: Counter = Counter()
        self.examples: list[dict] = []

    def configure(self, value: str) -> None:
        """Take ``--filter NAME=VALUE``: VALUE is the primary setting's (the first declared)."""
        if not self.settings:
            raise CurateError(f"filter {self.name!r} takes no value (given {value!r})")
        primary = self.settings[0]
        try:
            typed = primary.parse(value)
        except SettingError:
            raise CurateError(f"filter {self.name!r}: {value!r} is not {primary.describe()} "
                              f"({self.name}={primary.default})") from None
        self.values = MappingProxyType({**self.values, primary.name: typed})

    @abstractmethod
    def decide(self, item: Item):
        """None to keep ``item``; a dict saying why to remove it; a RecordError to reject it."""

    def decode_observer(self):
        """None, or an object whose ``observe(image, path)`` dedup runs in its decode workers on
        each image it decodes for the embedder (``curate dedup --filter``): its values come back
        through :meth:`take_observed` before this filter runs, so that an image filter reads no
        image twice. Observers of the same ``name`` are combined with their ``merged(other)``."""
        return None

    def take_observed(self, observed: dict) -> None:
        """The observers' values: ``{observer name: {image path as the records name it: value}}``,
        for the images dedup decoded (not those its cache had, nor those it could not read)."""

    def details(self) -> dict:
        """What the filter report says of this filter beyond its counts: its threshold, the
        measure, examples near the threshold (:class:`curate.filter_report.NearThreshold`)."""
        return {}

    def exclusion(self, item: Item, outcome: dict) -> dict:
        """The line of a removed item in the exclusion file: its id and image, this filter's
        name and what ``decide`` said."""
        video = {"video": item.sample.video} if item.sample.video is not None else {}
        return {"id": item.sample.id, "image": item.sample.image, **video, "filter": self.name, **outcome}

    def process(self, items: Iterator[Item], context: StageContext) -> Iterator[Item]:
        self.context = context
        out = context.outputs.open(self.exclusions) if self.exclusions is not None else None
        for item in items:
            outcome = self.decide(item)
            if outcome is None:
                yield item
            elif isinstance(outcome, RecordError):
                context.sink.set_aside(outcome, None)
            else:
                self.tally.removed += 1
                self.removed_by_source[item.sample.source] += 1
                line = self.exclusion(item, outcome)
                if len(self.examples) < self.EXAMPLES:
                    self.examples.append(line)
                if out is not None:
                    out.write(dumps(line))
                    out.write("\n")


class CheckDuplicateIds(Stage):
    """Warns about samples whose id was seen before (they are kept)."""

    name = "duplicate ids"

    def __init__(self):
        super().__init__()
        self.ids = DuplicateIds()

    def process(self, items, context):
        for item in items:
            self.ids.add(item.sample, item.path)
            yield item

    def finish(self) -> None:
        warning = self.ids.warning()
        if warning:
            self.tally.warnings.append(warning)


class ApplyIds(Stage):
    """Writes ids as ``--ids`` says (:class:`IdPolicy`); the last stage before the writer."""

    name = "ids"

    def __init__(self, mode: str | None = "keep", loads_with_datasets: bool = False):
        super().__init__()
        self.policy = IdPolicy(mode, loads_with_datasets)

    def process(self, items, context):
        apply = self.policy.apply
        for item in items:
            apply(item.sample)          # in place: the item goes on as it is
            yield item

    def finish(self) -> None:
        self.tally.notes += [note for note in (self.policy.note(),) if note]
        self.tally.warnings += [warning for warning in (self.policy.warning(),) if warning]


class ConvertsOwnBoxes(ABC):
    """Curate-internal, not part of the plugin contract: a reader (SVIT's) whose records hold
    many texts about one image, so that converting a whole record in the reading pass (parsed,
    checked and padded once, the image's size read once) is several times faster than
    converting the samples afterwards. Only :class:`ConvertBoxes` calls :meth:`read_converting`."""

    @abstractmethod
    def read_converting(self, path: Path, options, rewriter: BoxRewriter) -> Iterator[Sample]:
        """``read``, with each record's texts through ``rewriter.rewrite_texts`` (and
        ``rewriter.tally`` for a record that is kept)."""


class ConvertBoxes(Stage):
    """Rewrites the boxes in each sample's text from its reader's convention to the writer's
    (``target``). A reader that converts its own records (:class:`ConvertsOwnBoxes`) is read
    through :meth:`read` with its rewriter when that has a fast lane, and its samples pass here
    untouched. A bad box rejects its record."""

    name = "boxes"

    def __init__(self, readers: list[Reader], target, locator, why: str | None = None):
        super().__init__()
        self.why = why          # a note on the choice of target, said once boxes were written
        self._rewriters = {reader.name: BoxRewriter(reader.box_style, target, locator) for reader in readers}
        self._own_pass = {reader.name for reader in readers if self.converts_own(reader, self._rewriters[reader.name])}

    @staticmethod
    def converts_own(reader, rewriter: BoxRewriter) -> bool:
        """Whether ``reader`` converts its boxes in its own pass with ``rewriter``."""
        return isinstance(reader, ConvertsOwnBoxes) and rewriter.lane is not None

    def read(self, reader: Reader, path: Path, options) -> Iterator[Sample]:
        """How the run reads ``path`` with ``reader`` (the engine's ``Inputs.items`` calls it)."""
        if reader.name in self._own_pass:
            return reader.read_converting(path, options, self._rewriters[reader.name])
        return reader.read(path, options)

    def process(self, items, context):
        if not any(r.active and name not in self._own_pass for name, r in self._rewriters.items()):
            return items                # nothing to rewrite here: no step at all
        return self._rewritten(items, context)

    def _rewritten(self, items, context):
        for item in items:
            rewriter = self._rewriters[item.reader.name]
            if rewriter.active and item.reader.name not in self._own_pass:
                try:
                    item = item._replace(sample=rewriter.apply(item.sample, item.path))
                except RecordError as error:
                    context.sink(error, None)
                    continue
            yield item

    def finish(self) -> None:
        if self.why and any(r.boxes for r in self._rewriters.values()):
            self.tally.notes.append(self.why)
        self.tally.notes += [note for note in (r.note() for r in self._rewriters.values()) if note]
