"""The dedup quality set: real photographs, near-duplicates made from them the way they occur
in instruction-tuning mixes, and distinct photos of similar subjects (hard negatives).

Every photo of ``../shared/data/images`` (and scikit-learn's two sample photos when it is
installed) is one *cluster*: the original plus one copy per edit below. Images are listed
originals first, so a correct dedup keeps every original and removes every copy. The two
motorcycle photos are a stereo pair: one cluster, the right image its near-duplicate.
Hard negatives are distinct photos of similar subjects: the textures (brick, grass,
gravel), the grey documents (page, text, camera), the dark sky pictures (moon, hubble),
and, from each large scene photo (not the textures), its left and right thirds as two photos
of their own.
Records are spread over three sources (coco, gqa, vg), and dedup runs with ``--scope global``.

    python bench/quality_set.py OUT_DIR      # writes OUT_DIR/images, data.json, truth.json
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("CURATE_SHARED", ROOT.parent / "shared")) / "data" / "images"
SOURCES = ("coco/train2017", "gqa/images", "vg/VG_100K")
LLAVA_PAD = (122, 116, 104)      # the colour LLaVA-1.5 pads images to a square with
STEREO = ("skimage_motorcycle_left", "skimage_motorcycle_right")
# Pictures of one texture or one star field: any two parts of them look alike, so their thirds
# would be duplicates of each other rather than distinct photos.
UNIFORM = ("skimage_brick", "skimage_grass", "skimage_gravel", "skimage_hubble_deep_field")


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _scale(image, factor):
    return image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))),
                        Image.Resampling.BICUBIC)


def _crop(image, keep, dx=0.5, dy=0.5):
    w, h = image.size
    cw, ch = round(w * keep), round(h * keep)
    left, top = round((w - cw) * dx), round((h - ch) * dy)
    return image.crop((left, top, left + cw, top + ch))


def _pad_square(image, colour=LLAVA_PAD):
    side = max(image.size)
    square = Image.new("RGB", (side, side), colour)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def _watermark(image):
    image = image.copy()
    draw = ImageDraw.Draw(image)
    size = max(10, image.width // 14)
    draw.text((image.width * 0.05, image.height * 0.82), "© stock-photos.example", fill=(255, 255, 255),
              font_size=size)
    return image


def _banner(image):
    band = max(24, image.height // 6)
    out = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((8, image.height + band // 4), "When your code works on the first try",
                             fill=(0, 0, 0), font_size=max(10, band // 2))
    return out


def _letterbox_thumbnail(image):
    frame_w, frame_h = 320, 180
    scale = min(frame_w / image.width, frame_h / image.height)
    small = _scale(image, scale)
    frame = Image.new("RGB", (frame_w, frame_h), (0, 0, 0))
    frame.paste(small, ((frame_w - small.width) // 2, (frame_h - small.height) // 2))
    return frame


def _screenshot(image):
    return _scale(image, 1.6).filter(ImageFilter.GaussianBlur(2))


def _jitter(image):
    image = ImageEnhance.Brightness(image).enhance(1.15)
    image = ImageEnhance.Contrast(image).enhance(0.85)
    return ImageEnhance.Color(image).enhance(1.3)


def _next_frame(image):
    """A consecutive video frame: the camera moved by 2% and the exposure changed a little."""
    return ImageEnhance.Brightness(_crop(image, 0.96, 0.1, 0.4)).enhance(1.04)


EDITS = {
    "jpeg q30": lambda im: _jpeg(im, 30),
    "downscale 50%": lambda im: _scale(im, 0.5),
    "downscale 25%": lambda im: _scale(im, 0.25),
    "crop 80%": lambda im: _crop(im, 0.8),
    "pad to square": _pad_square,
    "rotate 5°": lambda im: im.rotate(5, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)),
    "mirror": ImageOps.mirror,
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "colour jitter": _jitter,
    "watermark": _watermark,
    "caption banner": _banner,
    "letterboxed thumbnail": _letterbox_thumbnail,
    "upscaled blurred screenshot": _screenshot,
    "video frame": _next_frame,
}


def photos() -> dict[str, Image.Image]:
    found = {p.stem: Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))}
    try:
        from sklearn.datasets import load_sample_images
        sample = load_sample_images()
        for name, array in zip(sample.filenames, sample.images):
            found["sklearn_" + Path(name).stem] = Image.fromarray(array)
    except ImportError:
        pass
    return found


def build(out: Path, seed: int = 0) -> dict:
    """Write the set under ``out``; return the truth: per image, its cluster and edit."""
    rng = random.Random(seed)
    out = Path(out)
    originals, copies, truth = [], [], {}

    def add(listing, image, cluster, edit):
        source = SOURCES[len(truth) % len(SOURCES)]
        relative = f"{source}/{len(truth):06d}.jpg"
        (out / "images" / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(out / "images" / relative, quality=rng.choice([85, 90, 95]))
        truth[relative] = {"cluster": cluster, "edit": edit}
        listing.append(relative)

    pictures = photos()
    for name, image in pictures.items():
        if name == STEREO[1]:
            continue
        add(originals, image, name, "original")
        for edit, apply in EDITS.items():
            add(copies, apply(image), name, edit)
        if name == STEREO[0] and STEREO[1] in pictures:
            add(copies, pictures[STEREO[1]], name, "stereo pair")
        if min(image.size) >= 400 and image.width >= image.height and name not in UNIFORM:   # hard negatives
            third = image.width // 3
            add(originals, image.crop((0, 0, third, image.height)), f"{name} left third", "original")
            add(originals, image.crop((2 * third, 0, image.width, image.height)), f"{name} right third",
                "original")
    write_set(out, originals + copies, truth, "q")
    return truth


def write_set(out: Path, order: list[str], truth: dict, id_prefix: str) -> None:
    """A quality set's dataset (LLaVA records in ``order``: originals first) and its truth."""
    records = [{"id": f"{id_prefix}{i}", "image": relative, "conversations": [
        {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "A photo."}]}
        for i, relative in enumerate(order)]
    (out / "data.json").write_text(json.dumps(records))
    (out / "truth.json").write_text(json.dumps(truth, indent=0))


if __name__ == "__main__":
    truth = build(Path(sys.argv[1]))
    clusters = {t["cluster"] for t in truth.values()}
    print(f"{len(truth)} images, {len(clusters)} distinct photos, "
          f"{sum(t['edit'] != 'original' for t in truth.values())} near-duplicates")
