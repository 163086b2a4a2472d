"""The one run loop of curate: inputs → reader → stages → writer.

:class:`Inputs` says which files are read and how (reader, image root, prefix, seed, plugin
options); every pass over them builds the readers' :class:`Options` the same way, so a
second pass (dedup's) sees exactly the samples and ids of the first. :class:`Run` owns, once
for every command: the reject sink and rejects file, the progress bar, the duplicate-id
check, box rewriting, the writer's atomic output and the accounting
``input = written + removed + rejected``. A stage is a generator over :class:`Item` (the
shape of datatrove's pipeline steps); a :class:`Filter` stage hands what it drops to an
exclusion file, as dedup does with ``removed.jsonl``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .atomic import Outputs
from .boxes import BRACKET_PADDED, one_style, style_for
from .contracts import Options, Reader, raise_error
from .errors import CurateError, RecordError, setting
from .extract import ImageFiles
from .images import ImageLocator
from .jsonstream import dumps, read_head
from .progress import ProgressBar
from .registry import describe, get_registry, plugin_call
from .sample import Rejected, Sample
from .settings import declared, refuse_unknown, resolve
from .stages import (ID_MODES, ApplyIds, CheckDuplicateIds, ConvertBoxes, Filter, Item, Stage,  # noqa: F401
                     StageContext, id_problem)

ON_ERROR = ("fail", "skip")


# --- resolving components -----------------------------------------------------------------------

SHARD_SUFFIXES = (".parquet", ".tar", ".tar.gz", ".tgz")
_GLOB_CHARS = frozenset("*?[")


def expand_inputs(paths) -> list[Path]:
    """Inputs as named, with a folder of shards (``.parquet``, ``.tar``) and a glob that the shell
    did not expand (quoted) each standing for their files, in sorted order."""
    expanded = []
    for path in map(Path, paths):
        if path.is_dir():
            shards = sorted(p for p in path.rglob("*") if p.name.endswith(SHARD_SUFFIXES) and p.is_file())
            if not shards:
                raise CurateError(f"{path}: is a folder with no .parquet or .tar shards; name a file")
            expanded += shards
        elif not path.exists() and _GLOB_CHARS & set(str(path)):
            import glob
            found = sorted(glob.glob(str(path), recursive=True))
            if not found:
                raise CurateError(f"{path}: no file matches this pattern")
            expanded += map(Path, found)
        else:
            expanded.append(path)
    return expanded


def check_input(path: Path) -> None:
    if not path.exists():
        raise CurateError(f"{path}: no such file")
    if path.is_dir():
        raise CurateError(f"{path}: is a folder; name a file")
    if not os.access(path, os.R_OK):
        raise CurateError(f"{path}: cannot read the file (permission denied)")


def readable_copy(path: Path) -> Path:
    """``path`` itself when it is a regular file; otherwise (a pipe, ``<(cat x)``, a FIFO, a
    device) its whole content spooled once to a temporary file, so that sniffing the format
    and every later pass read the same bytes. A FIFO that nobody writes to reads as empty
    instead of hanging."""
    if stat.S_ISREG(os.stat(path).st_mode):
        return path
    folder = Path(tempfile.mkdtemp(prefix="curate-input-"))
    atexit.register(shutil.rmtree, folder, True)
    copy = folder / (path.name or "input")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        with os.fdopen(fd, "rb", closefd=False) as source, open(copy, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
    finally:
        os.close(fd)
    return copy


def resolve_reader(name: str, path: Path) -> Reader:
    """The reader called ``name``, or with ``auto`` the one that best recognises ``path``."""
    registry = get_registry()
    if name != "auto":
        return registry.get("reader", name)
    head = read_head(path)
    scores = []
    for reader_name in registry.names("reader"):
        try:
            score = registry.components["reader"][reader_name].obj.sniff(path, head)
        except Exception:
            score = 0
        if isinstance(score, (int, float)) and not isinstance(score, bool) and score > 0:
            scores.append((score, reader_name))
    if not scores:
        raise CurateError(f"{path}: no installed reader recognises this file; name the format "
                          f"(installed: {', '.join(registry.names('reader'))})")
    scores.sort(key=lambda s: (-s[0], s[1]))
    return registry.get("reader", scores[0][1])


def resolve_writer(name: str):
    return get_registry().get("writer", name)


def default_writer(inputs: "Inputs") -> str:
    """The first input's format when curate can write it (llava stays llava), else llava (svit)."""
    name = inputs.readers[0].name
    return name if name in get_registry().components["writer"] else "llava"


def apply_image_prefix(image, prefix: str):
    """Prefix bare file names (``000000033471.jpg``) with a folder; paths with a folder stay."""
    def one(path: str) -> str:
        return path if "/" in path else prefix.rstrip("/") + "/" + path
    if image is None:
        return None
    if isinstance(image, list):
        return [one(p) for p in image]
    return one(image)


# --- the input side -----------------------------------------------------------------------------

@dataclass
class Inputs:
    """Which files to read and how; the same for convert, dedup, embed, inspect and preview."""

    paths: list
    reader: str = "auto"
    image_root: Path | None = None
    image_prefix: str | None = None
    seed: int = 0
    settings: dict = field(default_factory=dict)    # every component's settings: name -> value (typed, or a string from -O)

    def __post_init__(self):
        paths = [self.paths] if isinstance(self.paths, (str, Path)) else list(self.paths)
        if not paths:
            raise CurateError("no input files given")
        self.sources = expand_inputs(paths)          # as the user named them (folders and globs: their files)
        for path in self.sources:
            check_input(path)
        self.paths = [readable_copy(path) for path in self.sources]
        self.image_root = Path(self.image_root) if self.image_root is not None else None
        self.readers = [resolve_reader(self.reader, path) for path in self.paths]
        self.reader_settings = resolve(self.settings, declared(self.readers))
        self.notes: list[str] = []

    @property
    def reader_names(self) -> str:
        return ",".join(sorted({reader.name for reader in self.readers}))

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def options_for_pass(self, progress=None, reject=raise_error, state=None) -> Options:
        return Options(image_root=self.image_root, image_prefix=self.image_prefix, seed=self.seed,
                       settings=dict(self.reader_settings), progress=progress, reject=reject,
                       state=state if state is not None else {})

    def items(self, *, progress: Callable[[int], None] | None = None,
              reject: Callable = raise_error, read: Callable | None = None) -> Iterator[Item]:
        """One pass over every input, in order. Readers share one ``state`` per pass, so ids
        and seeded draws continue from file to file and are the same on every pass.
        ``read(reader, path, options)``: how a file is read (a run's :meth:`ConvertBoxes.read`);
        by default ``reader.read(path, options)``."""
        state: dict = {}
        for path, reader in zip(self.paths, self.readers):
            options = self.options_for_pass(progress, reject, state)
            with plugin_call("reader", reader):
                samples = read(reader, path, options) if read is not None else reader.read(path, options)
                for number, sample in enumerate(samples):
                    if not isinstance(sample, Sample):
                        raise CurateError(f"{describe('reader', reader)} yielded a {type(sample).__name__} "
                                          f"from {path}, not a curate.Sample")
                    problem = id_problem(sample.id)
                    if problem:
                        reject(RecordError(path, problem, index=number, field="id"), sample.as_record())
                        continue
                    if self.image_prefix:
                        sample.image = apply_image_prefix(sample.image, self.image_prefix)
                    yield Item(path, reader, number, sample)
        self.notes = list(state.get("notes", {}).values())

    def samples(self, **kwargs) -> Iterator[Sample]:
        return (item.sample for item in self.items(**kwargs))


class ReadAlready:
    """What the stages need of the reader that read samples handed over already read: its name
    and box convention (so they are converted in the box stage; nothing is read again)."""

    settings = ()

    def __init__(self, reader: Reader):
        self.name, self.box_style = reader.name, reader.box_style


class SampleSource:
    """Samples made or read in Python as a run's input (the API's :func:`curate.write`), so
    they pass through the same stages as a file's: ids by the writer's default policy, images
    held as bytes checked, boxes converted. ``boxes_from``: the reader whose box convention the
    samples' texts follow (the one that read them); None: boxes are written as they are."""

    NAME = "<samples>"

    def __init__(self, samples: Iterable[Sample], boxes_from: str | None = None, image_root=None,
                 settings: dict | None = None):
        self._samples = samples
        self.sources, self.paths = [], []
        self.image_root = Path(image_root) if image_root is not None else None
        self.image_prefix = None
        self.settings = dict(settings or {})
        self.readers = [ReadAlready(get_registry().get("reader", boxes_from))] if boxes_from else []
        self.reader_names = boxes_from or "samples"
        self.total_bytes = 0
        self.notes: list[str] = []

    def options_for_pass(self, progress=None, reject=raise_error, state=None) -> Options:
        return Options(image_root=self.image_root, settings={}, progress=progress, reject=reject,
                       state=state if state is not None else {})

    def items(self, *, progress=None, reject: Callable = raise_error, read=None) -> Iterator[Item]:
        where, reader = Path(self.NAME), self.readers[0] if self.readers else None
        for number, sample in enumerate(self._samples):
            if not isinstance(sample, Sample):
                raise CurateError(f"curate.write takes curate.Sample objects, not a {type(sample).__name__}")
            problem = id_problem(sample.id)
            if problem:
                reject(RecordError(where, problem, index=number, field="id"), sample.as_record())
                continue
            # a copy: the stages set ids, image paths and boxes on the sample, not on the caller's
            yield Item(where, reader, number, sample.copy())


# --- what happens to records that are not written ------------------------------------------------

class RejectSink:
    """Where rejected records go: raise (``fail``) or append to the rejects file (``skip``)."""

    def __init__(self, on_error: str, open_file: Callable[[], object] | None = None):
        if on_error not in ON_ERROR:
            raise CurateError(f"{setting('on_error')} must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        self.on_error = on_error
        self.open_file = open_file
        self.stream = None
        self.count = 0
        self.first: RecordError | None = None

    def __call__(self, error: RecordError, raw=None) -> None:
        if self.on_error == "fail":
            raise error
        self.set_aside(error, raw)

    def set_aside(self, error: RecordError, raw=None) -> None:
        """Record a reject whatever ``on_error`` says (the user asked for it, e.g. --drop-unreadable).
        With no file to open, rejects are only counted (and the first kept, to name it)."""
        self.count += 1
        if self.first is None:
            self.first = error
        if self.open_file is None:
            return
        if self.stream is None:
            self.stream = self.open_file()
        self.stream.write(dumps(Rejected(error, raw).as_json()))
        self.stream.write("\n")


@dataclass
class Report:
    """What a run did with every input record: input = written + removed + rejected."""

    inputs: list[str]
    output: str
    reader: str
    writer: str
    records_in: int = 0
    written: int = 0
    removed: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.records_in != self.written + self.removed + self.rejected:
            raise AssertionError(f"accounting mismatch: {self.records_in} in, {self.written} written, "
                                 f"{self.removed} removed, {self.rejected} rejected")


def default_rejects_path(output: Path) -> Path:
    return output.with_name(output.name + ".rejects.jsonl")


def _box_target(boxes: str | None, writer_style, readers) -> tuple:
    """The box style of the output and why it was chosen (None: the user's or the writer's):
    ``--boxes`` in the writer's notation, else the writer's own, else one style for every
    input (:func:`curate.boxes.one_style`)."""
    if boxes:
        return style_for(boxes, writer_style or BRACKET_PADDED), None
    if writer_style is None:
        return one_style(readers)
    return writer_style, None


# --- the run ----------------------------------------------------------------------------------

class Run:
    """One pass of ``inputs`` through stages into ``writer``, as part of ``outputs``.

    The constructor claims the output, the rejects file and the writer's sidecars and checks
    the settings given against every component of the run (``components``: ``(kind,
    component)`` pairs besides the readers and the writer, such as dedup's embedder or the
    filters), so a bad path or a misspelt setting fails before any slow work; :meth:`execute` composes reader -> stages -> writer and
    returns the :class:`Report`, the sum of the stages' tallies. The files appear when
    ``outputs`` commits.
    """

    def __init__(self, inputs: Inputs, output, writer: str, outputs: Outputs, *, on_error: str = "fail",
                 rejects=None, boxes: str | None = None, ids: str | None = None, extract_images=None,
                 show_progress: bool = False, title: str | None = None, components=()):
        self.inputs = inputs
        self.outputs = outputs
        self.writer = resolve_writer(writer)
        folder, output = self._folder_and_card(output)
        self.output = outputs.claim(output, "output" if folder is None else "dataset card")
        self.rejects_given = rejects is not None
        self.rejects_path = outputs.claim(Path(rejects) if rejects else default_rejects_path(self.output),
                                          "rejects file", overwrite=True)
        self.sink = RejectSink(on_error, lambda: outputs.open(self.rejects_path))
        self.writer_options = self._options_for_writer(folder, components)
        self._check_suffix()
        with plugin_call("writer", self.writer):
            target = self.writer.box_style_for(self.writer_options)
            self.sidecars = self.writer.sidecars(self.output, self.writer_options)
        for sidecar in self.sidecars:
            outputs.claim(sidecar.path, sidecar.role, overwrite=True if sidecar.merge else None)
        self.images = ImageLocator(inputs.image_root)
        target, why = _box_target(boxes, target, inputs.readers)
        self.boxes = ConvertBoxes(inputs.readers, target, self.images, why)
        self.ids = ids
        self.image_files = ImageFiles(extract_images, self.writer)
        self.show_progress = show_progress
        self.title = title or f"{inputs.reader_names} → {self.writer.name}"

    def _options_for_writer(self, folder: Path | None, components) -> Options:
        """The writer's options for this pass, once every setting given is checked against the
        run's components (readers, writer and ``components``)."""
        inputs, options = self.inputs, self.inputs.options_for_pass()
        options.path, options.folder, options.outputs = self.output, folder, self.outputs
        refuse_unknown(inputs.settings, [*(("reader", r) for r in inputs.readers), ("writer", self.writer), *components])
        options.settings = resolve(inputs.settings, declared([*inputs.readers, self.writer]))
        return options

    def _folder_and_card(self, output) -> tuple[Path | None, Path]:
        """For a writer that writes a folder (a dataset of shards): the folder, and its card
        (README.md) as the main file; else (None, ``output``)."""
        if not self.writer.writes_folder:
            return None, output
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise CurateError(f"{folder}: the {self.writer.name} writer writes a folder (shards and a "
                              "README.md); name a folder, not a file")
        return folder, folder / "README.md"

    def stages(self, given: Iterable[Stage]) -> list[Stage]:
        """Every stage of the pass, in order: the duplicate-id check, the ``given`` ones (a
        filter), box conversion, images as files (``--extract-images``), then the id policy (what the writer sees)."""
        return [CheckDuplicateIds(), *given, self.boxes, self.image_files,
                ApplyIds(self.ids, self.writer.loads_with_datasets)]

    def execute(self, stages: Iterable[Stage] = ()) -> Report:
        started = time.monotonic()
        stages = self.stages(stages)
        report = Report([str(p) for p in self.inputs.sources], str(self.output), self.inputs.reader_names,
                        self.writer.name)
        read_rejects = CountingReject(self.sink)
        with ProgressBar(self.title, self.inputs.total_bytes, enabled=self.show_progress) as bar:
            read = Counted(self.inputs.items(progress=bar.advance, reject=read_rejects, read=self.boxes.read))
            items: Iterator[Item] = read
            context = StageContext(self.outputs, self.sink, self.images)
            for stage in stages:
                items = stage.process(items, context)
            report.written = self._write(bar.count(item.sample for item in items))
            for stage in stages:
                stage.finish()
            self._write_sidecars(report)
        report.records_in = read.count + read_rejects.count
        report.removed = sum(stage.tally.removed for stage in stages)
        report.rejected = self.sink.count
        report.rejects_path = self._rejects_file()
        report.seconds = time.monotonic() - started
        report.notes += self.inputs.notes + list(self.writer_options.state.get("notes", {}).values())
        report.notes += [note for stage in stages for note in stage.tally.notes]
        report.warnings += [warning for stage in stages for warning in stage.tally.warnings]
        report.check()
        return report

    def _write(self, samples: Iterator[Sample]) -> int:
        """Hand ``samples`` to the writer; how many it wrote (checked: :meth:`_check_writer`)."""
        given = Counted(samples)
        upstream: list[BaseException] = []     # raised on our side while the writer pulled

        def pulled() -> Iterator[Sample]:
            try:
                yield from given
            except Exception as e:
                upstream.append(e)
                raise

        stream = self.outputs.open(self.output)
        rejected = self.writer_options.reject = CountingReject(self.sink)
        with plugin_call("writer", self.writer, upstream):
            written = self.writer.write(pulled(), stream, self.writer_options)
        self._check_writer(written, given, rejected.count, stream)
        return written

    def _rejects_file(self) -> str | None:
        if self.sink.count == 0 and not self.rejects_given:
            self.outputs.discard_at_commit(self.rejects_path)
        return str(self.rejects_path) if self.sink.count else None

    def _check_suffix(self) -> None:
        suffixes = self.writer.suffixes
        if suffixes and not str(self.output).endswith(tuple(suffixes)):
            raise CurateError(f"{self.output}: the {self.writer.name} writer writes {' or '.join(suffixes)} files "
                              f"only (its trainer reads nothing else); name the output so")

    def _write_sidecars(self, report: Report) -> None:
        """A merged sidecar is rendered when the outputs commit, from the file's text then
        (see :meth:`Outputs.merge`); the others now."""
        for sidecar in self.sidecars:
            render = partial(self._render, sidecar, report.written)
            if sidecar.merge:
                self.outputs.merge(sidecar.path, render)
                report.notes.append(f"merged this dataset into the {sidecar.role} {sidecar.path}")
            else:
                self.outputs.open(sidecar.path).write(render(None))
                report.notes.append(f"wrote the {sidecar.role} {sidecar.path}")

    def _render(self, sidecar, written: int, existing: str | None) -> str:
        with plugin_call("writer", self.writer):
            return sidecar.render(written, existing)

    def _check_writer(self, written, given: "Counted", rejected: int, stream) -> None:
        """A writer must take every sample, count what it wrote and leave curate's stream open
        (curate closes it when the output is complete); otherwise records would be lost, so the
        run fails before anything is renamed into place."""
        name = describe("writer", self.writer)
        if stream.closed:
            raise CurateError(f"{name} closed the output stream (curate closes it); nothing was written")
        if not given.exhausted:
            raise CurateError(f"{name} stopped before taking every sample; nothing was written")
        if type(written) is not int or written != given.count - rejected:
            raise CurateError(f"{name} says it wrote {written!r} samples, but it was given "
                              f"{given.count:,} and rejected {rejected:,}; nothing was written")


class Counted:
    """An iterator that counts what passed through it, and knows whether it ran to its end."""

    def __init__(self, items: Iterable):
        self.items = iter(items)
        self.count = 0
        self.exhausted = False

    def __iter__(self):
        for item in self.items:
            self.count += 1
            yield item
        self.exhausted = True


class CountingReject:
    """A reject callback that counts what it is given and hands it to ``sink``."""

    def __init__(self, sink: RejectSink):
        self.sink = sink
        self.count = 0

    def __call__(self, error: RecordError, raw=None) -> None:
        self.count += 1
        self.sink(error, raw)
