"""Issue #21: dedup that can read. Candidate pairs are verified before an image goes: text-rich
images that share a template but differ in a number, a word or a bar are kept; their
near-duplicates (re-encoded, downscaled, padded, cropped, with a banner) still go."""

import io
import json
import types

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import curate
from conftest import assert_one_line_error, load_json, run_curate
from curate.registry import get_registry
from curate.similarity import Channel, walk
from curate.plugins.verifiers import single_threaded_opencv
from curate.verification import PairVerifier

TURNS = [{"from": "human", "value": "<image>\nWhat does it say?"}, {"from": "gpt", "value": "Numbers."}]


def font(size):
    return ImageFont.load_default(size=size)


def table(values, title="Students by faculty, 2019"):
    """A table of one template: the title and grid are the same, the numbers are ``values``."""
    image = Image.new("RGB", (720, 420), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 14), title, fill=(20, 20, 20), font=font(22))
    draw.rectangle((20, 52, 700, 88), fill=(40, 56, 80))
    for c, year in enumerate(range(2019, 2024)):
        draw.text((200 + c * 100, 58), str(year), fill="white", font=font(18))
    for r, name in enumerate(["Arts", "Business", "Law", "Medicine", "Music", "Science", "Nursing", "Total"]):
        y = 96 + r * 38
        if r % 2:
            draw.rectangle((20, y - 4, 700, y + 30), fill=(238, 242, 246))
        draw.text((30, y), name, fill=(20, 20, 20), font=font(18))
        for c in range(5):
            draw.text((200 + c * 100, y), f"{values[r * 5 + c]:,}", fill=(20, 20, 20), font=font(18))
    return image


def chart(heights):
    """A bar chart of one style: only the bars' heights differ."""
    image = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(image)
    draw.text((200, 12), "Revenue by region", fill="black", font=font(24))
    draw.line((60, 420, 600, 420), fill="black", width=2)
    draw.line((60, 60, 60, 420), fill="black", width=2)
    for i, height in enumerate(heights):
        draw.rectangle((90 + i * 100, 420 - height, 150 + i * 100, 420), fill=(31, 119, 180))
        draw.text((95 + i * 100, 430), f"R{i + 1}", fill="black", font=font(16))
    return image


def jpeg(image, quality=60):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def half(image):
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)


def pad(image):
    side = max(image.size)
    square = Image.new("RGB", (side, side), (122, 116, 104))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def crop(image):
    w, h = image.size
    return image.crop((round(w * 0.03), round(h * 0.02), round(w * 0.97), round(h * 0.96)))


def banner(image):
    out = Image.new("RGB", (image.width, image.height + image.height // 6), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((10, image.height + 10), "source: annual report", fill="black", font=font(20))
    return out


EDITS = {"jpeg": jpeg, "downscale": half, "pad": pad, "crop": crop, "banner": banner}
BASE = [1000 + 37 * i for i in range(40)]


def with_one_number_changed():
    values = list(BASE)
    values[17] += 3                        # 1,629 -> 1,632: one digit of one cell
    return values


@pytest.fixture(scope="module")
def verifier():
    return get_registry().get("verifier", "content")


def verdict(verifier, tmp_path, a, b):
    paths = []
    for name, image in (("a.png", a), ("b.png", b)):
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    return verifier.compare(*(verifier.prepare(p) for p in paths))


@pytest.mark.parametrize("edit", EDITS)
def test_a_near_duplicate_is_the_same_picture(verifier, tmp_path, edit):
    original = table(BASE)
    result = verdict(verifier, tmp_path, original, EDITS[edit](original))
    assert result.same, result
    if edit != "banner":           # a chart of flat bars holds too few corners to find a strip by
        bars = chart([200, 120, 260, 90, 180])
        assert verdict(verifier, tmp_path, bars, EDITS[edit](bars)).same


@pytest.mark.parametrize("edit", [None, "jpeg", "crop", "banner"])
def test_one_digit_or_one_bar_makes_another_picture(verifier, tmp_path, edit):
    change = EDITS[edit] if edit else (lambda image: image)
    assert not verdict(verifier, tmp_path, table(BASE), change(table(with_one_number_changed()))).same
    assert not verdict(verifier, tmp_path, chart([200, 120, 260, 90, 180]), change(chart([200, 120, 230, 90, 180]))).same


def test_flat_images_of_other_colours_are_neither_verified_nor_hashed_alike(verifier, tmp_path):
    red, green = Image.new("RGB", (200, 200), (200, 30, 30)), Image.new("RGB", (200, 200), (30, 180, 30))
    assert not verdict(verifier, tmp_path, red, green).same
    phash = get_registry().get("signal", "phash")
    hashes = [phash.fingerprint(image, None) for image in (red, green, red.copy())]
    assert float(hashes[0] @ hashes[1]) < phash.similarity(10)          # no longer the same hash
    assert float(hashes[0] @ hashes[2]) == pytest.approx(1.0)           # the same flat image still is
    photo = Image.open(curate_fixture("coco/train2017/000000000001.jpg")).convert("RGB")
    assert float(phash.fingerprint(photo, None) @ phash.fingerprint(jpeg(photo, 40), None)) >= phash.similarity(10)


def curate_fixture(relative):
    from conftest import FIXTURES
    return FIXTURES / "images" / relative


class Always(curate.Verifier):
    name = "always"
    version = "1"

    def __init__(self, same):
        self.same, self.calls = same, []

    def prepare(self, path):
        return path

    def compare(self, kept, candidate):
        self.calls.append((kept, candidate))
        return curate.Verdict(self.same, 0.5, "test")


def test_the_walk_removes_only_what_the_verifier_confirms_and_exact_needs_none():
    from curate.plugins.indexes import Exact
    vectors = np.tile(np.eye(1, 8, dtype=np.float32), (4, 1))        # four images alike in every signal
    kind = Exact()
    refused = walk([Channel("embedding", vectors, 0.8, kind)], verify=lambda kept, candidate: curate.Verdict(False, 9, "no"))
    assert (refused.duplicate_of == -1).all() and len(refused.refused) == 3
    assert all(verdict.detail == "no" for *_, verdict in refused.refused)
    confirmed = walk([Channel("embedding", vectors, 0.8, kind)], verify=lambda kept, candidate: curate.Verdict(True, 1, ""))
    assert confirmed.duplicate_of.tolist() == [-1, 0, 0, 0] and set(confirmed.verdicts) == {1, 2, 3}
    exact = walk([Channel("exact", vectors, 0.99, kind, verified=False), Channel("embedding", vectors, 0.8, kind)],
                 verify=lambda kept, candidate: pytest.fail("exact matches need no verification"))
    assert exact.duplicate_of.tolist() == [-1, 0, 0, 0] and exact.signal.tolist() == [-1, 0, 0, 0]
    unverified = walk([Channel("embedding", vectors, 0.8, kind)])
    assert unverified.duplicate_of.tolist() == [-1, 0, 0, 0]


def test_each_image_is_prepared_once_and_failures_keep_the_pair(tmp_path):
    Image.new("RGB", (64, 64), "white").save(tmp_path / "a.png")
    counting = Always(True)
    prepared = []
    counting.prepare = lambda path: prepared.append(path) or path
    pairs = PairVerifier(counting, ["a.png", "a.png", "missing.png"], tmp_path)
    assert pairs(0, 1).same and pairs(0, 1).same and len(counting.calls) == 1 and len(prepared) == 2
    unreadable = PairVerifier(get_registry().get("verifier", "content"), ["a.png", "missing.png"], tmp_path)(0, 1)
    assert not unreadable.same and "cannot verify" in unreadable.detail


@pytest.fixture
def text_rich(tmp_path):
    """Three distinct tables of one template (two differ in one digit) and a chart pair that
    differs in one bar, each distinct image listed first, then near-duplicates of them."""
    root = tmp_path / "img"
    (root / "tables").mkdir(parents=True)
    distinct = {"t0": table(BASE), "t1": table(with_one_number_changed()), "t2": table(BASE[::-1]),
                "c0": chart([200, 120, 260, 90, 180]), "c1": chart([200, 120, 230, 90, 180])}
    copies = {"t0_jpeg": jpeg(distinct["t0"]), "t1_pad": pad(distinct["t1"]), "t2_banner": banner(distinct["t2"]),
              "c0_half": half(distinct["c0"]), "c1_crop": crop(distinct["c1"])}
    records = []
    for name, image in {**distinct, **copies}.items():
        image.save(root / "tables" / f"{name}.png")
        records.append({"id": name, "image": f"tables/{name}.png", "conversations": TURNS})
    data = tmp_path / "in.json"
    data.write_text(json.dumps(records))
    return data, root


@pytest.mark.slow
def test_dedup_keeps_every_distinct_text_rich_image_and_says_what_verified(tmp_path, text_rich):
    data, root = text_rich
    out = tmp_path / "out.json"
    result = run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache",
                        "--workers", "2", check=0)
    kept = {r["id"] for r in load_json(out)}
    assert {"t0", "t1", "t2", "c0", "c1"} <= kept
    removed = {r["id"]: r for r in load_json(out.parent / "out.json.report" / "removed.jsonl")}
    assert set(removed) == {"t0_jpeg", "t1_pad", "t2_banner", "c0_half", "c1_crop"}
    for name, row in removed.items():
        assert row["duplicate_of_id"] == name.split("_")[0]
        assert row["verified_by"] == "content" and isinstance(row["verify_score"], float)
    report = load_json(out.parent / "out.json.report" / "report.json")
    assert report["settings"]["verify"] == "content" and "verified near-duplicates" in report["settings"]["intent"]
    looked = report["thresholds"][0]["looked_alike_kept"]
    assert {p["id"] for p in looked} >= {"t1", "c1"}
    assert all(p["why_kept"].startswith("different content") and p["verified_by"] == "content" for p in looked)
    html = (out.parent / "out.json.report" / "report.html").read_text()
    assert "Looked alike, kept: different content" in html and "verified near-duplicates" in html
    assert "looked alike but were kept" in result.stderr

    one_thread = tmp_path / "one.json"                              # the verifier on threads decides the same
    run_curate("dedup", data, "-o", one_thread, "--image-root", root, "--embedder", "timm-pool", "--no-cache",
               "--workers", "1", "-q", check=0)
    for name in ("removed.jsonl", "decisions.jsonl"):
        assert (one_thread.parent / "one.json.report" / name).read_bytes() == \
            (out.parent / "out.json.report" / name).read_bytes()

    thinned = tmp_path / "thinned.json"
    result = run_curate("dedup", data, "-o", thinned, "--image-root", root, "--embedder", "timm-pool", "--no-cache",
                        "--verify", "none", check=0)
    assert len(load_json(thinned)) < len(kept)                      # similarity alone removes distinct tables
    assert "thinning by similarity" in result.stderr
    assert "verified_by" not in load_json(thinned.parent / "thinned.json.report" / "removed.jsonl")[0]


class Broken(curate.Verifier):
    name = "broken"

    def prepare(self, path):
        return path

    def compare(self, kept, candidate):
        raise ZeroDivisionError("oops")


@pytest.mark.slow
def test_a_third_party_verifier_plugs_in_and_its_failure_is_named(registry_with, tmp_path, text_rich):
    data, root = text_rich
    plugin = types.SimpleNamespace(register_verifiers=curate.hookimpl(
        lambda register: (register(Always(True)), register(Broken()))))
    registry_with(plugin)
    assert "verifier always" in run_curate("plugins", check=0).stdout.replace("\n", " ")
    out = tmp_path / "o.json"
    run_curate("dedup", data, "-o", out, "--image-root", root, "--embedder", "timm-pool", "--no-cache", "-q",
               "--verify", "always", check=0)
    assert len(load_json(out)) < 5                                 # it confirms everything it is asked
    broken = run_curate("dedup", data, "-o", tmp_path / "b.json", "--image-root", root, "--embedder", "timm-pool",
                        "--no-cache", "-q", "--verify", "broken")
    assert_one_line_error(broken, "verifier 'broken' failed", "ZeroDivisionError")
    assert not (tmp_path / "b.json").exists()
    unknown = run_curate("dedup", data, "-o", tmp_path / "u.json", "--image-root", root, "--embedder", "timm-pool",
                         "--no-cache", "-q", "--verify", "nonesuch")
    assert_one_line_error(unknown, "unknown verifier 'nonesuch'")


def photo():
    return Image.open(curate_fixture("coco/train2017/000000000001.jpg")).convert("RGB")


def photo_with_smooth_sky():
    """A photo whose large smooth areas a tone mapping skewed by the mark's white would misplace."""
    return Image.open(curate_fixture("coco/train2017/000000000005.jpg")).convert("RGB")


def lettered(image, text, at, size):
    """``image`` with white ``text`` laid on it at ``at`` (fractions of its size)."""
    image = image.copy()
    ImageDraw.Draw(image).text((image.width * at[0], image.height * at[1]), text, fill="white", font=font(size))
    return image


def plated(image, text, fill):
    """``image`` with a sign plate of ``fill`` colour carrying ``text`` at its top left."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 20, 200, 70), fill=fill, outline="black", width=2)
    draw.text((32, 30), text, fill="black", font=font(26))
    return image


def test_a_watermark_is_the_same_picture_but_other_words_on_the_photo_are_not(verifier, tmp_path):
    original = photo()
    brightened = original.point(lambda v: min(255, v + 70))     # the mark crosses light parts too
    for image in (original, brightened, photo_with_smooth_sky()):
        marked = lettered(image, "© stock-photos.example", (0.05, 0.82), image.width // 14)
        assert verdict(verifier, tmp_path, image, jpeg(marked, 90)).same
    # Each image has words the other lacks: two captioned photos, not one watermarked.
    shop = lettered(original, "Cafe Lumen", (0.1, 0.1), 30)
    hours = lettered(original, "Open 7am - 4pm", (0.45, 0.8), 28)
    assert not verdict(verifier, tmp_path, shop, hours).same
    # One plate, other words and another colour: the plate hides what lay beneath it.
    assert not verdict(verifier, tmp_path, plated(original, "BAY 7", (250, 204, 21)),
                       plated(original, "STAFF ONLY", (245, 245, 245))).same


def test_padding_is_trimmed_but_a_plain_grainy_edge_is_content():
    """Trimming a flat, grainy background (a microscope's, a studio's) in one image and not in
    its crop would misalign the pair: only padding, uniform but for JPEG's noise, is trimmed."""
    from curate.plugins.verifiers import trim_uniform_borders
    content = np.asarray(photo().convert("L").resize((300, 200)))
    grainy = np.clip(np.random.default_rng(0).normal(100, 3, (400, 600)), 0, 255).astype(np.uint8)
    grainy[100:300, 150:450] = content
    assert trim_uniform_borders(grainy).shape == grainy.shape
    padded = np.asarray(jpeg(pad(Image.fromarray(content).convert("RGB")), 75).convert("L"))
    assert trim_uniform_borders(padded).shape[0] <= 210          # 300 high, 200 of them the photo


def test_preparing_an_image_leaves_opencv_on_one_thread(verifier, tmp_path):
    """OpenCV's worker pool costs more CPU than it saves on the verifier's small images."""
    import cv2
    cv2.setNumThreads(2)
    single_threaded_opencv.cache_clear()
    Image.new("RGB", (64, 48), "white").save(tmp_path / "a.png")
    verifier.prepare(tmp_path / "a.png")
    assert cv2.getNumThreads() == 1


def test_an_overlay_is_judged_the_same_on_its_region_as_on_the_whole_image():
    """The overlay analysis reads only a region's area (its box and a margin): the answer must be
    the one the whole image gives, for words laid at the edges, a corner and the middle, either
    way round, and the regions must hold every differing pixel."""
    import cv2
    from curate.plugins import verifiers

    for seed in range(3):
        rng = np.random.default_rng(seed)
        photo = cv2.GaussianBlur(rng.integers(0, 256, (300, 400)).astype(np.uint8), (0, 0), 3)
        photo = cv2.normalize(photo, None, 40, 200, cv2.NORM_MINMAX)
        marked = photo.copy()
        for x, y in ((2, 150), (180, 2), (300, 285), (120, 140)):
            cv2.putText(marked, "curate", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 2)
        differing = cv2.absdiff(photo, marked) > verifiers.PIXEL_DIFFERENCE
        regions = verifiers._regions(differing)
        assembled = np.zeros_like(differing)
        for region in regions:
            assembled[region.area] |= region.pixels
        assert len(regions) == 4 and (assembled == differing).all()
        answers = []
        for over, under in ((marked, photo), (photo, marked)):
            for region in regions:
                whole = np.zeros_like(differing)
                whole[region.area] = region.pixels
                answer = verifiers._overlay(over[region.area], under[region.area], region.pixels)
                assert answer == verifiers._overlay(over, under, whole)
                answers.append(answer)
        assert answers == [True] * 4 + [False] * 4      # white words on the photo; not the photo on them
