"""Issue #23, item 4: multi-image and video records through every format. A video is kept in the
Sample and written the way each format writes it (LLaVA-Video `video` with an `<image>` tag,
LLaMA-Factory and ms-swift `videos`, Qwen and InternVL `video`); every writer checks the tags
against the media lists with its trainer's own rule (curate.media) and rejects a mismatch,
naming the record; dedup carries videos without decoding them."""

import json

import pytest

import curate
from conftest import FIXTURES, load_json, run_curate, summary_numbers
from curate.sample import Sample, Turn

IMAGES = FIXTURES / "images"

# LLaVA-Video-178K's shape: a video path, its place in the text an <image> tag
VIDEO = {"id": "v1", "video": "academic_source/ytb_1.mp4", "data_source": "academic",
         "conversations": [{"from": "human", "value": "<image>\nWhat happens in the video?"},
                           {"from": "gpt", "value": "A dog runs after a ball."}]}
MULTI = {"id": "m1", "image": ["coco/train2017/000000000001.jpg", "coco/train2017/000000000002.jpg"],
         "conversations": [{"from": "human", "value": "<image>\n<image>\nWhat differs?"},
                           {"from": "gpt", "value": "The light."}]}
SINGLE = {"id": "s1", "image": "coco/train2017/000000000003.jpg",
          "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}]}


def one_line(text: str) -> str:
    return " ".join(text.split())


def read_out(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return load_json(path)


@pytest.fixture
def llava_video(tmp_path):
    source = tmp_path / "video.json"
    source.write_text(json.dumps([VIDEO, MULTI, SINGLE]))
    return source


# how each writer writes the three records: (video key, video value, video's tag, image key)
WRITTEN = {
    "llava": ("video", "academic_source/ytb_1.mp4", "<image>\nWhat happens", "image"),
    "sharegpt4v": ("video", "academic_source/ytb_1.mp4", "<image>\nWhat happens", "image"),
    "internvl": ("video", "academic_source/ytb_1.mp4", "<video>\nWhat happens", "image"),
    "qwen-vl": ("video", "academic_source/ytb_1.mp4", "<video>\nWhat happens", "image"),
    "llama-factory": ("videos", ["academic_source/ytb_1.mp4"], "<video>\nWhat happens", "images"),
    "ms-swift": ("videos", ["academic_source/ytb_1.mp4"], "<video>\nWhat happens", "images"),
}


@pytest.mark.parametrize("writer", sorted(WRITTEN))
def test_every_writer_writes_videos_and_image_lists_its_way(tmp_path, llava_video, writer):
    video_key, video_value, tag, image_key = WRITTEN[writer]
    out = tmp_path / ("out.jsonl" if writer in ("internvl", "ms-swift") else "out.json")
    result = run_curate("convert", "llava", writer, llava_video, "-o", out, "--image-root", IMAGES,
                        "--ids", "keep", check=0)
    assert summary_numbers(result.stderr)["written"] == 3
    video, multi, single = read_out(out)
    assert video[video_key] == video_value
    assert image_key not in video or video[image_key] == []
    first_turn = (video.get("conversations") or video.get("messages"))[0]
    assert (first_turn.get("value") or first_turn.get("content")).startswith(tag)
    assert video["data_source"] == "academic"                 # other keys survive
    assert multi[image_key] == MULTI["image"] and video_key not in multi
    assert single[image_key] in (SINGLE["image"], [SINGLE["image"]])
    if writer == "llama-factory":
        info = json.loads((tmp_path / "dataset_info.json").read_text())["out"]
        assert info["columns"] == {"messages": "messages", "images": "images", "videos": "videos"}


def test_llava_video_round_trips_through_llama_factory(tmp_path, llava_video):
    lf, back = tmp_path / "lf.json", tmp_path / "back.json"
    run_curate("convert", "llava", "llama-factory", llava_video, "-o", lf, "--ids", "keep", "-q", check=0)
    run_curate("convert", "llama-factory", "llava", lf, "-o", back, "-q", check=0)
    assert load_json(back) == [VIDEO, MULTI, SINGLE]


def test_an_image_dataset_gets_no_videos_column(tmp_path):
    run_curate("convert", "llava", "llama-factory", FIXTURES / "llava_small.json", "-o", tmp_path / "lf.json",
               "-q", check=0)
    info = json.loads((tmp_path / "dataset_info.json").read_text())["lf"]
    assert "videos" not in info["columns"]
    assert all("videos" not in r for r in load_json(tmp_path / "lf.json"))


def sample(texts, image=None, video=None, roles=("human", "gpt")):
    return Sample("r7", image, [Turn(role, text) for role, text in zip(roles, texts)], {}, video)


# (writer, sample, fragment of the reason): each trainer's own rule, read from its code
MISMATCHES = [
    ("llama-factory", sample(["<video>\n<video>\nwhy?", "ok"], video="a.mp4"), "2 <video> tags for 1 videos"),
    ("llama-factory", sample(["why?", "ok"], image="a.jpg"), "0 <image> tags for 1 images"),
    ("ms-swift", sample(["<image><image>why?", "ok"], image="a.jpg"), "at most one per image"),
    ("qwen-vl", sample(["why?", "<image> ok"], image="a.jpg"), "0 <image> tags in the user's turns for 1 images"),
    ("qwen-vl", sample(["<video>\nwhy?", "ok"], video=["a.mp4", "b.mp4"]), "1 <video> tags in the user's turns"),
    ("internvl", sample(["<video>\n<video>\nwhy?", "ok"], video=["a.mp4", "b.mp4"]), "InternVL takes one video"),
    ("internvl", sample(["<image>\n<video>\nwhy?", "ok"], image="a.jpg", video="a.mp4"), "images or its video"),
    ("internvl", sample(["why? <video>", "ok"], video="a.mp4"), "'<video>\\n' in the first turn"),
    ("internvl", sample(["why?", "ok", "and?", "<image> there"], image="a.jpg", roles=("human", "gpt") * 2),
     "not in the first turn"),
    ("llava", sample(["<video>\n<video>\nwhy?", "ok"], video=["a.mp4", "b.mp4"]), "LLaVA-NeXT takes one video"),
    ("llava", sample(["<image>\n<video>\nwhy?", "ok"], image="a.jpg", video="a.mp4"), "images or its video"),
    ("llava", sample(["why?", "ok"], video="a.mp4"), "0 <image> tags for 1 videos"),
]


@pytest.mark.parametrize("writer, bad, reason", MISMATCHES)
def test_each_writer_rejects_what_its_trainer_would_trip_on(tmp_path, writer, bad, reason):
    out = tmp_path / ("o.jsonl" if writer == "internvl" else "o.json")
    with pytest.raises(curate.RecordError) as info:
        curate.write([bad], out, writer)
    assert info.value.record_id == "r7" and reason in str(info.value)
    assert not out.exists()


# what each trainer accepts although another would not
ACCEPTED = [
    ("ms-swift", sample(["why?", "ok"], image="a.jpg")),                       # ms-swift adds the tag itself
    ("qwen-vl", sample(["<image><video>why?", "ok"], image="a.jpg", video="a.mp4")),   # both, one tag each
    ("qwen-vl", sample(["<video>\n<video>\nwhy?", "ok"], video=["a.mp4", "b.mp4"])),
    ("llama-factory", sample(["<image><video>why?", "ok"], image="a.jpg", video="a.mp4")),
    ("llama-factory", sample(["why?", "look: <image>"], image="a.jpg")),           # any message counts
]


@pytest.mark.parametrize("writer, good", ACCEPTED)
def test_each_writer_accepts_what_its_trainer_reads(tmp_path, writer, good):
    assert curate.write([good], tmp_path / "o.json", writer) == 1


def test_a_mismatch_is_a_reject_naming_the_record(tmp_path):
    source = tmp_path / "lf.json"
    source.write_text(json.dumps([
        {"id": "two", "messages": [{"role": "user", "content": "<video><video>why?"},
                                   {"role": "assistant", "content": "ok"}], "videos": ["a.mp4", "b.mp4"]},
        {"id": "one", "messages": [{"role": "user", "content": "<video>\nwhy?"},
                                   {"role": "assistant", "content": "ok"}], "videos": ["a.mp4"]}]))
    out = tmp_path / "o.json"
    result = run_curate("convert", "llama-factory", "llava", source, "-o", out)
    assert result.returncode == 1 and "'two'" in result.stderr and "LLaVA-NeXT takes one video" in result.stderr
    assert not out.exists()
    result = run_curate("convert", "llama-factory", "llava", source, "-o", out, "--on-error", "skip", check=0)
    assert summary_numbers(result.stderr) == {"input records": 2, "written": 1, "removed": 0, "rejected": 1}
    rejects = [json.loads(line) for line in (tmp_path / "o.json.rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["field"]) for r in rejects] == [("two", "video")]
    assert load_json(out)[0] == {"id": "one", "video": "a.mp4",
                                 "conversations": [{"from": "human", "value": "<image>\nwhy?"},
                                                   {"from": "gpt", "value": "ok"}]}


def test_readers_check_video_fields(tmp_path):
    source = tmp_path / "bad.json"
    source.write_text(json.dumps([dict(VIDEO, video="../../etc/x.mp4")]))
    result = run_curate("convert", "llava", "llava", source, "-o", tmp_path / "o.json")
    assert result.returncode == 1 and "field 'video'" in result.stderr and "climbs out" in result.stderr
    source.write_text(json.dumps([{"id": 1, "messages": [{"role": "user", "content": "<video>x"},
                                                         {"role": "assistant", "content": "y"}], "videos": "a.mp4"}]))
    result = run_curate("convert", "llama-factory", "llava", source, "-o", tmp_path / "o.json")
    assert result.returncode == 1 and "field 'videos'" in result.stderr


def test_inspect_does_not_count_video_samples_as_text_only(tmp_path, llava_video):
    result = run_curate("inspect", llava_video, check=0)
    row = next(line for line in result.stdout.splitlines() if "academic_source" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert cells[:4] == ["academic_source", "1", "0", "0"]        # source, samples, images, text-only


@pytest.mark.slow
def test_dedup_carries_videos_and_says_so(tmp_path):
    # the demo's 000000000002.jpg duplicates 000000000001.jpg: its sample goes, but a sample that
    # also holds a video stays (the video was not compared)
    with_video = {"id": "vid2", "image": "coco/train2017/000000000002.jpg", "video": "clips/2.mp4",
                  "conversations": [{"from": "human", "value": "<image>\n<video>\nSame scene?"},
                                    {"from": "gpt", "value": "Yes."}]}
    records = load_json(FIXTURES / "dedup_demo.json") + [VIDEO, with_video]
    source = tmp_path / "demo.json"
    source.write_text(json.dumps(records))
    out = tmp_path / "out.json"
    result = run_curate("dedup", source, "-o", out, "--image-root", IMAGES, "--embedder", "timm-pool",
                        "--cache", tmp_path / "cache", "--workers", "2", "--to", "qwen-vl", check=0)
    assert "2 samples hold 2 videos: carried to the output, not decoded nor compared" in one_line(result.stderr)
    kept = load_json(out)
    assert kept[-2:] == [VIDEO | {"conversations": [{"from": "human", "value": "<video>\nWhat happens in the video?"},
                                                    VIDEO["conversations"][1]]}, with_video]
    removed = [json.loads(line)["id"] for line in (tmp_path / "out.json.report" / "removed.jsonl").open()]
    assert "000000000002" in removed and "vid2" not in removed


def test_preview_names_a_video_without_decoding_it(tmp_path, llava_video):
    page = tmp_path / "p.html"
    run_curate("preview", llava_video, "-o", page, "--image-root", IMAGES, check=0)
    html = page.read_text()
    assert "video: academic_source/ytb_1.mp4 (not decoded)" in html and html.count("<svg") == 2
