"""The built-in filters (#26), each end to end through `curate filter`: what goes, with which
reason, what stays, and that the summary adds up."""

import json
import re

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import FIXTURES, IMAGES, assert_one_line_error, load_json, run_curate, summary_numbers

PHOTO = FIXTURES / "images" / "coco" / "train2017" / "000000000001.jpg"      # the astronaut, 320 px


def photo(size=None) -> Image.Image:
    image = Image.open(PHOTO).convert("RGB")
    return image.resize(size, Image.Resampling.LANCZOS) if size else image


def sample(id, image, answer="An answer.", question=None):
    if question is None:
        count = len(image) if isinstance(image, list) else image is not None
        question = "<image>\n" * count + "What is this?"
    return {"id": id, "image": image, "conversations": [{"from": "human", "value": question},
                                                        {"from": "gpt", "value": answer}]}


def run_filter(tmp_path, records, *filters, check=0):
    """`curate filter` over ``records`` with images under tmp_path; returns (result, kept ids,
    {removed id: removal})."""
    data = tmp_path / "data.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "out.json"
    args = [f"--filter={f}" for f in filters]
    result = run_curate("filter", data, "-o", out, "--image-root", tmp_path, "--overwrite", *args, check=check)
    if check:
        return result, None, None
    removed = {r["id"]: r for r in load_json(tmp_path / "out.json.removed.jsonl")}
    numbers = summary_numbers(result.stderr)
    assert numbers["written"] + numbers["removed"] + numbers["rejected"] == numbers["input records"] == len(records)
    return result, [r["id"] for r in load_json(out)], removed


def save(image, tmp_path, name, **options):
    image.save(tmp_path / name, **options)
    return name


def test_unreadable_removes_missing_truncated_and_garbage_files(tmp_path):
    good = save(photo(), tmp_path, "good.jpg", quality=90)
    data = (tmp_path / good).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    records = [sample("good", good), sample("cut", "cut.jpg"), sample("junk", "junk.jpg"),
               sample("gone", "gone.jpg"), sample("text", None, question="No image here?")]
    result, kept, removed = run_filter(tmp_path, records, "unreadable")
    assert kept == ["good", "text"]
    assert removed["gone"]["reason"] == "missing file"
    assert "truncated" in removed["cut"]["reason"]
    assert removed["junk"]["filter"] == "unreadable" and removed["junk"]["image"] == "junk.jpg"
    assert "unreadable: removed 3 samples" in result.stderr


def test_wrong_format_removes_a_gif_named_jpg_and_leaves_unreadable_files_alone(tmp_path):
    save(photo((64, 64)).convert("P"), tmp_path, "gif.jpg", format="GIF")
    save(photo((64, 64)), tmp_path, "png.png")
    save(photo((64, 64)), tmp_path, "odd.xyz", format="PNG")      # an extension that promises nothing
    (tmp_path / "junk.jpg").write_bytes(b"garbage")
    records = [sample(1, "gif.jpg"), sample(2, "png.png"), sample(3, "odd.xyz"), sample(4, "junk.jpg")]
    _, kept, removed = run_filter(tmp_path, records, "wrong-format")
    assert kept == [2, 3, 4]
    assert removed[1]["reason"] == "a GIF file named .jpg" and removed[1]["format"] == "GIF"


def test_too_small_and_odd_aspect_use_the_upright_size_and_take_a_setting(tmp_path):
    save(photo((300, 31)), tmp_path, "thin.jpg")
    save(photo((300, 32)), tmp_path, "ok.jpg")
    save(photo((8050, 40)), tmp_path, "strip.jpg")
    records = [sample("thin", "thin.jpg"), sample("ok", "ok.jpg"), sample("strip", "strip.jpg")]
    _, kept, removed = run_filter(tmp_path, records, "too-small", "odd-aspect")
    assert kept == ["ok"]
    assert removed["thin"] == {"id": "thin", "image": "thin.jpg", "filter": "too-small",
                               "reason": "shorter side 31 px is under 32 px", "measure": "shorter side",
                               "value": 31, "threshold": 32}
    assert removed["strip"]["filter"] == "odd-aspect" and removed["strip"]["value"] > 200
    _, kept, _ = run_filter(tmp_path, records, "too-small=10", "odd-aspect=300")
    assert kept == ["thin", "ok", "strip"]


def test_flat_removes_one_colour_and_a_blank_page_but_not_a_low_contrast_photo(tmp_path):
    save(Image.new("RGB", (200, 150), (30, 120, 200)), tmp_path, "solid.png")
    page = Image.new("RGB", (600, 800), (250, 250, 248))
    page.paste((30, 30, 30), (290, 390, 296, 396))
    save(page, tmp_path, "page.png")
    from PIL import ImageEnhance
    save(ImageEnhance.Contrast(photo()).enhance(0.15), tmp_path, "dim.png")
    records = [sample("solid", "solid.png"), sample("page", "page.png"), sample("dim", "dim.png")]
    _, kept, removed = run_filter(tmp_path, records, "flat")
    assert kept == ["dim"]
    assert removed["solid"]["value"] == 0 and removed["page"]["value"] < 3


def test_blurry_dark_light_and_low_info(tmp_path):
    base = photo()
    save(base, tmp_path, "sharp.jpg", quality=90)
    save(base.filter(ImageFilter.GaussianBlur(4)), tmp_path, "blurred.jpg", quality=90)
    save(Image.eval(base, lambda x: x * 0.07), tmp_path, "dark.jpg", quality=90)
    save(Image.eval(base, lambda x: 255 - (255 - x) * 0.07), tmp_path, "light.jpg", quality=90)
    save(base.quantize(2, dither=Image.Dither.NONE).convert("RGB").resize((300, 300), Image.Resampling.NEAREST),
         tmp_path, "two.png")
    records = [sample(n, f"{n}.{'png' if n == 'two' else 'jpg'}") for n in ("sharp", "blurred", "dark", "light", "two")]
    for name, expected in (("blurry", "blurred"), ("dark", "dark"), ("light", "light"), ("low-info", "two")):
        _, kept, removed = run_filter(tmp_path, records, name)
        assert list(removed) == [expected], (name, removed)
        assert removed[expected]["filter"] == name and "threshold" in removed[expected]


def test_image_filters_decode_each_image_once_per_run(tmp_path, monkeypatch):
    from curate.plugins import image_look
    calls = []
    real = image_look.decode
    monkeypatch.setattr(image_look, "decode", lambda path: calls.append(path) or real(path))
    save(photo(), tmp_path, "a.jpg")
    save(photo((100, 80)), tmp_path, "b.jpg")
    records = [sample(1, "a.jpg"), sample(2, "b.jpg"), sample(3, ["a.jpg", "b.jpg"])]
    _, kept, _ = run_filter(tmp_path, records, "unreadable", "too-small", "flat", "blurry", "dark", "light")
    assert kept == [1, 2, 3]
    assert sorted(p.rsplit("/", 1)[-1] for p in calls) == ["a.jpg", "b.jpg"]


def test_duplicate_samples_and_empty_answers(tmp_path):
    save(photo((64, 64)), tmp_path, "a.jpg")
    records = [sample(1, "a.jpg", "A cat."), sample(2, "a.jpg", "A cat."), sample(3, "a.jpg", "A dog."),
               sample(4, None, "A cat."), sample(5, "a.jpg", "  \n "), sample(6, "a.jpg", ""),
               {"id": 7, "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}]}]
    _, kept, removed = run_filter(tmp_path, records, "duplicate-sample", "empty-answer")
    assert kept == [1, 3, 4]
    assert removed[2] == {"id": 2, "image": "a.jpg", "filter": "duplicate-sample",
                          "reason": "the same image and conversation as sample 1", "first": "1"}
    assert removed[5]["reason"] == "answer 1 is empty" and removed[6]["filter"] == "empty-answer"
    assert removed[7]["reason"] == "no answer (no gpt turn)"


def test_too_long_counts_characters_and_a_missing_tokenizer_is_a_clean_error(tmp_path):
    records = [sample(1, None, "x" * 100), sample(2, None, "x" * 1000)]
    _, kept, removed = run_filter(tmp_path, records, "too-long=500")
    assert kept == [1]
    assert removed[2]["length"] == len("What is this?\n") + 1000 and removed[2]["limit"] == 500
    result, _, _ = run_filter(tmp_path, records, "too-long=500:nope/x", check=1)
    assert_one_line_error(result, "too-long", "nope/x")


@pytest.mark.parametrize("setting, message", [
    ("blurry=abc", "'abc' is not a number from 0.0 to 1.0"), ("too-small=0", "'0' is not a whole number"),
    ("flat=-1", "'-1' is not a number"), ("dark=nan", "'nan' is not a number"), ("too-long=many", "'many'"),
    ("unreadable=3", "takes no value")])
def test_bad_settings_are_one_line_errors_naming_the_filter(tmp_path, setting, message):
    result, _, _ = run_filter(tmp_path, [sample(1, None)], setting, check=1)
    assert_one_line_error(result, setting.split("=")[0], message)
    assert not (tmp_path / "out.json").exists()


def test_no_filter_named_runs_the_defaults_and_help_names_them(tmp_path):
    save(photo((300, 200)), tmp_path, "ok.jpg")
    save(Image.new("RGB", (300, 200), "white"), tmp_path, "white.jpg")
    save(photo((300, 20)), tmp_path, "tiny.jpg")
    records = [sample("ok", "ok.jpg"), sample("again", "ok.jpg"), sample("white", "white.jpg"),
               sample("tiny", "tiny.jpg"), sample("gone", "gone.jpg"), sample("empty", "ok.jpg", " ")]
    records[1]["id"], records[1]["conversations"] = "again", records[0]["conversations"]
    result, kept, removed = run_filter(tmp_path, records)
    assert kept == ["ok", "white"]                  # flat is no default: when unsure, keep
    assert {k: r["filter"] for k, r in removed.items()} == {"again": "duplicate-sample", "tiny": "too-small",
                                                            "gone": "unreadable", "empty": "empty-answer"}
    help_text = re.sub(r"-\s+", "-", run_curate("filter", "--help", check=0).stdout)     # wrapped at hyphens
    for name in ("unreadable", "wrong-format", "too-small", "odd-aspect", "flat", "duplicate-sample", "empty-answer"):
        assert name in help_text


def test_image_filters_need_an_image_root(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([sample(1, "a.jpg")]))
    result = run_curate("filter", data, "-o", tmp_path / "out.json", "--filter", "flat", check=1)
    assert_one_line_error(result, "flat", "--image-root")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.skipif(not IMAGES.is_dir(), reason=f"shared photos not found at {IMAGES}")
def test_no_shared_photo_is_removed_by_any_filter(tmp_path):
    import shutil
    names = sorted(p.name for p in IMAGES.glob("*.jpg") if p.stem != "skimage_clock_motion")  # a blurred photo
    for name in names:
        shutil.copy(IMAGES / name, tmp_path / name)
    records = [sample(n, n, f"answer {n}") for n in names]
    _, kept, removed = run_filter(tmp_path, records, "unreadable", "wrong-format", "too-small", "odd-aspect", "flat",
                                  "blurry", "dark", "light", "low-info")
    assert removed == {} and kept == names


def tiny_tokenizer(path):
    """A Hugging Face tokenizer.json built here (no download): whitespace and punctuation split
    the text, every piece one token."""
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    tokenizer = tokenizers.Tokenizer(WordLevel({"[UNK]": 0, "what": 1, "is": 2, "this": 3, "?": 4}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(path))
    return path


def test_too_long_counts_the_tokens_of_a_named_tokenizer(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer.json")
    # "What is this?" is 4 tokens; then one per word: 4 + 3 = 7, 4 + 6 = 10 (over 40 characters)
    records = [sample(1, None, "a b c"), sample(2, None, "one two three four five six"), sample(3, None, "x" * 60)]
    _, kept, removed = run_filter(tmp_path, records, f"too-long=8:hf/{tokenizer}")
    assert kept == [1, 3]            # 60 characters, but 5 tokens
    assert removed[2]["length"] == 10 and removed[2]["limit"] == 8
    assert removed[2]["reason"] == f"10 hf/{tokenizer} tokens, over 8"
    _, kept, _ = run_filter(tmp_path, records, "too-long=40")          # the character limit: 2 and 3 go
    assert kept == [1]


def test_a_tokenizer_that_is_missing_or_not_installed_is_a_one_line_error(tmp_path):
    records = [sample(1, None)]
    result, _, _ = run_filter(tmp_path, records, f"too-long=8:hf/{tmp_path / 'none.json'}", check=1)
    assert_one_line_error(result, "too-long", "cannot load the tokenizer", "none.json")
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        result, _, _ = run_filter(tmp_path, records, "too-long=8:tiktoken/cl100k_base", check=1)
        assert_one_line_error(result, "too-long", "needs tiktoken, which is not installed", "too-long=N")


def test_blur_measure_equals_its_definition_with_a_blurred_copy():
    """The measure compares neighbour differences with those of the image under a 9-pixel moving
    average; it computes the latter without making the blurred image, to the same value."""
    from curate.plugins.image_look import blur_effect

    def by_definition(gray, width=9):
        scores = []
        for axis in (0, 1):
            along = np.moveaxis(gray.astype(np.float64), axis, 0)
            padded = np.pad(along, ((width // 2 + 1, width - 1 - width // 2), (0, 0)), mode="edge")
            blurred = np.stack([padded[i + 1:i + 1 + width].mean(axis=0) for i in range(len(along))])
            d_image, d_blurred = np.abs(np.diff(along, axis=0)), np.abs(np.diff(blurred, axis=0))
            scores.append(np.maximum(0, d_image - d_blurred).sum() / d_image.sum())
        return 1 - min(scores)

    rng = np.random.default_rng(0)
    sharp = rng.random((60, 80)).astype(np.float32) * 255
    smooth = np.asarray(Image.fromarray(sharp.astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)), np.float32)
    for gray in (sharp, smooth):
        assert blur_effect(gray) == pytest.approx(by_definition(gray), abs=1e-5)
    assert blur_effect(smooth) > blur_effect(sharp) + 0.3
    assert blur_effect(np.full((40, 40), 7, np.float32)) == 0.0


def test_low_info_counts_the_colours_the_file_holds_not_those_a_resize_blends(tmp_path):
    """A poster of three flat colours at 1,200 px: shrunk smoothly to 384 px its edges blend into
    many colours, so the entropy is taken on pixels picked from the decoded image (cleanvision
    takes it on the image as stored)."""
    big = photo().resize((1200, 1200), Image.Resampling.BICUBIC)
    save(big.quantize(3, dither=Image.Dither.NONE).convert("RGB"), tmp_path, "poster.png")
    save(big, tmp_path, "photo.png")
    from curate.plugins.image_look import decode
    assert decode(str(tmp_path / "poster.png")).entropy <= np.log2(9) + 1e-6     # 3 values per channel at most
    _, kept, removed = run_filter(tmp_path, [sample("poster", "poster.png"), sample("photo", "photo.png")], "low-info")
    assert kept == ["photo"] and removed["poster"]["filter"] == "low-info"
