"""Decoding on the model's device and the exact index in torch: tested on the CPU (the same code
with device="cpu"), and on CUDA where a GPU is there (skipped otherwise)."""

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import FIXTURES, load_json, run_curate

pytestmark = pytest.mark.slow   # loads a model

torch = pytest.importorskip("torch")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU branch runs where one is lent")
IMAGES = FIXTURES / "images"


@pytest.fixture(scope="module")
def model():
    from curate.registry import get_registry
    return get_registry().get("embedder", "timm-pool").load(None, None, "cpu")


def _with_odd_files(tmp_path):
    paths = sorted(IMAGES.rglob("*.jpg"))
    png = tmp_path / "converted.png"                      # another format: the CPU path
    Image.open(paths[0]).save(png)
    named = tmp_path / "png_named.jpg"                    # a PNG named .jpg: the CPU path too
    Image.open(paths[1]).save(named, "PNG")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[2].read_bytes()[:300])
    return paths + [png, named, broken, tmp_path / "missing.jpg"]


def test_device_decoding_gives_the_cpu_path_vectors_within_resampling(model, tmp_path):
    from curate.embedding import embed_files
    paths = _with_odd_files(tmp_path)
    cpu = embed_files(paths, model, batch_size=4, workers=2)
    device = embed_files(paths, model, batch_size=4, workers=2, on_device=True)
    assert set(device.failures) == set(cpu.failures) == {len(paths) - 2, len(paths) - 1}
    assert device.failures[len(paths) - 1] == "missing file"
    cosine = (cpu.vectors * device.vectors).sum(axis=1)[cpu.ok]
    assert cosine.mean() > 0.99 and cosine.min() > 0.9       # Pillow's draft decode vs a full one
    others = [len(paths) - 4, len(paths) - 3]                 # decoded by Pillow on both paths
    assert np.allclose(cpu.vectors[others], device.vectors[others], atol=1e-5)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_tensors_as_pillow_turns_images(orientation, tmp_path):
    from curate.device_decode import decode_batch, read_for_device, upright
    pixels = np.random.default_rng(orientation).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=100, exif=exif.tobytes())
    data, read_orientation, reason = read_for_device(path)
    assert reason is None and read_orientation == orientation
    turned = upright(decode_batch([data], "cpu")[0], orientation).permute(1, 2, 0).numpy()
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert turned.shape == expected.shape
    assert np.abs(turned.astype(int) - expected.astype(int)).max() <= 2     # two JPEG decoders


ON_EACH_DEVICE = pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])


@ON_EACH_DEVICE
def test_borders_are_trimmed_on_the_device_as_on_the_cpu(device):
    from curate.preprocess import content_box, tensor_content_boxes
    rng = np.random.default_rng(0)
    letterboxed = np.zeros((90, 160, 3), np.uint8)               # bars above and below, and at the sides
    letterboxed[15:75, 10:150] = rng.integers(0, 255, (60, 140, 3))
    flat = np.full((20, 30, 3), 7, np.uint8)                      # nothing but border: kept whole
    thin = np.zeros((40, 40, 3), np.uint8)
    thin[10:14, 5:35] = rng.integers(0, 255, (4, 30, 3))          # under 8 rows of content: kept whole
    arrays = [letterboxed, flat, thin, rng.integers(0, 255, (33, 17, 3), dtype=np.uint8)]
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous().to(device) for a in arrays]
    assert tensor_content_boxes(tensors) == [content_box(Image.fromarray(a)) for a in arrays]
    assert tensor_content_boxes(tensors)[0] == (10, 15, 150, 75)


@ON_EACH_DEVICE
def test_borders_of_images_of_one_shape_are_found_together_as_alone(device):
    """Images of one shape are stacked for the border search; each keeps its own box, in
    input order, whatever shapes lie between them."""
    from curate.preprocess import content_box, tensor_content_boxes
    rng = np.random.default_rng(5)
    arrays = []
    for k in range(12):
        height, width = (48, 64) if k % 3 else (64, 48)
        image = np.full((height, width, 3), rng.integers(0, 255), np.uint8)
        top, left = rng.integers(0, 20), rng.integers(0, 20)
        bottom, right = top + rng.integers(1, height - top), left + rng.integers(1, width - left)
        image[top:bottom, left:right] = rng.integers(0, 255, (bottom - top, right - left, 3))
        arrays.append(image)
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous().to(device) for a in arrays]
    assert tensor_content_boxes(tensors) == [content_box(Image.fromarray(a)) for a in arrays]
    assert len(set(tensor_content_boxes(tensors))) > 6


def test_crops_of_one_size_are_resized_together_as_one_by_one(model, monkeypatch):
    """The grouped resize (one interpolate per crop size, in slices) gives each image exactly
    what resizing it alone gives, in input order."""
    from curate import preprocess
    monkeypatch.setattr(preprocess, "RESIZE_GROUP", {"cpu": 2})   # as on a GPU, in slices of 2
    rng = np.random.default_rng(3)
    shapes = [(48, 64), (64, 48), (48, 64), (30, 30), (48, 64), (64, 48)]
    images = [torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8)) for h, w in shapes]
    size = model.size
    alone = []
    for image in images:
        resized = torch.nn.functional.interpolate(image[None].float(), size=(size, size), mode="bicubic",
                                                  align_corners=False, antialias=True)
        alone.append(resized.round_().clamp_(0, 255).to(torch.uint8)[0])
    grouped = model.preprocess_decoded(images)
    assert grouped.shape == (len(images), 3, size, size) and grouped.dtype == torch.uint8
    assert torch.equal(grouped, torch.stack(alone))


def test_the_next_batch_decodes_on_its_own_thread_while_the_model_runs(model, monkeypatch):
    """The model's first batch waits until the second batch's decode has begun on another
    thread: done one after the other, as before, the wait would time out."""
    import threading
    from curate import embedding
    decode, embed = embedding.decode_on_device, model.embed
    decoding, threads = threading.Event(), []

    def decode_and_tell(read, *args):
        threads.append(threading.current_thread())
        if len(threads) == 2:
            decoding.set()
        return decode(read, *args)

    def embed_once_the_next_decodes(batch):
        if not decoding.is_set():
            assert decoding.wait(60), "the next batch did not decode while the model ran"
        return embed(batch)

    monkeypatch.setattr(embedding, "decode_on_device", decode_and_tell)
    monkeypatch.setattr(model, "embed", embed_once_the_next_decodes)
    paths = sorted(IMAGES.rglob("*.jpg"))[:12]
    result = embedding.embed_files(paths, model, batch_size=4, workers=2, on_device=True)
    assert result.ok.all() and len(threads) == 3
    assert threading.main_thread() not in threads


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_decoding_ahead_gives_each_image_its_own_vector_whatever_the_batches(device, tmp_path):
    """Batches of 3 (decoded ahead of the model, on another thread and, on CUDA, another
    stream) give the vectors and failures of one batch of all: no image gets another's
    pixels, none is read before its decode is done."""
    from curate.embedding import embed_files
    from curate.registry import get_registry
    on = get_registry().get("embedder", "timm-pool").load(None, None, device)
    paths = _with_odd_files(tmp_path)
    whole = embed_files(paths, on, batch_size=len(paths), workers=2, on_device=True)
    ahead = embed_files(paths, on, batch_size=3, workers=2, on_device=True)
    assert ahead.failures == whole.failures and len(whole.failures) == 2
    assert np.allclose(ahead.vectors[whole.ok], whole.vectors[whole.ok], atol=1e-5)
    assert (ahead.vectors[whole.ok] * whole.vectors[whole.ok]).sum(axis=1).min() > 0.9999


def test_a_decode_that_fails_ahead_stops_the_run_with_its_error(model, monkeypatch):
    """An error raised on the decode thread reaches the caller, in the batch's turn, and the
    thread is gone afterwards (nothing left waiting)."""
    import threading
    from curate import embedding
    from curate.errors import CurateError
    decode, calls = embedding.decode_on_device, []

    def fail_on_the_second(read, *args):
        calls.append(len(read))
        if len(calls) == 2:
            raise CurateError("img.jpg: cannot decode")
        return decode(read, *args)

    monkeypatch.setattr(embedding, "decode_on_device", fail_on_the_second)
    seen = []
    with pytest.raises(CurateError, match="img.jpg: cannot decode"):
        embedding.embed_files(sorted(IMAGES.rglob("*.jpg"))[:12], model, batch_size=4, workers=2,
                              on_device=True, progress=seen.append)
    assert seen == [4]                            # the first batch was embedded, the error came next
    assert not [t for t in threading.enumerate() if t.name.startswith("curate-device-decode")]


def test_dedup_decodes_on_the_device_from_the_cli_and_keeps_its_vectors_apart(tmp_path):
    demo, cache = FIXTURES / "dedup_demo.json", tmp_path / "cache"
    common = ("--image-root", IMAGES, "--embedder", "timm-pool", "--cache", cache, "--signals", "embedding",
              "--index", "exact", "-q")
    run_curate("dedup", demo, "-o", tmp_path / "device.json", "--decode", "device", *common, check=0)
    run_curate("dedup", demo, "-o", tmp_path / "cpu.json", "--decode", "threads", *common, check=0)
    def removed(name):
        lines = (tmp_path / f"{name}.json.report" / "removed.jsonl").read_text().splitlines()
        return {json.loads(line)["id"]: json.loads(line)["duplicate_of_id"] for line in lines}

    assert removed("device") == removed("cpu") and len(removed("cpu")) >= 3
    assert len(load_json(tmp_path / "device.json")) + len(removed("device")) == len(load_json(demo))
    assert len(list(cache.glob("timm-pool-*"))) == 2             # two cache keys: the vectors never mix
    result = run_curate("dedup", demo, "-o", tmp_path / "ray.json", "--decode", "device", "--engine", "ray",
                        *common, check=None)
    assert result.returncode != 0 and "--engine local" in result.stderr


def test_torch_exact_index_equals_the_numpy_one():
    from curate.plugins.indexes import ExactIndex, TorchExactIndex
    _compare(ExactIndex, lambda dim, capacity: TorchExactIndex(dim, capacity, "cpu"))


@needs_cuda
def test_torch_exact_index_on_cuda_equals_the_numpy_one():
    from curate.plugins.indexes import ExactIndex, TorchExactIndex
    _compare(ExactIndex, lambda dim, capacity: TorchExactIndex(dim, capacity, "cuda"))


@needs_cuda
def test_nvjpeg_decodes_what_libjpeg_decodes(tmp_path):
    from curate.device_decode import decode_batch, read_for_device
    paths = sorted(IMAGES.rglob("*.jpg"))
    datas = [read_for_device(path)[0] for path in paths]
    on_cpu, on_gpu = decode_batch(datas, "cpu"), decode_batch(datas, "cuda")
    for path, a, b in zip(paths, on_cpu, on_gpu):
        assert b.device.type == "cuda" and a.shape == b.shape, path.name
        assert (a.int() - b.cpu().int()).abs().float().mean() < 2, path.name


def _compare(numpy_index, torch_index):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((9000, 32)).astype(np.float32)
    vectors[4000:4100] = vectors[:100] + 0.05 * rng.standard_normal((100, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    a, b = numpy_index(32, 10), torch_index(32, 10)         # both grow past their capacity
    for index in (a, b):
        index.add(vectors[:5000])
        index.add(vectors[5000:])
    if hasattr(b, "QUERY_BLOCK"):
        b.QUERY_BLOCK, b.DATA_BLOCK = 700, 3000             # several blocks each way
    queries = vectors[:2000]
    (sims_a, ids_a), (sims_b, ids_b) = a.search(queries, 5), b.search(queries, 5)
    assert np.array_equal(ids_a, ids_b) and np.allclose(sims_a, sims_b, atol=1e-5)
    pairs_a, pairs_b = a.range_search(queries, 0.5), b.range_search(queries, 0.5)
    assert sorted(zip(*map(np.ndarray.tolist, pairs_a[:2]))) == sorted(zip(*map(np.ndarray.tolist, pairs_b[:2])))
    assert len(pairs_a[0]) > 2000 and len(b) == 9000


@needs_cuda
def test_device_decoding_on_cuda_gives_the_cpu_path_vectors_within_resampling(tmp_path):
    from curate.embedding import embed_files
    from curate.registry import get_registry
    model = get_registry().get("embedder", "timm-pool").load(None, None, "cuda")
    paths = _with_odd_files(tmp_path)
    cpu = embed_files(paths, model, batch_size=4, workers=2)
    device = embed_files(paths, model, batch_size=4, workers=2, on_device=True)
    assert set(device.failures) == set(cpu.failures)
    cosine = (cpu.vectors * device.vectors).sum(axis=1)[cpu.ok]
    assert cosine.mean() > 0.99 and cosine.min() > 0.9


@needs_cuda
@pytest.mark.parametrize("precision", ["autocast", "bfloat16"])
def test_each_cuda_precision_gives_float32s_vectors_and_its_own_cache_key(precision, monkeypatch):
    from curate.images import load_rgb
    from curate.plugins import timm_embedders
    from curate.registry import get_registry
    embedder = get_registry().get("embedder", "timm-pool")
    monkeypatch.setattr(timm_embedders, "CUDA_PRECISION", "float32")
    exact = embedder.load(None, None, "cuda")
    monkeypatch.setattr(timm_embedders, "CUDA_PRECISION", precision)
    model = embedder.load(None, None, "cuda")
    batch = np.stack([model.preprocess(load_rgb(p, model.short_side)) for p in sorted(IMAGES.rglob("*.jpg"))])
    cosine = (model.embed(batch) * exact.embed(batch)).sum(axis=1)
    assert cosine.min() > 0.99
    assert (model.weights_digest == exact.weights_digest) == (precision == "autocast")
