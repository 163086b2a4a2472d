import inspect
import json
import random
import sys

import pytest
from conftest import REAL, needs_shared

from curate import jsonstream
from curate.errors import RecordError
from curate.jsonstream import detect_layout, iter_records


def values(path):
    return [v for _, v in iter_records(path)]


@pytest.fixture(params=[(3, None), (7, None), (64, None), (64, 0), (1 << 20, None)])
def chunk(request, monkeypatch):
    """Tiny chunks put record, string, number and multi-byte boundaries everywhere; with no
    margin, every record that runs past the buffer fails to parse once and is parsed again."""
    size, margin = request.param
    monkeypatch.setattr(jsonstream, "CHUNK_CHARS", size)
    if margin is not None:
        monkeypatch.setattr(jsonstream, "RECORD_MARGIN", margin)
    return size


RECORDS = [
    {"id": 12345678, "value": "ü€😀 \"quoted\" \\ back", "n": -1.25e-7, "t": True, "f": False, "z": None},
    {"id": "b", "nested": {"a": [1, 2, {"b": "]"}]}, "s": "[{,}]"},
    {"id": 3, "long": "x" * 5000},
]


def test_array_matches_json_load_at_every_chunk_size(tmp_path, chunk):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(RECORDS, ensure_ascii=False, indent=1), encoding="utf-8")
    assert values(path) == RECORDS


def test_single_line_array(tmp_path, chunk):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    assert values(path) == RECORDS


def test_empty_array(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(" [ ] \n")
    assert values(path) == []


def test_json_lines_by_extension_and_by_content(tmp_path):
    text = "\n".join(json.dumps(r) for r in RECORDS) + "\n\n"
    for name in ("a.jsonl", "a.json"):
        path = tmp_path / name
        path.write_text(text)
        assert detect_layout(path) == "lines"
        assert values(path) == RECORDS


def test_byte_order_mark_is_accepted(tmp_path, chunk):
    path = tmp_path / "a.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORDS).encode())
    assert values(path) == RECORDS


@pytest.mark.parametrize("text, fragment", [
    ('[{"id": 1}, {"id": 2', "truncated"),
    ('[{"id": 1}, {"id": 2}', "truncated"),
    ('[{"id": 1}] xyz', "trailing garbage"),
    ('[{"id": 1},, {"id": 2}]', "invalid JSON"),
    ('[{"id": 1} {"id": 2}]', "expected ',' or ']'"),
    ('[{"id": 1},]', "invalid JSON"),
    ('[{"id": 1, "x": NaN}]', "NaN is not valid JSON"),
    ('"just a string"', "not a list"),
    ('{\n  "id": 1\n}', "single JSON object"),
    ("", "empty"),
])
def test_broken_json_raises_with_a_location(tmp_path, text, fragment, chunk):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RecordError) as info:
        values(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_error_gives_line_and_column(tmp_path, chunk):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"id": 1},\n  {"id": 2, "x": tru}\n]')
    with pytest.raises(RecordError) as info:
        values(path)
    assert info.value.line == 3 and info.value.index == 1


def test_invalid_utf8_names_the_byte(tmp_path, chunk):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"id": "a\xff"}]')
    with pytest.raises(RecordError, match="invalid UTF-8 at byte 10"):
        values(path)


def test_bad_json_line_is_yielded_as_an_error(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 1}\n{"id": \n{"id": 3}\n')
    got = values(path)
    assert got[0] == {"id": 1} and got[2] == {"id": 3}
    assert isinstance(got[1], RecordError) and got[1].line == 2


# --- orjson batches: the strict reader's answer, whatever the record ------------------------------

def outcome(path, reader=iter_records):
    """Everything a reader gives for ``path``: each record (its repr, so that 1 and 1.0 differ,
    and keys keep their order) or error, and the error it stops with."""
    got = []
    try:
        for index, value in reader(path):
            got.append((index, str(value) if isinstance(value, RecordError) else repr(value)))
    except RecordError as error:
        got.append(("raised", str(error), error.index, error.line, error.column))
    return got


def exact_outcome(path, monkeypatch, reader=iter_records):
    """The same through the exact way alone (as without orjson)."""
    with monkeypatch.context() as patch:
        patch.setattr(jsonstream, "orjson", None)
        return outcome(path, reader)


@pytest.fixture
def batches(monkeypatch):
    """Counts the batches orjson read (so that a test knows the fast path ran); batches of 4 KB,
    so that a file of a few hundred KB makes many."""
    monkeypatch.setattr(jsonstream, "BATCH_BYTES", 1 << 12)
    counts = {"read": 0, "refused": 0}
    original = jsonstream._fast_batch

    def counted(source, start):
        values, following = original(source, start)
        counts["read" if values is not None else "refused"] += 1
        return values, following
    monkeypatch.setattr(jsonstream, "_fast_batch", counted)
    return counts


def llava_records(count, odd_at=None, odd="0", lines=False):
    """LLaVA-like records as the release writes them (one line), or as JSON Lines; the one at
    ``odd_at`` holds ``odd`` (JSON text)."""
    parts = []
    for i in range(count):
        extra = f', "x": {odd}' if i == odd_at else ""
        parts.append(f'{{"id": "{i:012d}", "image": "coco/{i}.jpg", "conversations": [{{"from": "human", '
                     f'"value": "<image>\\nWhat is in the image? é"}}, {{"from": "gpt", "value": "A cat{i}."}}]'
                     f'{extra}}}')
    return "\n".join(parts) + "\n" if lines else "[" + ", ".join(parts) + "]"


# Values orjson reads differently from the strict reader (or not at all), and text that looks like
# a cut between records.
ODD_VALUES = [
    "18446744073709551616",             # beyond 64 bits: orjson makes a float of it
    "-9223372036854775809",
    "123456789012345678901234567890",
    "18446744073709551615",             # the largest orjson keeps exact: no difference either way
    "1e400", "-1.8e308",                # overflow: the strict reader's reject, orjson's error
    '"\\ud800"', '{"k": "a\\udc00b"}',   # lone surrogates: a reject
    '"\\ud83d\\ude00"',
    '{"a": 1, "b": 2, "a": 3}',         # duplicate keys: the last value, in the first place
    "NaN", "-Infinity",                 # the strict reader stops
    "[" * 800 + "]" * 800,              # deeper than orjson is trusted with
    "[" * 1010 + "]" * 1010,            # orjson reads it, the C scanner stops
    "[" * 5000 + "]" * 5000,            # deeper than the C scanner goes
    '"}, {\\"id\\": \\"1\\"}, {"',      # a cut's bytes inside a string
    '{"id": {"id": 1}}',                # a nested object that opens like a record
    "-0", "1.10", "1E5", "5e-324",
]


@pytest.mark.parametrize("odd", ODD_VALUES)
def test_a_batch_with_an_odd_record_gives_the_strict_readers_answer(tmp_path, monkeypatch, batches, odd):
    path = tmp_path / "a.json"
    path.write_text(llava_records(2000, odd_at=1234, odd=odd), encoding="utf-8")
    assert outcome(path) == exact_outcome(path, monkeypatch)
    assert batches["read"] > 10


def test_what_the_strict_reader_answers_for_odd_records(tmp_path, batches):
    """The answers themselves (the test above only compares): exact big integers, rejects
    located by line and column, duplicate keys as json.loads has them."""
    path = tmp_path / "a.json"
    for odd, check in [("18446744073709551616", lambda v: v["x"] == 2 ** 64 and type(v["x"]) is int),
                       ("-9223372036854775809", lambda v: v["x"] == -2 ** 63 - 1 and type(v["x"]) is int),
                       ('{"a": 1, "b": 2, "a": 3}', lambda v: list(v["x"].items()) == [("a", 3), ("b", 2)]),
                       ("1e400", lambda v: isinstance(v, RecordError) and "too large" in str(v) and v.line == 1),
                       ('"\\ud800"', lambda v: isinstance(v, RecordError) and "lone surrogate" in str(v))]:
        path.write_text(llava_records(2000, odd_at=1234, odd=odd), encoding="utf-8")
        got = dict(iter_records(path))
        assert len(got) == 2000 and check(got[1234]), odd
        assert got[1235]["id"] == "000000001235"
    assert batches["read"] > 10


def test_broken_json_deep_in_a_file_is_located_as_by_the_strict_reader(tmp_path, monkeypatch, batches):
    records = json.loads(llava_records(3000))
    text = json.dumps(records, indent=2, ensure_ascii=False)
    at = text.index('"A cat2500."')
    path = tmp_path / "a.json"
    for broken in (text[:at] + "tru" + text[at + 12:], text[:at] + '"A cat\t2500."' + text[at + 12:],
                   text[:at] + '"A cat2500.",' + text[at + 12:], text[:at - 40]):
        path.write_text(broken, encoding="utf-8")
        got = outcome(path)
        assert got == exact_outcome(path, monkeypatch)
        assert got[-1][0] == "raised" and got[-1][3] > 1000     # a line near the break
    assert batches["read"] > 10


def test_data_after_the_array_that_balances_the_brackets(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_text('[{"id": 1}],[{"a": 2}, {"id": 3}]')
    assert outcome(path) == exact_outcome(path, monkeypatch)
    assert "trailing garbage" in outcome(path)[-1][1]


@pytest.mark.parametrize("bad_byte_at, fails_with", [(2_000_000, "invalid UTF-8"), (3_000_000, "invalid JSON")])
def test_invalid_utf8_stops_the_reader_where_the_strict_reader_stops(tmp_path, monkeypatch, bad_byte_at,
                                                                      fails_with):
    """The strict reader decodes a chunk (1 MiB) before the records in it: a bad byte at 2,000,000
    (in the second chunk) stops it after the records of the first MB, before the broken record
    at 1.5 MB; one at 3,000,000 is read after it. The batches must stop at the same record with
    the same error."""
    text = llava_records(20000).encode()
    broken = text.index(b'"A cat9000."')
    data = bytearray(text[:broken] + b"tru" + text[broken + 12:])
    data[bad_byte_at:bad_byte_at + 1] = b"\xff"
    assert 1_500_000 < broken < 2_000_000
    path = tmp_path / "a.json"
    path.write_bytes(bytes(data))
    got = outcome(path)
    assert got == exact_outcome(path, monkeypatch)
    assert fails_with in got[-1][1]


@pytest.mark.parametrize("odd", ODD_VALUES)
def test_json_lines_read_by_orjson_give_the_strict_readers_answer(tmp_path, monkeypatch, odd):
    path = tmp_path / "a.jsonl"
    path.write_text(llava_records(50, odd_at=20, odd=odd, lines=True), encoding="utf-8")
    got = outcome(path)
    assert got == exact_outcome(path, monkeypatch)
    assert len(got) == 50 or got[20][1].startswith(str(path))    # one line each, the odd one read


def test_a_low_recursion_limit_leaves_deep_records_to_the_strict_reader(tmp_path, monkeypatch):
    """Where the C scanner cannot reach FAST_DEPTH (a low recursion limit, a deep stack), orjson
    would read records that it refuses: nothing goes to orjson then."""
    path = tmp_path / "a.json"
    path.write_text(llava_records(300, odd_at=100, odd="[" * 700 + "]" * 700), encoding="utf-8")
    depth = len(inspect.stack(0))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 600)
    try:
        got = outcome(path)
    finally:
        sys.setrecursionlimit(limit)
    assert got[-1][0] == "raised" and jsonstream.MAX_DEPTH_MESSAGE in got[-1][1] and got[-1][2] == 100


def test_long_digit_runs_are_found_at_nineteen():
    from curate.jsonstream import _has_long_digits
    assert _has_long_digits(b'{"a": 1234567890123456789}')
    assert _has_long_digits(b"[" + b"9" * 40 + b"]")
    assert not _has_long_digits(b'{"a": 123456789012345678}')          # 18: orjson keeps it exact
    assert not _has_long_digits(b"123456789.0123456789 1e123456789012")
    assert not _has_long_digits("\u0661\u0662\u0663".encode() * 10)        # Arabic-Indic digits are text


@pytest.mark.parametrize("bad_byte_at", [500_000, 2_500_000, 4_200_000, -3])
def test_not_utf8_far_into_the_file_stops_where_the_strict_reader_stops(tmp_path, monkeypatch, bad_byte_at):
    """A bad byte anywhere (in the first chunk, past a few, in the last record) gives the strict
    reader's records and error."""
    data = bytearray(llava_records(25000).encode())
    data[bad_byte_at] = 0xFF
    path = tmp_path / "a.json"
    path.write_bytes(bytes(data))
    got = outcome(path)
    assert got == exact_outcome(path, monkeypatch)
    assert "invalid UTF-8" in got[-1][1]



@pytest.mark.parametrize("piece", [1, 2, 3, 5, 64])
def test_utf8_is_checked_across_the_pieces_of_a_chunk(tmp_path, monkeypatch, piece):
    """The UTF-8 check skips ASCII pieces: a character split over two pieces, a sequence cut
    short before an ASCII piece, a stray continuation byte or an overlong form in a later piece
    give the strict reader's records and error, whatever the pieces' size."""
    monkeypatch.setattr(jsonstream, "CHECK_PIECE", piece)
    text = llava_records(40)
    cases = [text.encode(), text.replace("A cat3.", "A café 😀 3.").encode()]
    for bad in (b"\xc3", b"\xf0\x9f\x98", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80"):
        for record in (0, 17, 39):
            data = text.encode()
            at = data.index(f"A cat{record}.".encode())
            cases.append(data[:at] + bad + data[at:])
    path = tmp_path / "a.json"
    for number, data in enumerate(cases):
        path.write_bytes(data)
        got = outcome(path)
        assert got == exact_outcome(path, monkeypatch), data[:80]
        assert ("invalid UTF-8" in str(got[-1])) == (number >= 2), got[-1]


def test_a_sequence_cut_short_is_found_in_its_chunk_though_ascii_pieces_follow(tmp_path, monkeypatch):
    """A piece that ends inside a multi-byte sequence makes the next piece be checked too, ASCII
    or not: the chunk that holds the cut sequence raises, not a later one (nor the file's end)."""
    monkeypatch.setattr(jsonstream, "CHUNK_CHARS", 64)
    monkeypatch.setattr(jsonstream, "CHECK_PIECE", 8)
    path = tmp_path / "a.json"
    path.write_bytes(b"a" * 23 + b"\xc3" + b"b" * 200)           # the cut sequence ends the third piece
    stream = jsonstream._ByteStream(path, None)
    try:
        with pytest.raises(jsonstream._NotUtf8):
            stream.fill(64)
    finally:
        stream.close()
    path.write_bytes(b"a" * 23 + "\u00e9".encode() + b"b" * 200)   # a whole character over two pieces
    stream = jsonstream._ByteStream(path, None)
    try:
        stream.fill(64)
        assert bytes(stream.data[:25]) == b"a" * 23 + "\u00e9".encode()
    finally:
        stream.close()


# Text that breaks JSON, UTF-8 or orjson's agreement with the strict reader, put into real records.
MUTATIONS = [b",", b"{", b"}", b"[", b"]", b'"', b"\\", b":", b" ", b"\n", b"\xff", b"\xc3", "\u00e9".encode(),
             "\U0001f600".encode(), b"1234567890123456789012", b"-9223372036854775809", b"1e400", b"NaN",
             b"\\ud800", b'{"id"', b'}, {"id"', b"0"]


@needs_shared
@pytest.mark.parametrize("lines", [False, True])
def test_real_records_with_random_damage_read_as_the_strict_reader_reads_them(tmp_path, monkeypatch, lines):
    """Differential: real LLaVA records, written as an array (compact or indented, ASCII or not,
    with a BOM or not) or as JSON Lines, with up to three random insertions, overwrites or
    deletions; batches of 0.5-32 KB. The batch reader gives the strict reader's records, rejects
    and error, every time (6,000 such files, and 360 of 2-9K records, agreed when this was written)."""
    real = json.loads((REAL / "llava_v1_5_mix665k.every500.json").read_text(encoding="utf-8"))
    rng = random.Random(14 + lines)
    pieces = random.Random(15)           # the UTF-8 check's piece size: apart, so that rng's files stay the same
    path = tmp_path / ("a.jsonl" if lines else "a.json")
    for _ in range(400):
        monkeypatch.setattr(jsonstream, "BATCH_BYTES", rng.choice([1 << 9, 1 << 11, 1 << 12, 1 << 15]))
        monkeypatch.setattr(jsonstream, "CHECK_PIECE", pieces.choice([3, 64, 1 << 10, 1 << 16]))
        records = [dict(r) for r in rng.sample(real, rng.randint(1, 40))]
        if rng.random() < 0.5:
            rng.choice(records)["x"] = "@odd@"           # a value orjson reads otherwise, or refuses
        ascii_only = rng.random() < 0.3
        if lines:
            text = "\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records)
        else:
            text = json.dumps(records, ensure_ascii=ascii_only, indent=rng.choice([None, None, 1]))
        data = bytearray(text.replace('"@odd@"', rng.choice(ODD_VALUES)).encode())
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            at, piece = rng.randrange(len(data) + 1), rng.choice(MUTATIONS)
            kind = rng.random()
            if kind < 0.4:
                data[at:at] = piece
            elif kind < 0.7:
                data[at:at + len(piece)] = piece
            else:
                del data[at:at + rng.randint(1, 4)]
        if rng.random() < 0.2:
            data[:0] = b"\xef\xbb\xbf"
        path.write_bytes(bytes(data))
        assert outcome(path) == exact_outcome(path, monkeypatch), bytes(data)[:200]
