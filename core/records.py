"""Record-level helpers that several formats share: JSON type names for messages, the
checks every LLaVA-shaped record gets, and writing dicts as a JSON array or JSON Lines."""

from __future__ import annotations

import codecs
import io
import os
from pathlib import Path
from typing import Callable, Iterable, TextIO

from .jsonstream import dumps_bytes


def unsafe_image_path(path: str) -> str | None:
    """Why an image path could escape the image root, or None."""
    if path.startswith(("/", "\\", "~")) or (len(path) > 1 and path[1] == ":"):
        return f"the image path {path!r} is absolute; it must be relative to the image root"
    if ".." in path.replace("\\", "/").split("/"):
        return f"the image path {path!r} climbs out of the image root with '..'"
    return None


def turn_order_problem(roles: list[str]) -> str | None:
    """Turns alternate human, gpt, ... (system turns only at the start); ``roles``: each turn's."""
    if roles == _ALTERNATING[:len(roles)]:
        return None                     # the common case, compared without a loop in Python
    start = 0
    while start < len(roles) and roles[start] == "system":
        start += 1
    expected = "human"
    for k in range(start, len(roles)):
        if roles[k] != expected:
            return (f"roles out of order: turn {k} is {roles[k]!r}, expected {expected!r} "
                    "(turns alternate human, gpt)")
        expected = "gpt" if expected == "human" else "human"
    return None


_ALTERNATING = ["human", "gpt"] * 32


def json_type(value) -> str:
    """The JSON name of a value's type, for error messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def write_records(records: Iterable[dict], stream: TextIO, path: Path | None) -> int:
    """Write dicts as JSON Lines (``.jsonl``/``.ndjson``) or as a JSON array (anything else),
    a thousand records to a write."""
    lines = path is not None and path.suffix.lower() in (".jsonl", ".ndjson")
    write = bytes_writer(stream)
    count, batch = 0, []

    def flush():
        if lines:
            write(b"\n".join(batch) + b"\n")
        else:
            write((b"\n" if count == len(batch) else b",\n") + b",\n".join(batch))
        batch.clear()

    if not lines:
        write(b"[")
    for record in records:
        batch.append(dumps_bytes(record))
        count += 1
        if len(batch) == _WRITE_BATCH:
            flush()
    if batch:
        flush()
    if not lines:
        write(b"\n]\n" if count else b"]\n")
    return count


_WRITE_BATCH = 1000


def bytes_writer(stream: TextIO) -> Callable[[bytes], object]:
    """How to write UTF-8 bytes to the text ``stream``: straight to the binary file under it
    when it is a UTF-8 text file (what its text layer holds is flushed first), else decoded to
    text. orjson makes bytes; decoding them for the text layer to encode them again cost a
    tenth of a LLaVA -> LLaVA conversion. Such a file writes "\\n" as it is on a system whose
    line separator is "\\n", unless opened with newline "\\r\\n" or "\\r" (curate's outputs
    are opened with "\\n")."""
    if (isinstance(stream, io.TextIOWrapper) and os.linesep == "\n"
            and codecs.lookup(stream.encoding).name == "utf-8"):
        stream.flush()
        return stream.buffer.write
    return lambda data: stream.write(data.decode())
