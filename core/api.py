"""The Python API behind the CLI: read, write and convert datasets through Samples."""

from __future__ import annotations

import contextlib
import os
from array import array
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .atomic import atomic_output, check_output
from .boxes import BRACKET_PADDED, BoxRewriter, style_for
from .errors import CurateError, RecordError
from .formats import Options
from .images import ImageLocator
from .jsonstream import dumps, read_head
from .registry import get_registry
from .progress import ProgressBar
from .sample import Rejected, Sample

ON_ERROR = ("fail", "skip")


def resolve_reader(name: str, path: Path):
    """The reader called ``name``, or with ``auto`` the one that best recognises ``path``."""
    registry = get_registry()
    if name != "auto":
        return registry.get("reader", name)
    path = Path(path)
    _check_input(path)
    head = read_head(path)
    scores = []
    for reader_name in registry.names("reader"):
        component = registry.components["reader"][reader_name]
        try:
            score = component.obj.sniff(path, head)
        except Exception:
            score = 0
        if score:
            scores.append((score, reader_name, component.obj))
    if not scores:
        raise CurateError(f"{path}: no installed reader recognises this file; name the format "
                          f"(installed: {', '.join(registry.names('reader'))})")
    scores.sort(key=lambda s: (-s[0], s[1]))
    return registry.get("reader", scores[0][1])


def resolve_writer(name: str):
    return get_registry().get("writer", name)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise CurateError(f"{path}: no such file")
    if path.is_dir():
        raise CurateError(f"{path}: is a folder; name a file")
    if not os.access(path, os.R_OK):
        raise CurateError(f"{path}: cannot read the file (permission denied)")


def read(path, format: str = "auto", **options) -> Iterator[Sample]:
    """Yield the Samples of one file. Bad records raise :class:`RecordError`.

    Pass ``on_error="skip"`` to drop bad records silently (use :func:`convert` to keep them).
    """
    path = Path(path)
    on_error = options.pop("on_error", "fail")
    opts = Options(**options)
    if on_error == "skip" and "reject" not in options:
        opts.reject = lambda error, raw=None: None
    reader = resolve_reader(format, path)
    _check_input(path)
    yield from reader.read(path, opts)


def write(samples: Iterable[Sample], path, format: str = "llava", *, overwrite: bool = False,
          **options) -> int:
    """Write Samples to ``path`` atomically; return how many were written."""
    path = Path(path)
    writer = resolve_writer(format)
    check_output(path, overwrite=overwrite)
    opts = Options(path=path, **options)
    with atomic_output(path) as stream:
        return writer.write(samples, stream, opts)


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
        self.hashes.append(hash(key))
        if len(self.hashes) <= self._NAMED_UP_TO:
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
        example = f" (first: {self.first[0]!r} in {self.first[1]})" if self.first else ""
        return f"{count:,} samples repeat an id seen before{example}; they were kept"


class RejectSink:
    """Where rejected records go: raise (``fail``) or append to a JSON Lines file (``skip``)."""

    def __init__(self, on_error: str, path: Path | None, stack: contextlib.ExitStack):
        if on_error not in ON_ERROR:
            raise CurateError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        self.on_error = on_error
        self.path = path
        self.stack = stack
        self.stream = None
        self.count = 0

    def __call__(self, error: RecordError, raw=None) -> None:
        if self.on_error == "fail":
            raise error
        self.set_aside(error, raw)

    def set_aside(self, error: RecordError, raw=None) -> None:
        """Record a reject whatever ``on_error`` says (the user asked for it, e.g. --drop-unreadable)."""
        self.count += 1
        if self.path is None:
            return
        if self.stream is None:
            self.stream = self.stack.enter_context(atomic_output(self.path))
        self.stream.write(dumps(Rejected(error, raw).as_json()))
        self.stream.write("\n")


def default_rejects_path(output: Path) -> Path:
    return output.with_name(output.name + ".rejects.jsonl")


def convert(inputs, output, from_: str = "auto", to: str = "llava", *, overwrite: bool = False,
            on_error: str = "fail", rejects=None, image_root=None, image_prefix: str | None = None,
            seed: int = 0, extra: dict | None = None, boxes: str | None = None,
            show_progress: bool = False) -> Report:
    """Read every input with one reader, write one output with one writer.

    Nothing is lost: each input record is written or rejected with a reason
    (``on_error="skip"`` writes rejects to ``rejects``, default ``OUTPUT.rejects.jsonl``).
    The output appears only if the whole run succeeds. Boxes in the text are rewritten
    when the reader's convention differs from the writer's (or ``boxes``, to override it).
    """
    started = time.monotonic()
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not inputs:
        raise CurateError("no input files given")
    output = Path(output)
    for path in inputs:
        _check_input(path)
    readers = [(path, resolve_reader(from_, path)) for path in inputs]
    writer = resolve_writer(to)
    check_output(output, inputs=inputs, overwrite=overwrite)
    rejects_path = Path(rejects) if rejects else default_rejects_path(output)
    if rejects_path is not None:
        check_output(rejects_path, inputs=inputs + [output], overwrite=True)

    report = Report([str(p) for p in inputs], str(output),
                    ",".join(sorted({r.name for _, r in readers})), writer.name)
    base = dict(image_root=Path(image_root) if image_root else None, image_prefix=image_prefix,
                seed=seed, extra=dict(extra or {}), state={})
    locator = ImageLocator(image_root)
    target_style = writer.box_style
    if boxes:
        target_style = style_for(boxes, writer.box_style or BRACKET_PADDED)
    rewriters = {reader.name: BoxRewriter(reader.box_style, target_style, locator) for _, reader in readers}
    total_bytes = sum(p.stat().st_size for p in inputs)
    with contextlib.ExitStack() as stack:
        sink = RejectSink(on_error, rejects_path, stack)
        bar = stack.enter_context(ProgressBar(f"{report.reader} → {writer.name}", total_bytes,
                                              enabled=show_progress))
        counts = {"read": 0, "reader_rejects": 0}
        duplicates = DuplicateIds()

        def reader_reject(error, raw=None):
            counts["reader_rejects"] += 1
            sink(error, raw)

        def samples():
            for path, reader in readers:
                opts = Options(progress=bar.advance, reject=reader_reject, **base)
                rewriter = rewriters[reader.name]
                for sample in reader.read(path, opts):
                    counts["read"] += 1
                    duplicates.add(sample, path)
                    if image_prefix:
                        sample.image = apply_image_prefix(sample.image, image_prefix)
                    if rewriter.active:
                        try:
                            sample = rewriter.apply(sample, path)
                        except RecordError as error:
                            sink(error, None)
                            continue
                    yield sample

        out = stack.enter_context(atomic_output(output))
        write_opts = Options(path=output, reject=sink, **base)
        report.written = writer.write(bar.count(samples()), out, write_opts)

    report.records_in = counts["read"] + counts["reader_rejects"]
    report.rejected = sink.count
    if sink.count == 0 and rejects is None and rejects_path.exists():
        rejects_path.unlink()  # a stale list from an earlier run would mislead
    report.rejects_path = str(rejects_path) if sink.count else None
    report.seconds = time.monotonic() - started
    report.notes += list(base["state"].get("notes", {}).values())
    report.warnings += [w for w in [duplicates.warning()] if w]
    report.notes += [note for note in (r.note() for r in rewriters.values()) if note]
    report.check()
    return report


def apply_image_prefix(image, prefix: str):
    """Prefix bare file names (``000000033471.jpg``) with a folder; paths with a folder stay."""
    def one(path: str) -> str:
        return path if "/" in path else prefix.rstrip("/") + "/" + path
    if image is None:
        return None
    if isinstance(image, list):
        return [one(p) for p in image]
    return one(image)
