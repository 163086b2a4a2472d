import json

import pytest

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
