import pytest

from curate import Sample, Turn, source_of


@pytest.mark.parametrize("path, source", [
    ("coco/train2017/000000033471.jpg", "coco"),
    ("gqa/images/2402899.jpg", "gqa"),
    ("ocr_vqa/images/0099745290.jpg", "ocr_vqa"),
    ("textvqa/train_images/0054c91397f2fe05.jpg", "textvqa"),
    ("vg/VG_100K/7.jpg", "VG_100K"),
    ("vg/VG_100K_2/12.jpg", "VG_100K_2"),
    ("sam/images/sa_1542.jpg", "sam"),
    ("llava/llava_pretrain/images/00453/004539375.jpg", "llava_pretrain"),
    ("share_textvqa/images/x.jpg", "share_textvqa"),
    ("00453/004539375.jpg", "laion_cc_sbu"),
    ("GCC_train_000000000.jpg", "cc3m"),
    ("000000033471.jpg", "coco"),
    ("mydata/a.png", "mydata"),
    (None, "text-only"),
])
def test_source_is_derived_from_the_image_path(path, source):
    assert source_of(path) == source


@pytest.mark.parametrize("text, placement", [
    ("<image>\nWhat is this?", "prefix"),
    ("What is this?\n<image>", "suffix"),
    ("Look at <image> please", "middle"),
    ("No image here", "none"),
])
def test_image_placement(text, placement):
    sample = Sample("x", "coco/a.jpg", [Turn("human", text), Turn("gpt", "ok")])
    assert sample.image_placement == placement


def test_ids_keep_their_type():
    assert Sample(1, None, []) != Sample("1", None, [])
    assert Sample(1, None, []) == Sample(1, None, [])


def test_multi_image_samples_list_every_image():
    sample = Sample("m", ["gqa/images/1.jpg", "coco/train2017/2.jpg"])
    assert sample.images == ["gqa/images/1.jpg", "coco/train2017/2.jpg"]
    assert sample.source == "gqa"
