"""What a reader and a writer are, and the options they receive."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from .errors import RecordError
from .sample import Sample


@dataclass
class Options:
    """Options shared by readers and writers.

    ``reject(error, raw)`` is how a reader or writer hands over a record it cannot
    handle: it raises the error when the user asked to stop on errors (the default),
    or sets the record aside, with its reason, under ``--on-error skip``.
    """

    image_root: Path | None = None
    image_prefix: str | None = None
    seed: int = 0
    extra: dict[str, str] = field(default_factory=dict)      # -O key=value, for plugin options
    progress: Callable[[int], None] | None = None             # bytes read so far, for progress bars
    reject: Callable[[RecordError, object], None] = None      # set by the engine
    path: Path | None = None                                  # the output path, for writers
    state: dict = field(default_factory=dict)                 # shared by every file of one run

    def __post_init__(self):
        if self.reject is None:
            self.reject = raise_error

    def option(self, key: str, default=None):
        return self.extra.get(key, default)


def raise_error(error: RecordError, raw=None):
    raise error


class Reader:
    """Base class for readers. Subclasses set ``name`` and implement ``read``.

    ``box_style``: how boxes in its text are written and what they mean (None: no boxes).
    ``cli_options``: click options that `curate convert` shows for this format; their values
    reach ``read`` in ``options.extra`` under the option's name (``--svit-task`` → ``svit_task``).
    """

    name: str = ""
    description: str = ""
    box_style = None
    cli_options: list = []

    def sniff(self, path: Path, head: str) -> int:
        """How sure this reader is that it can read ``path`` (0: not mine; higher wins).

        ``head`` is the first 64 KB of the file as text.
        """
        return 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        raise NotImplementedError


class Writer:
    """Base class for writers. Subclasses set ``name`` and implement ``write``; ``box_style``
    and ``cli_options`` as for readers."""

    name: str = ""
    description: str = ""
    box_style = None
    cli_options: list = []

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        """Write every sample to ``stream``; return how many were written."""
        raise NotImplementedError


def samples_from_json(path: Path, options: Options, to_sample) -> Iterator[Sample]:
    """Each record of a JSON array or JSON Lines file through ``to_sample(record, path, index)``;
    a record it refuses (RecordError), or a line that is not JSON, goes to ``options.reject``."""
    from .jsonstream import iter_records
    for index, record in iter_records(path, options.progress):
        if isinstance(record, RecordError):
            options.reject(record, None)
            continue
        try:
            sample = to_sample(record, path, index)
        except RecordError as error:
            options.reject(error, record)
            continue
        yield sample


def head_has_keys(head: str, *keys: str) -> bool:
    return all(json.dumps(k) in head for k in keys)
