"""Stream the records of a JSON array or a JSON Lines file, and write them back.

A 1 GB LLaVA file is one JSON array on a single line, so reading it with
``json.load`` costs gigabytes. Here the file is read in chunks: memory stays at a
few chunks plus the records in hand, whatever the file size.

Records are parsed by orjson, a batch of them at a time straight from the bytes,
wherever orjson's answer is sure to be the strict reader's; everything else (NaN,
numbers too large, lone surrogates, broken JSON and its error positions) goes the
exact way: each record decoded to text and parsed with the C scanner behind
``json.JSONDecoder.raw_decode``, with the checks below.
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
CHECK_PIECE = 1 << 16       # bytes checked as UTF-8 at a time (see _ByteStream._check)
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
    """UTF-8 text in chunks from a binary file, with byte offsets for error messages (the
    exact reader's own reading, used when a file turns out not to be UTF-8: see _NotUtf8)."""

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


class _NotUtf8(Exception):
    """The file is not UTF-8 past the bytes read so far. The exact reader stops there (with the
    error or an earlier one) at a moment that depends on how far ahead of its record it has
    read: iter_json_array then reads the file again as the exact reader does, from the start,
    handing out only the records it has not yet. Bytes are checked far enough ahead of the
    records handed out (see ``ahead`` in iter_json_array) that the exact reader would have
    handed them out too."""


class _ByteStream:
    """The file's bytes from offset ``start`` on, in ``data``; each chunk is checked as UTF-8
    as it is read (nearly free when it is ASCII), raising _NotUtf8."""

    def __init__(self, path: Path, progress: ProgressCallback | None):
        self.file = open(path, "rb")
        self.progress = progress
        self.data = bytearray()
        self.start = 0
        self.eof = False
        self.checker = codecs.getincrementaldecoder("utf-8")()
        self.bytes_read = 0     # BOM included, as progress was told

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def fill(self, end: int) -> None:
        """Read on until the bytes up to file offset ``end`` are in (or the file ends)."""
        while not self.eof and self.start + len(self.data) < end:
            chunk = self.file.read(CHUNK_CHARS)
            self.bytes_read += len(chunk)
            if self.progress is not None and chunk:
                self.progress(len(chunk))
            self.eof = not chunk
            if self.bytes_read == len(chunk) and chunk.startswith(UTF8_BOM):
                chunk = chunk[len(UTF8_BOM):]
                self.start = len(UTF8_BOM)
            try:
                if self.eof:
                    self.checker.decode(b"", final=True)
                elif not chunk.isascii() or self.checker.getstate()[0]:
                    self._check(chunk)
            except UnicodeDecodeError:
                raise _NotUtf8 from None
            self.data += chunk

    def _check(self, chunk: bytes) -> None:
        """Check ``chunk`` as UTF-8 a piece at a time, skipping the ASCII pieces that no
        sequence of the previous piece runs into: a megabyte of records nearly always holds
        some non-ASCII text, while most of its 64 KB pieces hold none (0.07 s against 0.50 s
        for 243 MB of LLaVA records)."""
        checker = self.checker
        for at in range(0, len(chunk), CHECK_PIECE):
            piece = chunk[at:at + CHECK_PIECE]
            if not piece.isascii() or checker.getstate()[0]:
                checker.decode(piece)

    def drop(self, offset: int) -> None:
        """Forget the bytes before file offset ``offset`` (a bytearray drops its head in place)."""
        if offset > self.start:
            del self.data[:offset - self.start]
            self.start = offset

    def close(self):
        self.file.close()


def _bom_length(path: Path) -> int:
    with open(path, "rb") as f:
        return len(UTF8_BOM) if f.read(len(UTF8_BOM)) == UTF8_BOM else 0


# orjson reads at most BATCH_BYTES of records at a time, cut before a record that opens like the
# first of the batch (`{"id"`, from the bytes themselves: a quote inside a string is escaped, so
# this is never text) after a comma. A cut that is not between two records leaves a bracket or a
# string open, so the batch fails and goes the exact way.
BATCH_BYTES = 1 << 15
_OPENING = re.compile(rb'\{[ \t\n\r]*"[^"\\]*"')
_JSON_BLANKS = b" \t\n\r"
# orjson turns an integer beyond 64 bits into a float; the strict reader keeps it exact. Any run
# of 19 digits (in a string too) sends the batch the exact way. Found by mapping every digit to
# "0" and everything else to a blank, then looking for 19 zeros: two passes in C, about 20x
# faster than a regular expression (0.2 s against 4.5 s for 231 MB, most of the reading time).
_DIGIT_MASK = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds 19 digits in a row."""
    return data.translate(_DIGIT_MASK).find(_NINETEEN_DIGITS) != -1


# orjson refuses nesting past 1024; the C scanner stops at Python's recursion limit, less the
# stack in use. A batch sits in _PADDING lists (checked to hold one item each), so orjson refuses
# any record nested more than FAST_DEPTH deep: those go the exact way, which reaches past that
# (checked once per file, or nothing goes to orjson).
FAST_DEPTH = 768
_PADDING = 1024 - FAST_DEPTH - 1
_PAD_OPEN, _PAD_CLOSE = b"[" * (_PADDING + 1), b"]" * (_PADDING + 1)
_PADS = range(_PADDING)


def _fast_batch(source: _ByteStream, start: int) -> tuple[list | None, int | None]:
    """The records from file offset ``start`` (a record's first byte) to a cut, parsed by orjson,
    and where the next record starts (None: the array closes there, and nothing but blanks
    follows). (None, offset) when they must go the exact way, at least up to offset."""
    data, at = source.data, start - source.start
    opening = _OPENING.match(data, at)
    if opening is None:
        return None, start
    limit = at + BATCH_BYTES
    cut = data.rfind(opening.group(), at + 1, limit)
    if cut != -1:
        end = data.rfind(b",", at, cut)
        if end <= at or data[end + 1:cut].strip(_JSON_BLANKS):
            return None, source.start + cut
        following = source.start + cut
    elif source.eof and len(data) <= limit:
        end = data.rfind(b"]", at)
        if end == -1 or data[end + 1:].strip(_JSON_BLANKS):
            return None, source.end
        following = None
    else:
        return None, start
    padded = b"".join((_PAD_OPEN, memoryview(data)[at:end], _PAD_CLOSE))
    if _has_long_digits(padded):
        return None, source.start + end
    try:
        values = orjson.loads(padded)
        for _ in _PADS:
            (values,) = values      # one item at every level, or the batch was not whole records
    except (orjson.JSONDecodeError, ValueError):
        return None, source.start + end
    return values, following


def _stdlib_reaches(scan_once, depth: int) -> bool:
    """Whether the C scanner parses lists nested ``depth`` deep from here (one frame deeper
    than its caller: on the safe side)."""
    try:
        scan_once("[" * depth + "]" * depth, 0)
    except RecursionError:
        return False
    return True


def _reported_after(progress: ProgressCallback | None, done: int) -> ProgressCallback | None:
    """``progress``, silent for the first ``done`` bytes (already reported once)."""
    if progress is None or not done:
        return progress
    left = [done]

    def report(count: int) -> None:
        skipped = min(count, left[0])
        left[0] -= skipped
        if count > skipped:
            progress(count - skipped)
    return report


def iter_json_array(path: Path, progress: ProgressCallback | None = None) -> Iterator[tuple[int, object]]:
    """Yield ``(index, record)`` for every record of a JSON array, each exactly as the strict
    reader gives it: batches of records go to orjson (``_fast_batch``), and whenever its answer
    might differ, the records are parsed one by one from decoded text (the exact way, whose
    errors name the line and column)."""
    decoder, overflowed = strict_decoder()
    scan_once = decoder.scan_once
    fast = orjson is not None and _stdlib_reaches(scan_once, FAST_DEPTH + 64)
    # How far past a record's first byte the exact reader may have read when it hands the record
    # out (see _NotUtf8): its margin (in characters, up to 4 bytes each) and a chunk; for a record
    # longer than the margin, the doubled reads too (up to 4 times its bytes and 3 chunks).
    ahead = 4 * RECORD_MARGIN + CHUNK_CHARS + 256
    longest = 0 if BATCH_BYTES < RECORD_MARGIN else 4 * BATCH_BYTES + 3 * CHUNK_CHARS
    skip = 0        # records already handed out, when reading a second time
    reported = 0
    while True:
        source = _ByteStream(path, progress) if fast else None
        stream = None if fast else _CharStream(path, _reported_after(progress, reported))
        buf = ""
        pos = 0
        base = _bom_length(path)    # file offset of buf[0], in bytes
        text_end = base             # file offset of the bytes after buf's text (source only)
        mark = (0, base)            # a character of buf and its file offset (byte_at)
        cur = None      # the file offset of the next record when reading with orjson (buf unused)
        exact_until = 0  # the exact way goes on until a record starts at or past this character
        misses = 0      # batches in a row that went the exact way
        needed = 0      # bytes to have checked before handing out a record
        index = 0

        def byte_at(at: int) -> int:
            nonlocal mark
            char, offset = mark if at >= mark[0] else (0, base)
            mark = (at, offset + len(buf[char:at].encode()))
            return mark[1]

        def fail(reason: str, at: int, record_index=None):
            line, column = line_and_column(path, byte_at(at))
            raise RecordError(path, reason, index=record_index, line=line, column=column)

        def compact():
            """Drop the characters already parsed."""
            nonlocal buf, base, pos, mark, exact_until
            base = byte_at(pos)
            buf = buf[pos:]
            exact_until -= pos
            mark = (0, base)
            pos = 0
            if source is not None:
                source.drop(base)

        def refill(size: int | None = None) -> bool:
            nonlocal buf, text_end
            if stream is not None:
                if stream.eof:
                    return False
                compact()
                buf += stream.read(size or CHUNK_CHARS)
                return True
            if source.eof and text_end == source.end:
                return False
            compact()
            # the exact way between batches decodes a stretch at a time, not a chunk; at least a
            # character (4 bytes) so that it moves on
            size = max(4, size or min(CHUNK_CHARS, BATCH_BYTES + RECORD_MARGIN))
            source.fill(text_end + size + ahead)
            at = text_end - source.start
            text, used = codecs.utf_8_decode(source.data[at:at + size], "strict",
                                             source.eof and at + size >= len(source.data))
            buf += text
            text_end += used
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
                if cur is None:
                    if not skip_whitespace():
                        fail("the JSON ends before the array is closed (truncated file?)", pos, index)
                    if buf[pos] == "]":
                        if expecting_value:
                            fail("invalid JSON: a comma before ']' (trailing comma)", pos, index)
                        pos += 1
                        break
                    if fast and pos >= exact_until:
                        cur = byte_at(pos)
                if cur is not None:
                    source.drop(base)
                    source.fill(max(cur + BATCH_BYTES + ahead + longest, needed))
                    values, following = _fast_batch(source, cur)
                    if values is not None:
                        misses = 0
                        for value in values:
                            yield index, value
                            index += 1
                        if following is None:
                            return                  # the array closed, blanks after it
                        buf, pos, base, text_end, mark = "", 0, following, following, (0, following)
                        cur = following
                        expecting_value = True
                        continue
                    # the exact way, at least up to `following`, further after failures in a row
                    misses += 1
                    exact_until = pos + max(following - cur, BATCH_BYTES << min(misses, 6))
                    cur = None
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
                    line, column = line_and_column(path, byte_at(pos))
                    value = RecordError(path, f"invalid JSON: {problem}", index=index, line=line, column=column)
                if source is not None:      # the bytes the exact reader would have read by now
                    longer = 4 * len(buf[pos:end].encode()) + 3 * CHUNK_CHARS if end - pos >= RECORD_MARGIN else 0
                    needed = max(needed, text_end + ahead + longer)
                    source.fill(needed)
                if index >= skip:
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
            return
        except _NotUtf8:
            skip, fast, reported = index, False, source.bytes_read
        finally:
            (source or stream).close()


def iter_json_lines(path: Path, progress: ProgressCallback | None = None) -> Iterator[tuple[int, object]]:
    """Yield ``(index, record)`` for every line that is not blank; a line orjson reads the way the
    strict reader would (see _fast_batch: no 19 digits in a row, and no more brackets than
    FAST_DEPTH, or nesting that deep) is read by orjson, the others the exact way."""
    index = 0
    decoder, overflowed = strict_decoder()
    fast = orjson is not None and _stdlib_reaches(decoder.scan_once, FAST_DEPTH + 64)
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if progress is not None:
                progress(len(raw))
            if line_number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            if not raw.strip():
                continue
            if fast and (len(raw) <= FAST_DEPTH or raw.count(b"[") + raw.count(b"{") <= FAST_DEPTH) \
                    and not _has_long_digits(raw):
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    pass
                else:
                    yield index, value
                    index += 1
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


def line_and_column(path: Path, byte_offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset of a UTF-8 file (only computed for
    error messages; a BOM is no character)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    line, column, left = 1, 1, byte_offset
    with open(path, "rb") as f:
        while left > 0:
            data = f.read(min(CHUNK_CHARS, left))
            if not data:
                break
            left -= len(data)
            chunk = decoder.decode(data, final=left == 0)
            newlines = chunk.count("\n")
            if newlines:
                line += newlines
                column = len(chunk) - chunk.rfind("\n")
            else:
                column += len(chunk)
    return line, column
