"""A catalogue of bad input, each with its expected outcome: a one-line error naming the file,
the record (index and id) or line and column, and the field, exit 1, no traceback and no
output file; or with --on-error skip, the record set aside in the rejects file with its reason."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, assert_one_line_error, load_json, run_curate

GOOD = {"id": "ok_1", "image": "coco/train2017/1.jpg", "conversations": [
    {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}


def rec(**changes):
    record = json.loads(json.dumps(GOOD))
    record.update(changes)
    return record


def turns(*pairs):
    return [{"from": f, "value": v} for f, v in pairs]


# (case, file bytes, fragments the one-line error must hold, index of the bad record or None)
FILE_CASES = [
    ("truncated JSON", b'[{"id": "a", "conversations": [', ["truncated"], None),
    ("trailing garbage", json.dumps([GOOD]).encode() + b" }{", ["trailing garbage", "line 1"], None),
    ("top level not a list", b'"hello"', ["not a list"], None),
    ("top level an object", b'{\n "id": 1\n}', ["single JSON object"], None),
    ("invalid UTF-8", b'[{"id": "\xff"}]', ["invalid UTF-8 at byte"], None),
    ("empty file", b"", ["empty"], None),
]

RECORD_CASES = [
    ("record not an object", ["x"], ["record 1", "not an object"]),
    ("missing conversations", {"id": "m1", "image": "a.jpg"}, ["record 1", "'m1'", "conversations", "missing"]),
    ("empty conversations", rec(id="e1", conversations=[]), ["'e1'", "conversations", "empty"]),
    ("roles out of order", rec(id="r1", conversations=turns(("gpt", "<image>\nHi"), ("human", "x"))),
     ["'r1'", "roles out of order"]),
    ("two human turns", rec(id="r2", conversations=turns(("human", "<image>\nHi"), ("human", "x"))),
     ["'r2'", "roles out of order"]),
    ("unknown role", rec(id="r3", conversations=turns(("user", "<image>\nHi"), ("gpt", "x"))),
     ["'r3'", "conversations[0].from", "unknown role"]),
    ("non-string value", rec(id="n1", conversations=[{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": 7}]),
     ["'n1'", "conversations[1].value", "string"]),
    ("non-string id", rec(id=["x"]), ["record 1", "field 'id'"]),
    ("missing id", {k: v for k, v in GOOD.items() if k != "id"}, ["record 1", "field 'id'"]),
    ("image not a string", rec(id="i1", image=5), ["'i1'", "field 'image'"]),
    ("<image> count does not match", rec(id="t1", conversations=turns(("human", "<image>\n<image>\nHi"), ("gpt", "x"))),
     ["'t1'", "2 <image> tokens for 1 images"]),
    ("<image> missing", rec(id="t2", conversations=turns(("human", "Hi"), ("gpt", "x"))), ["'t2'", "0 <image> tokens"]),
    ("absolute image path", rec(id="p1", image="/etc/passwd"), ["'p1'", "absolute"]),
    ("image path climbs out", rec(id="p2", image="coco/../../secret.jpg"), ["'p2'", "climbs out"]),
]


@pytest.mark.parametrize("case, content, fragments, _", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_broken_files(tmp_path, case, content, fragments, _):
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    out = tmp_path / "out.json"
    result = run_curate("convert", "llava", "llava", source, "-o", out)
    assert_one_line_error(result, "bad.json", *fragments)
    assert not out.exists() and not list(tmp_path.glob(".out.json.*"))


@pytest.mark.parametrize("case, record, fragments", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_records_fail_or_are_set_aside(tmp_path, case, record, fragments):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps([GOOD, record, rec(id="ok_2")]))
    out = tmp_path / "out.json"
    result = run_curate("convert", "llava", "llava", source, "-o", out)
    assert_one_line_error(result, "bad.json", *fragments)
    assert not out.exists()
    result = run_curate("convert", "llava", "llava", source, "-o", out, "--on-error", "skip", check=0)
    assert [r["id"] for r in load_json(out)] == ["ok_1", "ok_2"]
    rejects = load_json(str(out) + ".rejects.jsonl")
    assert len(rejects) == 1 and rejects[0]["index"] == 1 and rejects[0]["record"] == record
    assert "rejected" in result.stderr


def test_bad_json_line_is_located_by_line_and_column(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(GOOD) + "\n" + '{"id": "x", "conversations": [}\n' + json.dumps(rec(id="ok_2")) + "\n")
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json")
    assert_one_line_error(result, "bad.jsonl", "line 2, column 31", "record 1", "invalid JSON")
    run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "--on-error", "skip", check=0)
    assert len(load_json(tmp_path / "o.json")) == 2


def test_byte_order_mark_is_accepted(tmp_path):
    source = tmp_path / "bom.json"
    source.write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "-q", check=0)
    assert load_json(tmp_path / "o.json") == [GOOD]


def test_duplicate_ids_are_a_warning(tmp_path):
    source = tmp_path / "dup.json"
    source.write_text(json.dumps([GOOD, GOOD, rec(id="ok_2")]))
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json", "-q", check=0)
    assert "warning: 1 samples repeat an id seen before (first: 'ok_1'" in result.stderr
    assert len(load_json(tmp_path / "o.json")) == 3


def test_unknown_format_output_equal_to_input_and_existing_output(tmp_path):
    source = tmp_path / "in.json"
    source.write_text(json.dumps([GOOD]))
    assert_one_line_error(run_curate("convert", "llava", "yaml", source, "-o", tmp_path / "o"), "unknown writer 'yaml'")
    assert_one_line_error(run_curate("convert", "llava", "llava", source, "-o", source), "also an input")
    (tmp_path / "o.json").write_text("keep")
    assert_one_line_error(run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json"), "--overwrite")
    assert (tmp_path / "o.json").read_text() == "keep"


def test_output_folder_cannot_be_written():
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", "/proc/nope/o.json")
    assert_one_line_error(result, "/proc/nope/o.json", "cannot write")


# --- images -----------------------------------------------------------------------------------------

def _png_claiming(path, width, height):
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def image_zoo(tmp_path_factory):
    """One dataset whose images are every kind of trouble real datasets hold."""
    root = tmp_path_factory.mktemp("zoo")
    photo = Image.open(FIXTURES / "images" / "gqa/images/4.jpg").convert("RGB")
    (root / "img").mkdir()
    photo.save(root / "img/good.jpg")
    (root / "img/zero.jpg").write_bytes(b"")
    data = (root / "img/good.jpg").read_bytes()
    (root / "img/truncated.jpg").write_bytes(data[: len(data) // 3])
    photo.save(root / "img/png_named.jpg", "PNG")
    photo.convert("CMYK").save(root / "img/cmyk.jpg")
    Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 256)).save(root / "img/sixteen.png")
    palette = photo.convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "img/palette.png", transparency=0)
    rotated = photo.rotate(90, expand=True)            # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "img/exif.jpg", exif=exif.tobytes(), quality=95)
    photo.save(root / "img/upright.jpg", quality=95)
    _png_claiming(root / "img/bomb.png", 15000, 15000)
    names = ["good.jpg", "zero.jpg", "truncated.jpg", "png_named.jpg", "cmyk.jpg", "sixteen.png", "palette.png",
             "exif.jpg", "upright.jpg", "bomb.png", "missing.jpg"]
    records = [{"id": n, "image": f"img/{n}", "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                                 {"from": "gpt", "value": "Hi"}]} for n in names]
    (root / "data.json").write_text(json.dumps(records))
    return root


@pytest.mark.slow
def test_troublesome_images_never_stop_dedup(image_zoo, tmp_path):
    out = tmp_path / "o.json"
    run_curate("dedup", image_zoo / "data.json", "-o", out, "--image-root", image_zoo, "--embedder", "timm-pool",
               "--no-cache", "-t", "0.999", "-q", check=0)
    report = json.loads((tmp_path / "o.json.report" / "report.json").read_text())
    unreadable = {u["image"]: u["reason"] for u in report["unreadable"]}
    assert set(unreadable) == {"img/zero.jpg", "img/truncated.jpg", "img/bomb.png", "img/missing.jpg"}
    assert "0 bytes" in unreadable["img/zero.jpg"] and "missing file" in unreadable["img/missing.jpg"]
    assert "decompression bomb" in unreadable["img/bomb.png"]
    assert report["accounting"]["input"] == 11 == report["accounting"]["written"] + report["accounting"]["removed"]
    result = run_curate("dedup", image_zoo / "data.json", "-o", tmp_path / "d.json", "--image-root", image_zoo,
                        "--embedder", "timm-pool", "--no-cache", "-t", "0.999", "--drop-unreadable", "-q", check=0)
    assert len(load_json(str(tmp_path / "d.json") + ".rejects.jsonl")) == 4


@pytest.mark.slow
def test_odd_modes_decode_and_exif_rotated_photos_are_embedded_upright(image_zoo):
    from curate.embedding import embed_files
    from curate.registry import get_registry
    model = get_registry().get("embedder", "timm-pool").load(None, None, "cpu")
    names = ["good.jpg", "png_named.jpg", "cmyk.jpg", "sixteen.png", "palette.png", "exif.jpg", "upright.jpg"]
    result = embed_files([image_zoo / "img" / n for n in names], model, batch_size=8, workers=2)
    assert result.ok.all(), result.failures
    v = dict(zip(names, result.vectors))
    assert float(v["exif.jpg"] @ v["upright.jpg"]) > 0.97
    assert float(v["png_named.jpg"] @ v["good.jpg"]) > 0.9   # lossless PNG against a JPEG re-encode
    assert float(v["cmyk.jpg"] @ v["good.jpg"]) > 0.9


def test_image_paths_never_resolve_outside_the_root(tmp_path):
    from curate.images import UnreadableImage, resolve_image
    for bad in ("/etc/passwd", "../x.jpg", "a/../../x.jpg", "~/x.jpg"):
        with pytest.raises(UnreadableImage):
            resolve_image(tmp_path, bad)
    assert resolve_image(tmp_path, "a/./b/../c.jpg") == tmp_path / "a/c.jpg"


def test_inspect_accounts_for_rejected_records(tmp_path):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps([GOOD, ["x"], rec(id="ok_2")]))
    assert_one_line_error(run_curate("inspect", source), "record 1", "not an object")
    result = run_curate("inspect", source, "--on-error", "skip", check=0)
    assert "3 records = 2 summarised + 1 rejected" in result.stderr
