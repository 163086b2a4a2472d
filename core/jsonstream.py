"""Stream the records of a JSON array or a JSON Lines file, and write them back.

A 1 GB LLaVA file is one JSON array on a single line, so reading it with
``json.load`` costs gigabytes. Here the bytes are decoded in chunks and each
record is parsed with the C scanner behind ``json.JSONDecoder.raw_decode``:
memory stays at a chunk plus one record, whatever the file size.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from pathlib import Path
from typing import Callable, Iterator

from .errors import RecordError

CHUNK_CHARS = 1 << 20
# A record is parsed once the buffer holds this many characters past its start (or the file's
# end): a parse that fails at the buffer's end costs a scan of the whole buffer (JSONDecodeError
# counts the lines before the failure), which once per chunk was 5% of reading LLaVA's records.
RECORD_MARGIN = 1 << 16
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_BLANKS = frozenset(" \t\n\r")
def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


# A \uD800-\uDFFF escape may leave a lone surrogate, which no UTF-8 output can hold.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_INFINITE = (float("inf"), float("-inf"))
MAX_DEPTH_MESSAGE = "the record is nested too deeply to be a dataset record"


def value_problem(value) -> str | None:
    """Why ``value`` would not come out as it went in: text that cannot be written as UTF-8
    (a lone surrogate), or a number too large for a float. None when it is fine."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and item in (float("inf"), float("-inf")):
            return "a number is too large for a 64-bit float (it would be written as null)"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                return (f"text holds a lone surrogate {item[e.start]!r} (an unpaired \\u{ord(item[e.start]):04x} "
                        "escape), which is not valid Unicode")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def strict_decoder() -> tuple[json.JSONDecoder, list]:
    """Strict JSON: NaN and Infinity (which Python would accept) are errors, so that nothing is
    silently changed on the way out; and a number that overflows to infinity (``1e400``, which
    would be written as null) is noted in the list returned beside the decoder."""
    overflowed: list[str] = []

    def parse_float(text: str) -> float:
        value = float(text)
        if value in _INFINITE:
            overflowed.append(text)
        return value

    return json.JSONDecoder(parse_constant=_reject_constant, parse_float=parse_float), overflowed


def _problem(value, raw: str, start: int, end: int, overflowed: list) -> str | None:
    """What :func:`value_problem` would say of a record parsed from ``raw[start:end]``, with
    the walk done only when the text shows a reason to (cheap otherwise)."""
    if overflowed:
        overflowed.clear()
        return "a number is too large for a 64-bit float (it would be written as null)"
    if raw.find("\\u", start, end) != -1 and _SURROGATE_ESCAPE.search(raw, start, end):
        return value_problem(value)
    return None

try:
    import orjson
except ImportError:  # orjson is a dependency; this keeps a bare environment working
    orjson = None
_LINE_EXTENSIONS = (".jsonl", ".ndjson")
UTF8_BOM = codecs.BOM_UTF8

ProgressCallback = Callable[[int], None]


NOT_FINITE = "a number is NaN or infinite, which JSON cannot spell"


def dumps(value, *, indent: int | None = None, default=None) -> str:
    """``value`` as JSON text, non-ASCII kept as is; compact (orjson, about 3x json's speed)
    unless ``indent``. Every JSON file curate writes comes from here (or :func:`dumps_bytes`),
    so it is always valid JSON: NaN and infinities raise ValueError (json would write NaN or
    Infinity, which JSON parsers refuse; orjson would write null, which changes the data)."""
    if indent is None:
        return dumps_bytes(value, default=default).decode()
    return _stdlib_dumps(value, indent, default)


def dumps_bytes(value, *, default=None) -> bytes:
    """:func:`dumps`'s compact JSON as UTF-8 bytes, as orjson makes them (for a file: no
    decoding to text to be encoded again)."""
    if orjson is not None:
        try:
            data = orjson.dumps(value, default=default)
        except (TypeError, orjson.JSONEncodeError):
            pass  # integers beyond 64 bits and the like: the standard library takes them
        else:
            if b"null" in data and _not_finite(value):
                raise ValueError(NOT_FINITE)
            return data
    return _stdlib_dumps(value, None, default).encode()


def _stdlib_dumps(value, indent: int | None, default) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=indent, default=default)
    except ValueError:
        if _not_finite(value):
            raise ValueError(NOT_FINITE) from None
        raise


def _not_finite(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def with_member(text: str, key: str, value) -> str:
    """``text``, a valid JSON object, with member ``key`` set to ``value`` (written with two-space
    indents) and every other character as it was: other members are never parsed and written
    again, so nothing of theirs changes (``1e999`` would come back as Infinity, ``1.10`` as 1.1)."""
    decoder = json.JSONDecoder()
    member = dumps(value, indent=2).replace("\n", "\n  ")
    start = text.index("{")
    pos = _WHITESPACE.match(text, start + 1).end()
    last_end, spans = None, []
    while text[pos] != "}":
        name, pos = decoder.raw_decode(text, pos)
        pos = _WHITESPACE.match(text, pos).end() + 1           # past the colon
        value_start = _WHITESPACE.match(text, pos).end()
        _, last_end = decoder.raw_decode(text, value_start)
        if name == key:
            spans.append((value_start, last_end))
        pos = _WHITESPACE.match(text, last_end).end()
        if text[pos] == ",":
            pos = _WHITESPACE.match(text, pos + 1).end()
    for value_start, value_end in reversed(spans):
        text = text[:value_start] + member + text[value_end:]
    if spans:
        return text
    entry = f"{dumps(key)}: {member}"
    if last_end is None:
        return f"{text[:start + 1]}\n  {entry}\n{text[pos:]}"
    return f"{text[:last_end]},\n  {entry}{text[last_end:]}"


def detect_layout(path: Path) -> str:
    """``"array"`` for a JSON array, ``"lines"`` for JSON Lines; by extension, then content."""
    path = Path(path)
    if path.suffix.lower() in _LINE_EXTENSIONS:
        return "lines"
    head = read_head(path)
    stripped = head.lstrip()
    if not stripped:
        raise RecordError(path, "the file is empty: expected a JSON array of records or JSON Lines")
    if stripped[0] == "[":
        return "array"
    if stripped[0] == "{":
        first_line = stripped.split("\n", 1)[0]
        try:
            value = json.loads(first_line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return "lines"
        raise RecordError(path, "the top level is a single JSON object: expected a list of records "
                                "(a JSON array) or one record per line (JSON Lines)", line=1)
    raise RecordError(path, f"the top level is not a list of records (it starts with {stripped[:20]!r})",
                      line=1)


def read_head(path: Path, size: int = 65536) -> str:
    """The first characters of a file, for sniffing (BOM dropped, bad bytes replaced)."""
    with open(path, "rb") as f:
        data = f.read(size)
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    return data.decode("utf-8", errors="replace")


def iter_records(path: Path, progress: ProgressCallback | None = None) -> Iterator[tuple[int, object]]:
    """Yield ``(index, value)`` for every record, whichever the layout.

    In JSON Lines a line that is not valid JSON is yielded as a :class:`RecordError`
    value (the reader decides whether to stop or skip it). In an array, broken JSON
    makes the rest unreadable, so it raises.
    """
    path = Path(path)
    if detect_layout(path) == "lines":
        return iter_json_lines(path, progress)
    return iter_json_array(path, progress)


class _CharStream:
    """UTF-8 text in chunks from a binary file, with byte offsets for error messages."""

    def __init__(self, path: Path, progress: ProgressCallback | None):
        self.path = path
        self.file = open(path, "rb")
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.bytes_done = 0
        self.progress = progress
        self.eof = False
        self.first = True

    def read(self, size: int) -> str:
        data = self.file.read(size)
        if not data:
            self.eof = True
        if self.first:
            self.first = False
            if data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM):]
                self.bytes_done += len(UTF8_BOM)
        try:
            text = self.decoder.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            raise RecordError(self.path, f"invalid UTF-8 at byte {self.bytes_done + e.start}: "
                                         "the file must be UTF-8 text") from None
        self.bytes_done += len(data)
        if self.progress is not None and data:
            self.progress(len(data))
        return text

    def close(self):
        self.file.close()


def _needs_more(error: json.JSONDecodeError, buffer_length: int) -> bool:
    """True when a parse error may only mean the record continues in the next chunk."""
    return error.msg.startswith("Unterminated string") or error.pos >= buffer_length - 32


def iter_json_array(path: Path, progress: ProgressCallback | None = None) -> Iterator[tuple[int, object]]:
    stream = _CharStream(path, progress)
    decoder, overflowed = strict_decoder()
    scan_once = decoder.scan_once
    buf = ""
    base = 0       # offset in the file of buf[0], in characters
    pos = 0
    index = 0

    def fail(reason: str, at: int, record_index=None):
        line, column = line_and_column(path, base + at)
        raise RecordError(path, reason, index=record_index, line=line, column=column)

    def compact():
        """Drop the characters already parsed."""
        nonlocal buf, base, pos
        buf = buf[pos:]
        base += pos
        pos = 0

    def refill(size: int = CHUNK_CHARS) -> bool:
        nonlocal buf
        if stream.eof:
            return False
        compact()
        buf += stream.read(size)
        return True

    def skip_whitespace() -> bool:
        """Move pos to the next non-blank character; False at the end of the file."""
        nonlocal pos
        while True:
            if pos < len(buf) and buf[pos] not in _BLANKS:
                return True             # no blank to skip (one-line files): no regular expression
            pos = _WHITESPACE.match(buf, pos).end()
            if pos < len(buf):
                return True
            if not refill():
                return False

    try:
        if not skip_whitespace() or buf[pos] != "[":
            fail("the top level is not a JSON array of records", pos)
        pos += 1
        expecting_value = False
        while True:
            if not skip_whitespace():
                fail("the JSON ends before the array is closed (truncated file?)", pos, index)
            if buf[pos] == "]":
                if expecting_value:
                    fail("invalid JSON: a comma before ']' (trailing comma)", pos, index)
                pos += 1
                break
            if len(buf) - pos < RECORD_MARGIN:
                refill()        # see RECORD_MARGIN
            size = CHUNK_CHARS
            while True:
                overflowed.clear()
                try:
                    try:
                        value, end = scan_once(buf, pos)        # raw_decode, without its Python frame
                    except StopIteration as stop:
                        raise json.JSONDecodeError("Expecting value", buf, stop.value) from None
                except RecursionError:
                    fail(MAX_DEPTH_MESSAGE, pos, index)
                except json.JSONDecodeError as e:
                    if _needs_more(e, len(buf)) and refill(size):
                        size *= 2
                        continue
                    if e.msg.startswith("Unterminated string") or e.pos >= len(buf.rstrip()):
                        fail("the JSON ends inside a record (truncated file?)", e.pos, index)
                    fail(f"invalid JSON: {e.msg}", e.pos, index)
                except ValueError as e:    # NaN, Infinity, overflow, lone surrogates
                    fail(f"invalid JSON: {e}", pos, index)
                if end == len(buf) and refill(size):
                    continue  # a number or literal may go on in the next chunk: parse again
                break
            problem = _problem(value, buf, pos, end, overflowed)
            if problem:
                line, column = line_and_column(path, base + pos)
                value = RecordError(path, f"invalid JSON: {problem}", index=index, line=line, column=column)
            yield index, value
            index += 1
            pos = end
            if pos > CHUNK_CHARS:
                compact()
            if not skip_whitespace():
                fail("the JSON ends before the array is closed (truncated file?)", pos, index)
            if buf[pos] == ",":
                pos += 1
                expecting_value = True
            elif buf[pos] == "]":
                pos += 1
                break
            else:
                fail(f"invalid JSON after record {index - 1}: expected ',' or ']'", pos)
        if skip_whitespace():
            fail("unexpected data after the end of the JSON array (trailing garbage)", pos)
    finally:
        stream.close()


def iter_json_lines(path: Path, progress: ProgressCallback | None = None) -> Iterator[tuple[int, object]]:
    index = 0
    decoder, overflowed = strict_decoder()
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if progress is not None:
                progress(len(raw))
            if line_number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                overflowed.clear()
                value = decoder.decode(text)
                problem = _problem(value, text, 0, len(text), overflowed)
                if problem:
                    value = RecordError(path, f"invalid JSON: {problem}", index=index, line=line_number)
            except RecursionError:
                value = RecordError(path, MAX_DEPTH_MESSAGE, index=index, line=line_number)
            except UnicodeDecodeError as e:
                value = RecordError(path, f"invalid UTF-8 at byte {e.start} of the line",
                                    index=index, line=line_number)
            except json.JSONDecodeError as e:
                value = RecordError(path, f"invalid JSON: {e.msg}", index=index,
                                    line=line_number, column=e.colno)
            except ValueError as e:     # NaN, Infinity, overflow, lone surrogates
                value = RecordError(path, f"invalid JSON: {e}", index=index, line=line_number)
            yield index, value
            index += 1


def line_and_column(path: Path, char_offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset (only computed for error messages)."""
    line, column, seen = 1, 1, 0
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:
        while seen < char_offset:
            chunk = f.read(min(CHUNK_CHARS, char_offset - seen))
            if not chunk:
                break
            newlines = chunk.count("\n")
            if newlines:
                line += newlines
                column = len(chunk) - chunk.rfind("\n")
            else:
                column += len(chunk)
            seen += len(chunk)
    return line, column
