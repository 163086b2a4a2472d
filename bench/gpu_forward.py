"""The forward pass alone in each precision curate can run on CUDA
(``curate.plugins.timm_embedders.CUDA_PRECISION``): images/s, TFLOP/s and share of the bf16
peak, and how far its vectors are from float32's (cosine per image, same pre-decoded images).

    python bench/gpu_forward.py --embedder vit-cls --model vit_large_patch14_clip_336.openai \\
        --random-weights --batch-sizes 64 128 --peak-tflops 989           # on the GPU machine

On a machine without CUDA it runs on the CPU in float32 only (checks the script itself).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, print_table  # noqa: E402
from embed_throughput import forward_flops, make_images  # noqa: E402

PRECISIONS = ("float32", "autocast", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedder", default="timm-pool")
    parser.add_argument("--model", default=None)
    parser.add_argument("--random-weights", action="store_true", help="save a randomly initialised model and load it")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, default=8, help="batches per timed pass")
    parser.add_argument("--images", type=int, default=256, help="images whose vectors are compared")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timed", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="the precisions timed (float32 always gives the reference vectors)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak (H100/H200: 989)")
    args = parser.parse_args()

    import torch
    from curate.images import load_rgb
    from curate.plugins import timm_embedders
    from curate.registry import get_registry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precisions = PRECISIONS if device == "cuda" else ("float32",)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = None
        if args.random_weights:
            import timm
            torch.manual_seed(0)
            weights = str(tmp / "random.pth")
            torch.save(timm.create_model(args.model, pretrained=False).state_dict(), weights)
        default = timm_embedders.CUDA_PRECISION
        for precision in precisions:
            timm_embedders.CUDA_PRECISION = precision
            try:
                model = get_registry().get("embedder", args.embedder).load(args.model, weights, device)
            finally:
                timm_embedders.CUDA_PRECISION = default
            if reference is None:
                paths = make_images(tmp, args.images)
                inputs = np.stack([model.preprocess(load_rgb(p, model.short_side)) for p in paths])
                flops = forward_flops(model, torch)
            vectors = np.concatenate([model.embed(inputs[i:i + 64]) for i in range(0, len(inputs), 64)])
            if reference is None:
                reference = vectors
            cosines = (vectors * reference).sum(axis=1)
            for batch_size in args.batch_sizes if precision in args.timed or device == "cpu" else ():
                batch = np.resize(inputs, (batch_size, *inputs.shape[1:]))
                model.embed(batch)                                   # warm-up

                def forward():
                    for _ in range(args.batches):
                        model.embed(batch)
                rate = args.batches * batch_size / median_time(forward, args.repeats)
                achieved = rate * flops / 1e12 if flops else None
                share = f"{achieved / args.peak_tflops:.0%}" if achieved and args.peak_tflops else "-"
                rows.append([precision, batch_size, f"{rate:.1f}", f"{achieved:.1f}" if achieved else "-", share,
                             f"{cosines.min():.5f}", f"{cosines.mean():.5f}"])
                print(*rows[-1], sep=" | ", flush=True)
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    print_table(f"{args.embedder} {args.model or 'default model'} forward on {device}, pre-decoded "
                f"{args.images} images for the cosines, median of {args.repeats}",
                ["precision", "batch", "images/s", "TFLOP/s", "of peak", "cosine to float32 min", "mean"], rows)


if __name__ == "__main__":
    main()
