"""WebDataset tar shards in and out (#23): grouped by key, streamed, and hostile members
(duplicate keys, escaping names, links, truncation) rejected with reasons."""

import io
import json
import sys
import tarfile

from conftest import FIXTURES, assert_one_line_error, load_json, run_curate, summary_numbers

import curate

sys.path.insert(0, str(FIXTURES))
import make_hf_datasets as make  # noqa: E402


def add(tar, name, data=b"", kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data), target
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def record(key):
    return json.dumps({"conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                         {"from": "gpt", "value": f"Picture {key}."}]}).encode()


def test_shard_reads_by_key_and_round_trips_through_the_writer(tmp_path):
    shard = make.write_webdataset(tmp_path / "in" / "shard-000000.tar", 4)
    samples = list(curate.read(shard))
    assert [s.id for s in samples] == [f"0000{k:06d}" for k in range(4)]
    assert samples[0].image.read()[:3] == b"\xff\xd8\xff" and samples[0].image.name == "0000000000.jpg"
    out = tmp_path / "out"
    run_curate("convert", "auto", "webdataset", shard, "-o", out, check=0)
    again = list(curate.read(out / "shard-000000.tar"))
    assert [s.id for s in again] == [s.id for s in samples]
    assert [s.image.read() for s in again] == [s.image.read() for s in samples]
    assert [s.conversations for s in again] == [s.conversations for s in samples]
    assert "4 samples in 1 shard" in (out / "README.md").read_text()


def test_parquet_to_webdataset_and_to_llava_with_extracted_images(tmp_path):
    source = make.write_cauldron(tmp_path / "c" / "ai2d" / "train.parquet", 3, images_per_row=2)
    out = tmp_path / "wds"
    run_curate("convert", "auto", "webdataset", source, "-o", out, check=0)
    names = tarfile.open(out / "shard-000000.tar").getnames()
    assert names[:3] == ["000000000.json", "000000000.0.jpg", "000000000.1.jpg"]
    images = tmp_path / "images"
    run_curate("convert", "auto", "llava", out / "shard-000000.tar", "-o", tmp_path / "o.json",
               "--extract-images", images, check=0)
    first = load_json(tmp_path / "o.json")[0]
    assert first["image"] == ["000000000.0.jpg", "000000000.1.jpg"] and (images / first["image"][1]).is_file()


def test_hostile_members_reject_their_group_with_the_reason(tmp_path):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "a.json", record("a"))
        add(tar, "a.jpg", make.jpeg(1))
        add(tar, "b.json", record("b"))
        add(tar, "b.jpg", kind=tarfile.SYMTYPE, target="/etc/passwd")
        add(tar, "../c.json", record("c"))
        add(tar, "../c.jpg", make.jpeg(3))
        add(tar, "d.json", record("d"))
        add(tar, "d.jpg", b"not an image")
        add(tar, "a.txt", b"the key a again")
        add(tar, "e.json", record("e"))
        add(tar, "e.jpg", make.jpeg(5))
    out = tmp_path / "o.json"
    result = run_curate("convert", "auto", "llava", shard, "-o", out, "--extract-images", tmp_path / "i",
                        "--on-error", "skip", check=0)
    assert summary_numbers(result.stderr) == {"input records": 6, "written": 2, "removed": 0, "rejected": 4}
    assert [r["id"] for r in load_json(out)] == ["a", "e"]
    reasons = [r["reason"] for r in load_json(tmp_path / "o.json.rejects.jsonl")]
    assert "is a link" in reasons[0] and "climbs out" in reasons[1] and "not an image" in reasons[2]
    assert "appears again" in reasons[3]
    assert not (tmp_path / "c.jpg").exists() and not (tmp_path / "i" / ".." / "c.jpg").exists()
    result = run_curate("convert", "auto", "llava", shard, "-o", out, "--extract-images", tmp_path / "i",
                        "--overwrite")
    assert_one_line_error(result, str(shard), "record 1", "is a link")


def test_truncated_or_foreign_shard_is_one_line_error_and_no_output(tmp_path):
    shard = make.write_webdataset(tmp_path / "s.tar", 4)
    truncated = tmp_path / "t.tar"
    truncated.write_bytes(shard.read_bytes()[:3000])
    out = tmp_path / "o"
    result = run_curate("convert", "webdataset", "hf-parquet", truncated, "-o", out)
    assert_one_line_error(result, str(truncated), "not a readable tar shard")
    assert not out.exists()
    result = run_curate("convert", "webdataset", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "x.json")
    assert_one_line_error(result, "not a readable tar shard")
