"""The fast paths give exactly what the general code gives: SVIT -> LLaVA's padding lane against
rewrite_boxes, the fused SVIT reader against the engine's rewrite, JPEG frame headers against
Pillow, cached folder realpaths against symbolic links; LLaVA records written as read against
records built from their samples."""

import io
import json
import random

import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import curate
from conftest import FIXTURES, REAL, needs_shared, run_curate
from curate.boxes import BRACKET_ORIGINAL, BRACKET_PADDED, SVIT_ORIGINAL, BoxRewriter, PaddingLane, rewrite_boxes
from curate.engine import apply_image_prefix
from curate.errors import RecordError
from curate.images import ImageLocator, UnreadableImage, _jpeg_frame_size, image_size
from curate.jsonstream import dumps
from curate.plugins.llava import LlavaShape, record_to_sample, sample_to_record
from curate.plugins.svit import SvitReader, check_boxes
from curate.stages import ConvertBoxes, IdPolicy

# --- the padding lane ----------------------------------------------------------------------------

THOUSANDTHS = st.integers(0, 1000)


@st.composite
def plain_boxes(draw):
    """A box as SVIT writes one: x1 <= x2, y1 <= y2, Python's shortest float text."""
    x1, x2 = sorted((draw(THOUSANDTHS), draw(THOUSANDTHS)))
    y1, y2 = sorted((draw(THOUSANDTHS), draw(THOUSANDTHS)))
    return "[" + ", ".join(str(round(k / 1000, 3)) for k in (x1, y1, x2, y2)) + "]"


@st.composite
def odd_boxes(draw):
    """Brackets the lane must hand back, or must convert exactly as rewrite_boxes does."""
    numbers = st.one_of(THOUSANDTHS.map(lambda k: str(round(k / 1000, 3))),
                        st.integers(0, 100).map(lambda k: f"{k / 100:.2f}"),          # 0.50
                        st.sampled_from(["0", "1", "1.0", "0.0", "1.000", " 0.5", "0.25 ", "0.1234", "1e-1",
                                         "1.5", "-0.0", "00.5", "x", "", "0.5.5"]))
    values = draw(st.lists(numbers, min_size=3, max_size=5))
    return "[" + draw(st.sampled_from([", ", ",", " , ", ",  "])).join(values) + "]"


WORDS = st.sampled_from(["The ", "man ", "holds two ", "cups", " over the table.", "? ", "\n", " and "])
FRAGMENTS = st.one_of(
    WORDS, WORDS, plain_boxes(), plain_boxes(),
    st.tuples(st.sampled_from(["<st>dog<ed> ", "<st>red car<ed>  "]), plain_boxes()).map("".join),
    st.tuples(plain_boxes(), st.just(", "), plain_boxes()).map("".join),
    st.sampled_from(["note [sic] ", "[", "]", "<st>", "<ed>", "<e<st>d>", "<<st>ed>", "<st>dog<ed>", "\0"]),
    odd_boxes(),
    st.tuples(plain_boxes(), st.sampled_from([" , ", ",", " and ", ",\n"]), plain_boxes()).map("".join))


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(st.lists(FRAGMENTS, max_size=8).map("".join), min_size=1, max_size=4),
       width=st.integers(1, 1500), height=st.integers(1, 1500), svit=st.booleans())
def test_padding_lane_gives_what_rewrite_boxes_gives(texts, width, height, svit):
    source = SVIT_ORIGINAL if svit else BRACKET_ORIGINAL
    done = PaddingLane(source)(texts, lambda: (width, height))
    if done is None:
        return                      # the caller then uses rewrite_boxes itself
    expected = [rewrite_boxes(text, source, BRACKET_PADDED, lambda: (width, height)) for text in texts]
    assert done[0] == [text for text, _ in expected]
    assert done[1] == sum(count for _, count in expected)
    if svit:                        # and SVIT's checks would have passed every text
        assert all(check_boxes(text) is None for text in texts)


def test_padding_lane_takes_the_plain_case_and_leaves_the_rest():
    lane = PaddingLane(SVIT_ORIGINAL)
    texts = ["What is the <st>man<ed> [0.1, 0.2, 0.35, 0.9] holding?",
             "Two <st>cups<ed> [0.3, 0.4, 0.36, 0.48], [0.5, 0.41, 0.56, 0.5]; no boxes here [sic]."]
    assert lane(texts[:1], lambda: (800, 600)) == (["What is the man [0.1, 0.275, 0.35, 0.8] holding?"], 1)
    for odd in ("the <st>dog<ed>[0.1, 0.2, 0.3, 0.4]",         # rewrite_boxes adds a space
                "[0.1, 0.2, 0.3, 0.4] , [0.5, 0.5, 0.6, 0.6]",    # and writes ", " between boxes
                "[0.1234, 0.2, 0.3, 0.4]", "[0.5, 0.2, 0.3, 0.4]", "[1, 2, 3, 4]"):
        assert lane([odd], lambda: (800, 600)) is None, odd
    assert lane(texts, lambda: (800, 600)) is None                # "[sic]" sends the record back
    for nul in (["a\0b", "c"], ["a\0b [0.1, 0.2, 0.3, 0.4]", "c"]):    # a NUL in a text (JSON's \u0000)
        assert lane(nul, lambda: (800, 600)) is None, nul


@pytest.mark.slow
def test_padding_lane_memory_is_bounded():
    lane = PaddingLane(SVIT_ORIGINAL)
    for width in range(1, 3000):
        lane(["[0.1, 0.2, 0.3, 0.4]"], lambda: (width, 1000 + width))
    assert len(lane._pixels) <= PaddingLane._KEPT
    assert sum(map(len, lane._texts.values())) <= PaddingLane._KEPT_TEXT_ENTRIES and len(lane._shared_texts) <= 1001


# --- the fused SVIT reader -------------------------------------------------------------------------

TRICKY = [
    "What is the <st>man<ed> [0.1, 0.2, 0.35, 0.9] holding near the <st>table<ed> [0.4, 0.5, 0.95, 0.99]?",
    "The <st>man<ed>[0.1, 0.2, 0.35, 0.9] holds two <st>cups<ed> [0.3, 0.4, 0.36, 0.48] , [0.5, 0.41, 0.56, 0.5].",
    "A <st>sign<ed> [0.1234, 0.2, 0.3, 0.45] reads [sic] 'open'.",
    "Nothing to see, [1, 2, 3, 4] is not a box.",
    "A <st>car<ed> [0.2, 0.1, 0.9, 0.8].",
    "A <st>cat<ed> [0.2, 0.1, 0.9, 0.8] and a NUL \u0000 in the text.",
]


def _svit_file(tmp_path, bad_box=False):
    rng = random.Random(7)
    records = []
    for n, image_id in enumerate([1, 2, 4, 1]):
        content = []
        for _ in range(3):
            content += [{"from": "user", "value": rng.choice(TRICKY)}, {"from": "gpt", "value": rng.choice(TRICKY)}]
        if bad_box and n == 2:
            content[3]["value"] = "The <st>cup<ed> [0.5, 0.4, 0.3, 0.48] is red."      # x1 > x2
        records.append({"image_id": image_id, "conversations": [{"content": content}]})
    path = tmp_path / "referring_qa.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("bad_box", [False, True])
def test_fused_svit_reader_equals_the_engine_rewrite(tmp_path, monkeypatch, bad_box):
    source = _svit_file(tmp_path, bad_box)

    def run(name):
        report = curate.convert([source], tmp_path / f"{name}.json", "svit", "llava",
                                image_root=FIXTURES / "images", on_error="skip", overwrite=True)
        rejects = tmp_path / f"{name}.json.rejects.jsonl"
        return ((tmp_path / f"{name}.json").read_text(), rejects.read_text() if rejects.exists() else None,
                report.written, report.rejected, report.notes)

    converting = SvitReader.read_converting
    fused_reads = []
    monkeypatch.setattr(SvitReader, "read_converting",
                        lambda self, *args: fused_reads.append(1) or converting(self, *args))
    fused = run("fused")
    assert fused_reads == [1]                # the box stage read SVIT through its fast path
    monkeypatch.setattr(ConvertBoxes, "converts_own", staticmethod(lambda reader, rewriter: False))
    assert run("engine") == fused
    assert fused_reads == [1]
    assert fused[3] == (1 if bad_box else 0)
    assert "x1 > x2" in (fused[1] or "x1 > x2")
    images = 2 if bad_box else 3             # a rejected record's boxes and image are not counted
    assert any("converted" in note and f"with the sizes of {images} images" in note for note in fused[4])


@needs_shared
def test_fused_path_matches_the_release_bytes_for_every_real_box():
    """Every box of the 39 real svit_referring records, unpadded and padded again by the lane,
    is what rewrite_boxes writes (both are SVIT's recipe)."""
    records = [r for r in json.loads((REAL / "svit_mix_665k_llava_format.every500.json").read_text())
               if str(r["id"]).startswith("svit_referring")]
    texts = [turn["value"] for r in records for turn in r["conversations"]]
    for size in ((500, 333), (800, 600), (600, 800), (1024, 768), (500, 500)):
        expected = [rewrite_boxes(t, BRACKET_ORIGINAL, BRACKET_PADDED, lambda: size)[0] for t in texts]
        assert PaddingLane(BRACKET_ORIGINAL)(texts, lambda: size)[0] == expected


def test_rewriter_reads_each_size_once_and_says_so(tmp_path):
    rewriter = BoxRewriter(SVIT_ORIGINAL, BRACKET_PADDED, ImageLocator(FIXTURES / "images"))
    calls = []

    def size():
        calls.append(1)
        return rewriter.image_size("vg/VG_100K/1.jpg", "x.json", index=0)

    out, count = rewriter.rewrite_texts(["<st>a<ed> [0, 0, 1, 1]", "b [0.5, 0.5, 0.6, 0.6]", "no boxes"], size)
    rewriter.tally(count, "vg/VG_100K/1.jpg")
    assert len(out) == 3 and out[2] == "no boxes" and len(calls) == 1
    assert rewriter.note().startswith("converted 2 boxes") and "1 images" in rewriter.note()


# --- JPEG frame headers ------------------------------------------------------------------------------

def _jpeg(path, mode="RGB", size=(321, 123), **save):
    Image.new(mode, size, 90).save(path, "JPEG", **save)
    return path


def _variants(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                   # rotated: the stored size is what counts
    yield _jpeg(tmp_path / "plain.jpg")
    yield _jpeg(tmp_path / "progressive.jpg", progressive=True)
    yield _jpeg(tmp_path / "grey.jpg", "L", (17, 400))
    yield _jpeg(tmp_path / "cmyk.jpg", "CMYK", (64, 48))
    yield _jpeg(tmp_path / "exif.jpg", exif=exif.tobytes())
    yield _jpeg(tmp_path / "icc.jpg", icc_profile=b"\0" * 70_000)      # ICC spread over two APP2 segments
    yield _jpeg(tmp_path / "comment.jpg", comment=b"hello")
    yield _jpeg(tmp_path / "restart.jpg", restart_marker_blocks=1)
    yield _jpeg(tmp_path / "subsampled.jpg", subsampling=2, quality=20)
    png = tmp_path / "png.jpg"
    Image.new("RGB", (30, 20)).save(png, "PNG")
    yield png
    whole = (tmp_path / "plain.jpg").read_bytes()
    for cut in (3, 20, 200, len(whole) // 2):
        truncated = tmp_path / f"truncated{cut}.jpg"
        truncated.write_bytes(whole[:cut])
        yield truncated
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0\x00\x01" + b"\0" * 100)         # a segment length below 2
    yield junk


def test_jpeg_frame_size_agrees_with_pillow(tmp_path):
    for path in _variants(tmp_path):
        try:
            pillow = Image.open(path).size
        except Exception:
            pillow = None
        fast = _jpeg_frame_size(path)
        assert fast is None or fast == pillow, path.name
        if pillow is not None:
            assert image_size(path, exif=False) == pillow, path.name
        else:
            with pytest.raises(UnreadableImage):
                image_size(path, exif=False)
    assert _jpeg_frame_size(tmp_path / "plain.jpg") == (321, 123)
    assert _jpeg_frame_size(tmp_path / "progressive.jpg") == (321, 123)
    assert image_size(tmp_path / "exif.jpg") == (123, 321)             # as displayed, through Pillow


@needs_shared
def test_jpeg_frame_size_of_real_photographs():
    photos = sorted((REAL.parent / "images").glob("*.jpg"))
    assert photos
    for photo in photos:
        assert _jpeg_frame_size(photo) == Image.open(photo).size, photo.name


def test_pixel_bound_holds_on_the_fast_path(tmp_path):
    header = io.BytesIO()
    Image.new("L", (8, 8)).save(header, "JPEG")
    data = bytearray(header.getvalue())
    at = data.index(b"\xff\xc0") + 5                   # the frame header's height and width
    data[at:at + 4] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    assert _jpeg_frame_size(path) == (60000, 60000)
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        image_size(path, exif=False)


# --- cached folder realpaths ---------------------------------------------------------------------

def test_a_link_out_of_the_root_is_refused_in_a_folder_already_resolved(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "vg" / "VG_100K").mkdir(parents=True)
    outside.mkdir()
    _jpeg(root / "vg" / "VG_100K" / "1.jpg")
    _jpeg(outside / "secret.jpg")
    (root / "vg" / "VG_100K" / "2.jpg").symlink_to(outside / "secret.jpg")
    locator = ImageLocator(root)
    assert locator.find("vg/VG_100K/1.jpg") is not None           # the folder is now cached
    with pytest.raises(UnreadableImage, match="outside the image root"):
        locator.find("vg/VG_100K/2.jpg")
    assert locator.find("vg/VG_100K/3.jpg") is None
    assert locator.find("VG_100K/1.jpg") is None and locator.find("x/VG_100K/1.jpg") is None


# --- LLaVA records written as read ---------------------------------------------------------------

LLAVA = LlavaShape("llava")
TEXTS = st.sampled_from(["What is it?", "A dog.", "", "é <ima", "ge>"] * 4 + ["<image>", "<video>"])
TURN_EXTRA = st.sampled_from([{}, {}, {"weight": 0}, {"a": None}])


@st.composite
def llava_records(draw):
    """LLaVA records, valid or not, with their keys in any order: the ones the writer writes back
    as they are and every other kind (null image, video, keys moved, extra keys, bad turns)."""
    image = draw(st.sampled_from(["coco/1.jpg", ["a.jpg", "b.jpg"], None, None, "/abs.jpg", 3]))
    tags = "<image>\n" * (1 if type(image) is str else len(image) if type(image) is list else 0)
    turns = []
    for k in range(draw(st.integers(0, 4))):
        role = ("human", "gpt")[k % 2] if draw(st.integers(0, 9)) else draw(st.sampled_from(["gpt", "system"]))
        turn = {"from": role, "value": draw(TEXTS) if k else tags + draw(TEXTS), **draw(TURN_EXTRA)}
        if draw(st.integers(0, 9)) == 0:
            turn = dict(reversed(list(turn.items())))
        turns.append(turn if draw(st.integers(0, 30)) else draw(st.sampled_from([{"from": "bot", "value": ""},
                                                                                 {"from": "gpt"}, "text",
                                                                                 {"from": ["gpt"], "value": ""}])))
    record = {"id": draw(st.sampled_from(["a", 7, "000000033471"])), "image": image, "conversations": turns}
    if draw(st.integers(0, 4)) == 0:
        record["video"] = draw(st.sampled_from(["v.mp4", None]))
    for key in draw(st.lists(st.sampled_from(["source", "meta"]), max_size=2, unique=True)):
        record[key] = {"k": [1, 2.5]}
    if image is None and draw(st.booleans()):
        record.pop("image")
    if draw(st.integers(0, 5)) == 0:
        items = list(record.items())
        draw(st.randoms()).shuffle(items)
        record = dict(items)
    return record


def _outcome(record, shape):
    try:
        return record_to_sample(json.loads(json.dumps(record)), "x.json", 3, shape)
    except RecordError as error:
        return error.describe()


@settings(max_examples=600, deadline=None)
@given(record=llava_records())
def test_a_record_kept_as_read_is_what_the_writer_would_write(record):
    lazy, eager = _outcome(record, LLAVA), _outcome(record, None)
    if isinstance(eager, str):
        assert lazy == eager                          # the same check, the same message
        return
    assert eager.record_as_read("llava") is None
    assert lazy == eager and repr(lazy) == repr(eager) and lazy.tag_counts() == eager.tag_counts()
    assert lazy.as_record() == eager.as_record() and list(lazy.texts()) == [t.text for t in eager.conversations]
    as_read = lazy.record_as_read("llava")
    if as_read is not None:
        assert dumps(as_read) == dumps(sample_to_record(eager, "<image>")) == dumps(record)
        assert lazy.conversations == eager.conversations and lazy.extra == eager.extra
    assert lazy.record_as_read("llava") is None


def _as_read(record=None):
    record = record or {"id": 4, "image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image><image>\nWhat?"}, {"from": "gpt", "value": "Two.", "weight": 1}],
        "source": "x"}
    sample = record_to_sample(record, "x.json", 0, LLAVA)
    assert sample.record_as_read("llava") is record
    return sample


@pytest.mark.parametrize("change", [
    lambda s: setattr(s, "id", 4),
    lambda s: setattr(s, "image", ["a.jpg", "b.jpg"]),
    lambda s: setattr(s, "video", None),
    lambda s: setattr(s, "conversations", list(s.conversations)),
    lambda s: setattr(s, "extra", {}),
    lambda s: s.conversations[0].__setattr__("text", "<image><image> Which?"),
    lambda s: s.conversations.pop(),
    lambda s: s.extra.update(source="y"),
    lambda s: IdPolicy("string").apply(s),
    lambda s: IdPolicy("drop").apply(s),
    lambda s: setattr(s, "image", apply_image_prefix(s.image, "coco")),
])
def test_any_change_forgets_the_record(change):
    sample = _as_read()
    change(sample)
    assert sample.record_as_read("llava") is None
    assert sample_to_record(sample).get("id") in (4, "4", None)


def test_tag_counts_the_reader_made_go_with_the_record():
    sample = _as_read()
    assert sample.tag_counts() == (2, 0)
    sample.conversations[1].text = "<video> <image>"
    assert sample.record_as_read("llava") is None and sample.tag_counts() == (3, 1)


def test_reading_keeps_the_record_and_other_formats_do_not_take_it():
    sample = _as_read()
    IdPolicy("keep").apply(sample)
    assert (sample.id, sample.images, sample.source, sample.tag_counts(), sample.image_placement) == \
        (4, ["a.jpg", "b.jpg"], "other", (2, 0), "prefix")
    assert list(sample.texts(("gpt",))) == ["Two."] and sample.as_record()["conversations"][1]["weight"] == 1
    assert sample.record_as_read("llava") is not None
    assert sample.record_as_read("sharegpt4v") is None


@pytest.mark.parametrize("source", ["llava_small.json", "llava_small.jsonl", "sharegpt4v_small.json",
                                    "dedup_demo.json"])
def test_llava_to_llava_writes_what_the_general_path_writes(tmp_path, source):
    """llava -> llava writes records as read; llava -> sharegpt4v (the same writer code, another
    format's name) builds every record from its fields: the files must be the same bytes."""
    suffix = ".jsonl" if source.endswith(".jsonl") else ".json"
    for writer in ("llava", "sharegpt4v"):
        run_curate("convert", "llava", writer, FIXTURES / source, "-o", tmp_path / f"{writer}{suffix}",
                   "--on-error", "skip", check=0)
    assert (tmp_path / f"llava{suffix}").read_bytes() == (tmp_path / f"sharegpt4v{suffix}").read_bytes()


@needs_shared
@pytest.mark.parametrize("source", ["llava_v1_5_mix665k.every500.json", "sharegpt4v_mix665k.every500.json",
                                    "blip_laion_cc_sbu_558k.every500.json"])
def test_real_records_come_out_as_the_general_path_writes_them(tmp_path, source):
    for writer in ("llava", "sharegpt4v"):
        run_curate("convert", "llava", writer, REAL / source, "-o", tmp_path / f"{writer}.json", check=0)
    assert (tmp_path / "llava.json").read_bytes() == (tmp_path / "sharegpt4v.json").read_bytes()


def test_ids_rewritten_by_the_policy_are_written_so(tmp_path):
    out = tmp_path / "out.json"
    run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", out, "--ids", "string",
               "--on-error", "skip", check=0)
    assert all(type(record["id"]) is str for record in json.loads(out.read_text()))


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_records_written_as_bytes_to_a_file_are_the_text_path_s(tmp_path, suffix):
    """write_records hands orjson's bytes to the file under a UTF-8 text stream (text written
    before and after stays in its place) and decodes them for any other stream."""
    from curate.records import write_records
    records = [{"id": k, "value": "é\u2028😀", "n": [1.5, None, 10**30]} for k in range(2500)]
    text = io.StringIO()
    text.write("before ")
    write_records(iter(records), text, tmp_path / f"a{suffix}")
    text.write(" after")
    with open(tmp_path / f"out{suffix}", "w", encoding="utf-8", newline="\n") as stream:
        stream.write("before ")
        assert write_records(iter(records), stream, tmp_path / f"a{suffix}") == 2500
        stream.write(" after")
    assert (tmp_path / f"out{suffix}").read_text(encoding="utf-8") == text.getvalue()
