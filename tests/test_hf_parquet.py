"""Hugging Face Parquet in and out (#23): the image-source layer, the hf-parquet reader and
writer, --extract-images, dedup without unpacking, and bad input. Fixtures are generated in
tmp_path by fixtures/make_hf_datasets.py from the datasets' published schemas."""

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import curate
from curate.image_source import ImageBytes
from conftest import FIXTURES, assert_one_line_error, load_json, run_curate, summary_numbers

sys.path.insert(0, str(FIXTURES))
import make_hf_datasets as make  # noqa: E402


@pytest.fixture
def shards(tmp_path):
    """One of each schema, each in its subset's folder as on the Hub."""
    data = tmp_path / "hub"
    return {
        "onevision": make.write_onevision(data / "onevision" / "dvqa" / "train-00000-of-00001.parquet", 6),
        "cauldron": make.write_cauldron(data / "the_cauldron" / "ai2d" / "train-00000-of-00001.parquet", 5,
                                        seed=3),
        "finevision": make.write_cauldron(data / "finevision" / "chartqa" / "train-00000-of-00001.parquet", 4,
                                          seed=5, ratings=True, images_per_row=2),
        "mantis": make.write_mantis(data / "mantis" / "nlvr2", 3, seed=7),
    }


def test_each_schema_reads_with_images_as_bytes_and_other_columns_kept(shards):
    onevision = list(curate.read(shards["onevision"]))
    assert [s.id for s in onevision][:2] == ["dvqa(cauldron,llava_format)_0_0", "dvqa(cauldron,llava_format)_0_1"]
    image = onevision[0].image
    assert isinstance(image, ImageBytes)
    assert image.read()[:3] == b"\xff\xd8\xff" and image.name == "0.jpg"
    assert onevision[0].extra == {"data_source": "dvqa(cauldron,llava_format)"}
    assert onevision[0].source == "dvqa(cauldron_llava_format)"

    cauldron = list(curate.read(shards["cauldron"]))
    assert [s.id for s in cauldron] == [f"ai2d/train-00000-of-00001/{k}" for k in range(5)]   # stable, from subset and row
    assert cauldron[0].conversations[0].text == "<image>\nQuestion 0?"
    assert [t.role for t in cauldron[0].conversations] == ["human", "gpt", "human", "gpt"]
    assert cauldron[0].source == "ai2d"

    finevision = list(curate.read(shards["finevision"]))
    assert len(finevision[0].images) == 2
    assert finevision[0].conversations[0].text.startswith("<image>\n<image>\nQuestion 0?")
    assert finevision[0].extra["relevance"] == [4, 5] and finevision[0].extra["formatting_min"] == 4

    parquet, archive = shards["mantis"]
    mantis = list(curate.read(parquet, image_root=archive))
    assert mantis[0].image == ["train_images/0_0.jpg", "train_images/0_1.jpg"]
    assert [t.role for t in mantis[0].conversations] == ["human", "gpt"]


def test_folder_and_quoted_glob_stand_for_their_shards(shards, tmp_path):
    folder = shards["onevision"].parent
    make.write_onevision(folder / "train-00001-of-00002.parquet", 3, seed=50)
    result = run_curate("inspect", folder, "--json", check=0)
    assert json.loads(result.stdout)[-2]["samples"] == 9
    result = run_curate("inspect", str(folder / "train-*.parquet"), "--json", check=0)
    assert json.loads(result.stdout)[-2]["samples"] == 9
    assert_one_line_error(run_curate("inspect", str(tmp_path / "nothing-*.parquet")), "no file matches")
    assert_one_line_error(run_curate("inspect", folder / "train-00009-of-00010.parquet"), "no such file")


def test_cauldron_to_llava_extracts_each_image_once(shards, tmp_path):
    out, images = tmp_path / "llava.json", tmp_path / "images"
    duplicate = make.write_cauldron(tmp_path / "again" / "ai2d" / "train.parquet", 5, seed=3)   # the same images
    result = run_curate("convert", "auto", "llava", shards["cauldron"], duplicate, "-o", out,
                        "--extract-images", images, check=0)
    assert summary_numbers(result.stderr)["written"] == 10
    records = load_json(out)
    files = sorted(p for p in images.rglob("*") if p.is_file())
    assert len(files) == 5                                   # each distinct image written once
    assert {r["image"] for r in records} == {str(p.relative_to(images)) for p in files}
    for record in records:
        with Image.open(images / record["image"]) as image:
            assert image.size == (64, 48)
    # the LLaVA trainer's view: the output loads and every image opens from DIR
    assert records[0]["conversations"][0]["value"].count("<image>") == 1


def test_own_names_are_kept_when_safe_and_hashed_when_they_clash(shards, tmp_path):
    other = make.write_onevision(tmp_path / "b" / "x" / "train.parquet", 3, seed=40)   # names 0.jpg.. again
    images = tmp_path / "images"
    run_curate("convert", "auto", "llava", shards["onevision"], other, "-o", tmp_path / "o.json",
               "--extract-images", images, check=0)
    names = [r["image"] for r in load_json(tmp_path / "o.json")]
    assert names[:6] == [f"{k}.jpg" for k in range(6)]
    assert all(len(Path(n).stem) == 32 for n in names[6:])      # same names, other bytes: content hash
    assert len(set(names)) == 9


def test_bytes_without_extract_images_is_a_one_line_error_and_no_output(shards, tmp_path):
    out = tmp_path / "o.json"
    result = run_curate("convert", "auto", "llava", shards["onevision"], "-o", out)
    assert_one_line_error(result, "held as bytes", "--extract-images")
    assert not out.exists()


def test_mantis_images_come_from_the_zip_in_place(shards, tmp_path):
    parquet, archive = shards["mantis"]
    images = tmp_path / "images"
    run_curate("convert", "auto", "llava", parquet, "--image-root", archive, "-o", tmp_path / "m.json",
               "--extract-images", images, check=0)
    records = load_json(tmp_path / "m.json")
    assert records[0]["image"] == ["train_images/0_0.jpg", "train_images/0_1.jpg"]
    assert (images / "train_images" / "0_1.jpg").read_bytes() == zipfile.ZipFile(archive).read("train_images/0_1.jpg")


def test_hf_parquet_output_loads_in_datasets_with_images_decoded(shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    run_curate("convert", "auto", "hf-parquet", shards["onevision"], shards["finevision"], "-o", out, check=0)
    card = (out / "README.md").read_text()
    assert "10 samples, 14 images" in card and "| dvqa(cauldron_llava_format) | 6 |" in card
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert len(loaded) == 10
    row = loaded[6]
    assert isinstance(row["images"][0], Image.Image) and len(row["images"]) == 2
    assert row["conversations"][0]["from"] == "human"
    assert json.loads(row["extra"])["relevance"] == [4, 5]
    assert len(datasets.load_dataset(str(out), split="train")) == 10     # the card's configuration
    # and curate reads its own output back, the same samples
    again = list(curate.read(out / "data" / "train-00000.parquet"))
    first = list(curate.read(shards["onevision"]))
    assert [s.id for s in again[:6]] == [s.id for s in first]
    assert again[0].image.read() == first[0].image.read() and again[0].extra == first[0].extra


def test_shard_size_splits_the_output_and_a_rerun_leaves_no_stale_shard(tmp_path):
    source = make.write_cauldron(tmp_path / "in" / "ai2d" / "train.parquet", 600, image_bytes=lambda s, k, j:
                                 make.jpeg(k, size=(96, 96)))
    out = tmp_path / "out"
    run_curate("convert", "auto", "hf-parquet", source, "-o", out, "--shard-size-mb", 1, check=0)
    shards = sorted((out / "data").glob("*.parquet"))
    assert len(shards) >= 2
    assert sum(len(list(curate.read(s))) for s in shards) == 600
    small = make.write_cauldron(tmp_path / "in2" / "ai2d" / "train.parquet", 3)
    run_curate("convert", "auto", "hf-parquet", small, "-o", out, "--overwrite", check=0)
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["train-00000.parquet"]
    result = run_curate("convert", "auto", "hf-parquet", small, "-o", out)
    assert_one_line_error(result, "exists", "--overwrite")


def test_parquet_to_llama_factory_extracts_and_loads_paths(shards, tmp_path):
    out, images = tmp_path / "lf.json", tmp_path / "lf_images"
    run_curate("convert", "auto", "llama-factory", shards["onevision"], "-o", out, "--extract-images", images,
               "-O", "dataset_info=none", check=0)
    record = load_json(out)[0]
    assert (images / record["images"][0]).is_file()


# --- bad input ---------------------------------------------------------------------------------

def test_corrupt_footer_is_one_line_error(shards, tmp_path):
    broken = tmp_path / "broken.parquet"
    data = shards["onevision"].read_bytes()
    broken.write_bytes(data[:-20] + b"\0" * 16 + data[-4:])
    result = run_curate("convert", "hf-parquet", "llava", broken, "-o", tmp_path / "o.json",
                        "--extract-images", tmp_path / "i")
    assert_one_line_error(result, str(broken), "not a readable Parquet file")
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "i").exists()


def test_corrupt_page_is_one_line_error_naming_the_row_group(shards, tmp_path):
    import pyarrow.parquet as pq
    broken = tmp_path / "broken.parquet"
    data = bytearray(shards["onevision"].read_bytes())
    page = pq.ParquetFile(shards["onevision"]).metadata.row_group(1).column(0).data_page_offset
    data[page:page + 16] = b"\xff" * 16
    broken.write_bytes(bytes(data))
    result = run_curate("convert", "hf-parquet", "llava", broken, "-o", tmp_path / "o.json",
                        "--extract-images", tmp_path / "i", "--on-error", "skip")
    assert_one_line_error(result, str(broken), "row group 1 cannot be read")
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "i").exists()


def test_rows_without_ids_get_stable_ids_from_subset_shard_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = make.write_onevision(tmp_path / "ov" / "chart" / "train-0.parquet", 3)
    table = pq.read_table(path)
    pq.write_table(table.set_column(0, "id", pa.array([None, "kept", None], pa.string())), path)
    assert [s.id for s in curate.read(path)] == ["chart/train-0/0", "kept", "chart/train-0/2"]


def test_cell_that_is_not_an_image_is_rejected_with_its_row(tmp_path):
    bad = make.write_cauldron(tmp_path / "s" / "ai2d" / "train.parquet", 4,
                              image_bytes=lambda s, k, j: b"not an image at all" if k == 2 else make.jpeg(k))
    out = tmp_path / "o.json"
    result = run_curate("convert", "auto", "llava", bad, "-o", out, "--extract-images", tmp_path / "i")
    assert_one_line_error(result, "record 2", "images[0]", "not an image")
    assert not out.exists()
    result = run_curate("convert", "auto", "llava", bad, "-o", out, "--extract-images", tmp_path / "i",
                        "--on-error", "skip", check=0)
    assert summary_numbers(result.stderr) == {"input records": 4, "written": 3, "removed": 0, "rejected": 1}
    reject = load_json(tmp_path / "o.json.rejects.jsonl")[0]
    assert reject["index"] == 2 and reject["field"] == "images[0]"
    assert reject["record"]["images"][0]["bytes"] == "<19 bytes>"


def test_schema_that_cannot_be_mapped_names_what_is_expected(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), path)
    result = run_curate("convert", "hf-parquet", "llava", path, "-o", tmp_path / "o.json")
    assert_one_line_error(result, "answer, question", "match no schema", "the_cauldron",
                          "--parquet-conversation-column", "--parquet-image-column", "--parquet-id-column")


def write_other_schema(path: Path) -> Path:
    """A Parquet file in no schema curate knows: ``uid``, ``picture`` (an Image), ``messages``
    (``{role, content}``), ``qa`` (``{user, assistant}`` pairs) and a ``score`` to keep."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    pair = pa.struct([("user", pa.string()), ("assistant", pa.string())])
    pictures = [{"bytes": make.jpeg(k), "path": f"p{k}.jpg"} for k in range(3)]
    pictures[2] = {"bytes": b"not an image", "path": "p2.jpg"}
    pq.write_table(pa.table({
        "uid": pa.array(["a", "b", "c"]),
        "picture": pa.array(pictures, image),
        "messages": pa.array([[{"role": "user", "content": f"<image>\nWhat is {k}?"},
                               {"role": "assistant", "content": "A gradient."}] for k in range(3)], pa.list_(turn)),
        "qa": pa.array([[{"user": f"Colour {k}?", "assistant": "Warm."}] for k in range(3)], pa.list_(pair)),
        "score": pa.array([0.5, 0.7, 0.9]),
    }), path)
    return path


def test_other_schema_is_read_through_the_columns_named_with_settings(tmp_path):
    (tmp_path / "subset").mkdir()
    path = write_other_schema(tmp_path / "subset" / "train.parquet")
    out, images = tmp_path / "o.json", tmp_path / "images"
    result = run_curate("convert", "hf-parquet", "llava", path, "-o", out, "--extract-images", images,
                        "--parquet-image-column", "picture", "--parquet-conversation-column", "messages",
                        "--parquet-id-column", "uid", "--on-error", "skip", check=0)
    assert summary_numbers(result.stderr) == {"input records": 3, "written": 2, "removed": 0, "rejected": 1}
    records = load_json(out)
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["conversations"] == [{"from": "human", "value": "<image>\nWhat is 0?"},
                                           {"from": "gpt", "value": "A gradient."}]
    assert records[0]["score"] == 0.5 and records[0]["qa"] == [{"user": "Colour 0?", "assistant": "Warm."}]
    assert (images / records[1]["image"]).read_bytes() == make.jpeg(1)
    reject = load_json(tmp_path / "o.json.rejects.jsonl")[0]
    assert reject["id"] == "c" and reject["field"] == "picture" and "not an image" in reject["reason"]

    # {user, assistant} pairs carry no <image> tag: one goes before the first question; no id column
    out = tmp_path / "pairs.json"
    run_curate("convert", "hf-parquet", "llava", path, "-o", out, "--extract-images", tmp_path / "i2",
               "-O", "parquet_image_column=picture", "-O", "parquet_conversation_column=qa", "--on-error", "skip",
               check=0)
    records = load_json(out)
    assert [r["id"] for r in records] == ["subset/train/0", "subset/train/1"]
    assert records[0]["conversations"][0]["value"] == "<image>\nColour 0?"
    assert records[0]["messages"][0] == {"role": "user", "content": "<image>\nWhat is 0?"}


def test_named_columns_that_are_wrong_are_one_line_errors(tmp_path):
    path = write_other_schema(tmp_path / "train.parquet")
    out = tmp_path / "o.json"
    result = run_curate("convert", "hf-parquet", "llava", path, "-o", out, "--parquet-conversation-column", "chat")
    assert_one_line_error(result, "train.parquet", "--parquet-conversation-column", "'chat'", "uid, picture, messages")
    result = run_curate("convert", "hf-parquet", "llava", path, "-o", out, "--parquet-image-column", "picture")
    assert_one_line_error(result, "--parquet-conversation-column is needed with --parquet-image-column")
    result = run_curate("convert", "hf-parquet", "llava", path, "-o", out, "--extract-images", tmp_path / "i",
                        "--parquet-conversation-column", "score")
    assert_one_line_error(result, "train.parquet", "score", "must be a non-empty list of turns")
    assert not out.exists() and not (tmp_path / "i").exists()


def test_truncated_zip_image_root_is_one_line_error(shards, tmp_path):
    parquet, archive = shards["mantis"]
    truncated = tmp_path / "train_images.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = run_curate("convert", "auto", "llava", parquet, "--image-root", truncated, "-o", tmp_path / "o.json",
                        "--extract-images", tmp_path / "i")
    assert_one_line_error(result, str(truncated), "not a readable archive")
    assert not (tmp_path / "o.json").exists()


def test_archive_members_that_escape_or_are_links_are_never_served(tmp_path):
    from curate.images import ImageLocator, UnreadableImage
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.jpg", make.jpeg(1))
        z.writestr("../evil.jpg", make.jpeg(2))
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "/etc/passwd")
    locator = ImageLocator(archive)
    assert locator.find("ok.jpg").read()[:3] == b"\xff\xd8\xff"
    with pytest.raises(UnreadableImage, match="climbs out"):
        locator.find("../evil.jpg")
    with pytest.raises(UnreadableImage, match="is a link"):
        locator.find("link.jpg")
    with pytest.raises(UnreadableImage, match="absolute"):
        locator.find("/etc/passwd")


def test_an_image_held_as_bytes_is_size_bounded_before_decoding(monkeypatch):
    from curate import images
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(images.UnreadableImage, match="over the 100-byte limit"):
        images.image_from_bytes(make.jpeg(1), "g")
    big = io.BytesIO()
    Image.new("L", (1, 1)).save(big, "PNG")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1 << 20)
    monkeypatch.setattr(images, "MAX_PIXELS", 0)
    with pytest.raises(images.UnreadableImage, match="pixels is over"):
        images.image_from_bytes(big.getvalue(), "g")


@pytest.mark.slow      # loads a model
def test_dedup_parquet_shards_to_hf_parquet_names_shard_and_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    a = make.write_onevision(tmp_path / "shards" / "a" / "train-0.parquet", 6, seed=0)
    b = make.write_onevision(tmp_path / "shards" / "b" / "train-0.parquet", 4, seed=100)
    copy = tmp_path / "shards" / "c" / "train-0.parquet"      # b's pictures again, as PNGs: other bytes
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pq.read_table(b)
    cells = table.column("image").to_pylist()
    for cell in cells:
        out = io.BytesIO()
        Image.open(io.BytesIO(cell["bytes"])).save(out, "PNG")
        cell["bytes"] = out.getvalue()
    ids = [f"copy-{k}" for k in range(len(cells))]
    copy.parent.mkdir(parents=True)
    table = table.set_column(1, "image", pa.array(cells, table.schema.field("image").type))
    pq.write_table(table.set_column(0, "id", pa.array(ids)), copy)
    out = tmp_path / "out"
    result = run_curate("dedup", a, b, copy, "-o", out, "--to", "hf-parquet", "--embedder", "timm-pool",
                        "--no-cache", "-t", "0.95", check=0)
    numbers = summary_numbers(result.stderr)
    assert numbers["input records"] == 14 and numbers["removed"] == 4, result.stderr
    removed = load_json(tmp_path / "out.report" / "removed.jsonl")
    assert {r["id"] for r in removed} == set(ids)
    assert removed[0]["origin"] == {"shard": str(copy), "row": 0}
    assert "data:image" in (tmp_path / "out.report" / "report.html").read_text()     # thumbnails from the bytes
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert len(loaded) == 10 and isinstance(loaded[0]["images"][0], Image.Image)


def test_preview_and_image_filters_read_images_held_as_bytes(shards, tmp_path):
    page = tmp_path / "preview.html"
    run_curate("preview", shards["finevision"], "-o", page, check=0)
    assert page.read_text().count("data:image") == 4
    out = tmp_path / "filtered"
    result = run_curate("filter", shards["onevision"], "-o", out, "--to", "hf-parquet", "--filter", "too-small=50",
                        check=0)
    assert summary_numbers(result.stderr)["removed"] == 6          # 64x48 pixels: short side under 50
    removed = load_json(tmp_path / "filtered.removed.jsonl")
    assert removed[0]["filter"] == "too-small"


def test_a_row_group_too_large_to_read_whole_is_one_line_error(shards, monkeypatch):
    from curate.plugins import hf_parquet
    monkeypatch.setattr(hf_parquet, "MAX_ROW_GROUP_BYTES", 1000)
    with pytest.raises(curate.CurateError, match="row group 0 holds .* smaller row groups"):
        list(curate.read(shards["onevision"]))


def test_llava_files_under_the_image_root_are_embedded_and_a_missing_one_is_a_reject(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    result = run_curate("convert", "llava", "hf-parquet", FIXTURES / "dedup_demo.json", "--image-root",
                        FIXTURES / "images", "-o", out, "--on-error", "skip", check=0)
    numbers = summary_numbers(result.stderr)
    assert numbers["rejected"] >= 1 and numbers["written"] + numbers["rejected"] == numbers["input records"]
    reject = load_json(out / "README.md.rejects.jsonl")[0]
    assert reject["field"] == "image" and "missing file" in reject["reason"]
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    first = load_json(FIXTURES / "dedup_demo.json")[0]
    assert loaded[0]["id"] == first["id"] and loaded[0]["images"][0].size == \
        Image.open(FIXTURES / "images" / first["image"]).size


def test_a_tar_image_root_serves_members_and_refuses_links_and_escapes(tmp_path):
    import tarfile
    from curate.images import ImageLocator, UnreadableImage, image_size
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("photos/a.jpg", make.jpeg(1)), ("../up.jpg", make.jpeg(2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("photos/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    locator = ImageLocator(archive)
    assert image_size(locator.find("photos/a.jpg")) == (64, 48)
    assert locator.find("a.jpg") is None and locator.size("photos/a.jpg") == (64, 48)
    with pytest.raises(UnreadableImage, match="is a link"):
        locator.find("photos/link.jpg")
    with pytest.raises(UnreadableImage, match="climbs out"):
        locator.find("../up.jpg")


LLAMA_FACTORY = Path(os.environ.get("CURATE_LLAMA_FACTORY_GIT", "/work/.mirror/hiyouga+LLaMA-Factory/repo"))


def llama_factory_image_methods():
    """LLaMA-Factory's own ``MMPluginMixin._regularize_images`` and ``_preprocess_image``
    (src/llamafactory/data/mm_plugin.py), taken from its repository and run as they are: the
    module itself needs torch, torchaudio and transformers, which curate's tests do not."""
    import ast
    import subprocess
    if not LLAMA_FACTORY.exists():
        pytest.skip(f"LLaMA-Factory's repository not found at {LLAMA_FACTORY}")
    source = subprocess.run(["git", f"--git-dir={LLAMA_FACTORY}", "show", "HEAD:src/llamafactory/data/mm_plugin.py"],
                            capture_output=True, text=True, check=True).stdout
    mixin = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)
                 and node.name == "MMPluginMixin")
    methods = [node for node in mixin.body if isinstance(node, ast.FunctionDef)
               and node.name in ("_regularize_images", "_preprocess_image")]
    from typing import BinaryIO
    from PIL.Image import Image as ImageObject
    namespace = {"Image": Image, "ImageObject": ImageObject, "BytesIO": io.BytesIO, "BinaryIO": BinaryIO,
                 "math": __import__("math")}
    body = "".join("    " + ast.get_source_segment(source, method) + "\n\n" for method in methods)
    exec(compile("class Plugin:\n" + body, "mm_plugin.py", "exec"), namespace)
    return namespace["Plugin"]()


def test_hf_parquet_output_goes_through_llama_factorys_image_handling(shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    plugin = llama_factory_image_methods()
    out = tmp_path / "out"
    run_curate("convert", "auto", "hf-parquet", shards["finevision"], "-o", out, check=0)
    decoded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")   # PIL images
    raw = decoded.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))    # {bytes, path}
    for row in (decoded[0], raw[0]):
        images = plugin._regularize_images(row["images"], image_max_pixels=768 * 768,
                                           image_min_pixels=32 * 32)["images"]
        assert [(image.mode, image.size) for image in images] == [("RGB", (64, 48))] * 2


def test_extracted_images_never_leave_dir_through_a_linked_folder(tmp_path):
    parquet, archive = make.write_mantis(tmp_path / "mantis", 2)
    images, outside = tmp_path / "images", tmp_path / "outside"
    images.mkdir()
    outside.mkdir()
    (images / "train_images").symlink_to(outside)
    run_curate("convert", "auto", "llava", parquet, "--image-root", archive, "-o", tmp_path / "m.json",
               "--extract-images", images, check=0)
    assert list(outside.iterdir()) == []
    names = [name for record in load_json(tmp_path / "m.json") for name in record["image"]]
    assert all("/" not in name and (images / name).is_file() for name in names)      # content-hash names


def test_what_a_run_keeps_per_image_is_its_key_never_its_bytes(shards):
    from curate.deduplicate import scan
    from curate.stats import summarise_inputs
    inputs = curate.Inputs([shards["onevision"], shards["finevision"]])
    table = scan(inputs)
    assert len(table.paths) == 14 and all(type(key) is str for key in table.position)
    assert all(image.data is None and image.read()[:3] == b"\xff\xd8\xff" for image in table.paths)   # spooled
    rows, _ = summarise_inputs(inputs, "fail")
    assert rows[-1].unique_images == 14


def test_extracted_images_are_staged_in_one_folder_and_put_in_place_at_commit(tmp_path):
    """--extract-images writes every image into one staging folder beside DIR, renamed into
    place once at commit (DIR new) or file by file (DIR there already); a run that fails, or
    a killed run's staging folder, leaves nothing behind."""
    from curate.atomic import Outputs
    images = tmp_path / "images"
    with Outputs() as outputs:
        outputs.put(images, "a/1.jpg", b"one")
        outputs.put(images, "2.jpg", b"two")
        staged = [p.name for p in tmp_path.iterdir()]
        assert staged == [f".images.{os.getpid()}.stage.tmp"] and not images.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["images"]
    assert (images / "a" / "1.jpg").read_bytes() == b"one" and (images / "2.jpg").read_bytes() == b"two"

    (images / "old.jpg").write_bytes(b"old")                   # DIR there already: its files stay
    with Outputs() as outputs:
        outputs.put(images, "a/3.jpg", b"three")
    assert sorted(str(p.relative_to(images)) for p in images.rglob("*.jpg")) == ["2.jpg", "a/1.jpg", "a/3.jpg", "old.jpg"]
    assert [p.name for p in tmp_path.iterdir()] == ["images"]

    with pytest.raises(RuntimeError):
        with Outputs() as outputs:
            outputs.put(tmp_path / "other", "4.jpg", b"four")
            raise RuntimeError("the run fails")
    assert [p.name for p in tmp_path.iterdir()] == ["images"]

    killed = tmp_path / ".other.999999999.stage.tmp"          # a killed run's staging folder
    (killed / "sub").mkdir(parents=True)
    (killed / "sub" / "5.jpg").write_bytes(b"five")
    with Outputs() as outputs:
        outputs.put(tmp_path / "other", "6.jpg", b"six")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "other"]
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["6.jpg"]


def test_files_written_in_the_background_fail_with_the_file_named_and_commit_nothing(tmp_path, monkeypatch):
    """Outputs.put hands each file to a background thread (creating files costs the kernel
    time the run overlaps): an error there is raised by a later put or at commit, naming the
    file, and the run then leaves nothing; the bytes waiting to be written stay under the
    budget."""
    import threading
    from curate import atomic
    from curate.atomic import Outputs
    images = tmp_path / "images"
    with pytest.raises(curate.CurateError, match=r"images/1.jpg: cannot write the output \(File exists\)"):
        with Outputs() as outputs:
            outputs.put(images, "1.jpg", b"one")
            stage = next(tmp_path.iterdir())
            outputs.put(images, "1.jpg", b"again")  # written after the first: that create fails
    assert list(tmp_path.iterdir()) == [] and not stage.exists()

    gate, seen = threading.Event(), []
    real_create = atomic._create

    def held(path, data, shown):                     # the background thread waits until the test lets it go
        gate.wait()
        real_create(path, data, shown)

    monkeypatch.setattr(atomic, "_create", held)
    with Outputs() as outputs:
        outputs.put(images, "a.jpg", b"x" * 10)
        outputs.files.budget = 25
        outputs.put(images, "b.jpg", b"y" * 10)
        seen.append(outputs.files.waiting)
        threading.Timer(0, gate.set).start()         # put must wait for room: the first file goes first
        outputs.put(images, "c.jpg", b"z" * 10)
        seen.append(outputs.files.waiting)
    assert seen[0] == 20 and seen[1] <= 25          # c waited for a to be written
    assert sorted(p.name for p in images.iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]


def test_a_run_that_fails_after_extracting_leaves_no_images(shards, tmp_path):
    images, out = tmp_path / "images", tmp_path / "o.json"
    bad = tmp_path / "bad" / "train.parquet"        # read after the shard's images went to the staging folder
    bad.parent.mkdir()
    bad.write_bytes(shards["cauldron"].read_bytes()[:1000])
    result = run_curate("convert", "auto", "llava", shards["cauldron"], bad, "-o", out, "--extract-images", images)
    assert_one_line_error(result, "train.parquet: not a readable Parquet file")
    assert not images.exists() and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_images_held_as_bytes_wait_in_the_folder_given(shards, tmp_path):
    """With --engine ray, decode tasks on other nodes read the spooled bytes, so dedup spools
    them into the cache folder (a shared path) instead of this machine's temporary folder."""
    from curate.image_table import scan
    shared = tmp_path / "cache"
    images = scan(curate.Inputs([shards["cauldron"]]), spool_folder=shared)
    assert Path(images.spool.path).parent == shared and len(images.paths) == 5
    assert images.paths[0].read() == images.paths[0].read() != b""     # the bytes come back from there
    images.spool.close()
    assert list(shared.iterdir()) == []
