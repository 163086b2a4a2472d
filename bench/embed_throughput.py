"""Embedding pipeline: end-to-end images/s of curate's embedding stage (decode, resize,
model) as a ratio to the model's forward pass alone on pre-decoded tensors.

    python bench/embed_throughput.py --embedder timm-pool --images 512
    python bench/embed_throughput.py --embedder vit-cls --model vit_base_patch16_224 --random-weights
    python bench/embed_throughput.py --device cuda --batch-size 128 --workers 8 15 --processes \
        --device-decode --peak-tflops 989          # on an H100: also nvJPEG, and the share of bf16 peak

A ratio near 1 means decoding is hidden behind the model. The forward pass's FLOPs are counted
with torch's FlopCounterMode; with --peak-tflops the achieved share of that peak is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, median_time, print_table  # noqa: E402


def make_images(folder: Path, count: int, size=(640, 480)) -> list[Path]:
    """COCO-sized JPEG variants of the fixture photographs (made by threads: Pillow releases
    the GIL, and a GPU machine's bench needs thousands)."""
    sources = sorted((ROOT / "fixtures" / "images").rglob("*.jpg"))

    def make(i: int) -> Path:
        image = Image.open(sources[i % len(sources)]).convert("RGB").resize(size)
        image = image.rotate((i // len(sources)) % 360)
        if i % 2:
            image = ImageOps.mirror(image)
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=90)
        return path
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(make, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="timm-pool")
    parser.add_argument("--model", default=None)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--random-weights", action="store_true", help="save a randomly initialised model and load it")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", action="store_true", help="also measure forked decode processes")
    parser.add_argument("--device-decode", action="store_true",
                        help="also measure --decode device (JPEGs decoded by torchvision on the model's device)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s in the forward's precision (H100 SXM bf16 dense: 989)")
    parser.add_argument("--resize-slices", type=int, nargs="+", default=None,
                        help="with --device-decode: time the device resize of one decoded batch in slices of each "
                             "size (curate.preprocess.RESIZE_GROUP), and the pipeline at the most workers with each")
    args = parser.parse_args()

    import torch
    from curate.embedding import embed_files
    from curate.images import load_rgb
    from curate.registry import get_registry

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if args.random_weights:
            import timm
            torch.manual_seed(0)
            weights = str(tmp / "random.pth")
            torch.save(timm.create_model(args.model, pretrained=False).state_dict(), weights)
        model = get_registry().get("embedder", args.embedder).load(args.model, weights, args.device)
        paths = make_images(tmp, args.images)
        n = len(paths)

        # The model alone: the same number of images, pre-decoded, in batches of the same size.
        import numpy as np
        batch = np.stack([model.preprocess(load_rgb(p, model.short_side)) for p in paths[:args.batch_size]])
        model.embed(batch)  # warm-up

        def forward_only():
            for _ in range(0, n, args.batch_size):
                model.embed(batch)
        forward = n / median_time(forward_only, args.repeats)

        rows = [["forward only (pre-decoded)", "-", f"{forward:.1f}", "1.00"]]
        print(*rows[-1], sep=" | ", flush=True)
        modes = ["threads"] + (["processes"] if args.processes else []) + (["device"] if args.device_decode else [])
        for mode in modes:
            for workers in args.workers:
                seconds = median_time(lambda: embed_files(paths, model, batch_size=args.batch_size, workers=workers,
                                                          processes=mode == "processes", on_device=mode == "device"),
                                      args.repeats)
                rate = n / seconds
                rows.append([f"curate pipeline ({mode})", workers, f"{rate:.1f}", f"{rate / forward:.2f}"])
                print(*rows[-1], sep=" | ", flush=True)       # as measured: a run cut short keeps its rows
        if args.resize_slices and args.device_decode:
            rows += slice_rows(model, paths, args, forward)
        flops = forward_flops(model, torch)
    title = (f"{args.embedder} {model.model_name} on {model.device}, {n} images 640x480 JPEG, batch "
             f"{args.batch_size}, torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print_table(title, ["stage", "workers", "images/s", "ratio to forward"], rows)
    best = max(float(r[3]) for r in rows[1:])
    print(f"\nratio (best end-to-end / forward only): {best:.2f}")
    if flops is None:
        print(f"forward: FLOPs not counted ({model.runtime} runs the model, not torch)")
        return
    achieved = forward * flops / 1e12
    share = f", {achieved / args.peak_tflops:.0%} of the {args.peak_tflops:g} TFLOP/s peak" if args.peak_tflops else ""
    print(f"forward: {flops / 1e9:.2f} GFLOP per image, {achieved:.2f} TFLOP/s{share}")


def slice_rows(model, paths, args, forward) -> list[list]:
    """The device resize alone (one decoded batch, ms) and the whole pipeline at the most
    workers, for each slice size of ``RESIZE_GROUP``; the default is put back after."""
    import torch
    from curate import preprocess
    from curate.device_decode import decode_batch
    from curate.embedding import embed_files
    device_type = torch.device(model.device).type
    default = dict(preprocess.RESIZE_GROUP)
    images = decode_batch([p.read_bytes() for p in paths[:args.batch_size]], model.device)
    rows = []
    try:
        for size in args.resize_slices:
            preprocess.RESIZE_GROUP[device_type] = size

            def resize():
                preprocess.preprocess_decoded(images, model.size)
                if device_type == "cuda":
                    torch.cuda.synchronize()
            resize()                                                  # warm-up
            resize_ms = median_time(resize, max(args.repeats, 5)) * 1000
            workers = max(args.workers)
            seconds = median_time(lambda: embed_files(paths, model, batch_size=args.batch_size, workers=workers,
                                                      on_device=True), args.repeats)
            rate = len(paths) / seconds
            rows.append([f"device, resize slice {size} ({resize_ms:.1f} ms per batch of {len(images)})", workers,
                         f"{rate:.1f}", f"{rate / forward:.2f}"])
            print(*rows[-1], sep=" | ", flush=True)
    finally:
        preprocess.RESIZE_GROUP.clear()
        preprocess.RESIZE_GROUP.update(default)
    return rows


def forward_flops(model, torch) -> float | None:
    """FLOPs of one image's forward pass (torch's counter: matrix products and convolutions);
    None when torch does not run the model (ONNX Runtime on the CPU)."""
    if not hasattr(model, "owner"):
        return None
    from torch.utils.flop_counter import FlopCounterMode
    image = torch.zeros(1, 3, model.size, model.size, device=model.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.owner.features(model.model, image.contiguous(memory_format=torch.channels_last))
    return float(counter.get_total_flops())


if __name__ == "__main__":
    main()
