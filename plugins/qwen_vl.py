"""Qwen-VL fine-tuning data (QwenLM's ``qwen-vl-finetune``, for Qwen2-VL, Qwen2.5-VL and
Qwen3-VL): LLaVA-shaped records with ``<image>``, grounding answers as JSON objects
``{"bbox_2d": [x1, y1, x2, y2], "label": "object"}`` after the object they locate.

The box numbers follow the model (QwenLM's ``qwen-vl-finetune/tools/process_bbox.ipynb``):

- Qwen2.5-VL: absolute pixels of the image *after* the processor's ``smart_resize`` (sides
  multiples of 28, pixel count within min/max pixels), rounded and clamped to the resized
  image. Set ``--qwen-min-pixels``/``--qwen-max-pixels`` to what training uses.
- Qwen2-VL and Qwen3-VL: integers in [0, 1000] of the original image.
"""

from __future__ import annotations

import click

import curate
from curate.boxes import QWEN25_RESIZE, BoxStyle
from curate.images import MAX_PIXELS as MAX_IMAGE_PIXELS
from curate.plugins.llava import LlavaWriter

MODELS = {"qwen2.5-vl": "smart-resize", "qwen2-vl": "qwen-1000", "qwen3-vl": "qwen-1000"}
DEFAULT_MODEL = "qwen2.5-vl"
FACTOR, MIN_PIXELS, MAX_PIXELS = QWEN25_RESIZE
# Bounds of the pixel limits. smart_resize makes every image at least one FACTOR x FACTOR block
# (sides are multiples of FACTOR, never 0), so a max_pixels below that cannot be honoured and
# would squeeze every box into a few pixels. Above the largest image curate opens, a max means
# no limit, and a min would blow every image up past anything curate reads.
LOWEST_MAX_PIXELS = FACTOR * FACTOR
HIGHEST_PIXELS = MAX_IMAGE_PIXELS


def pixel_limits(options) -> tuple[int, int]:
    """(min_pixels, max_pixels) from the options, checked (click checks each when it parses the
    command line; this checks them again for the Python API, and checks them against each other)."""
    low = options.option("qwen_min_pixels") or MIN_PIXELS
    high = options.option("qwen_max_pixels") or MAX_PIXELS
    for name, value, lowest in (("--qwen-min-pixels", low, 1), ("--qwen-max-pixels", high, LOWEST_MAX_PIXELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= HIGHEST_PIXELS:
            raise curate.CurateError(f"{name} must be a whole number from {lowest:,} to {HIGHEST_PIXELS:,}, "
                                     f"not {str(value)[:40]}")
    if low > high:
        raise curate.CurateError(f"--qwen-min-pixels ({low:,}) is above --qwen-max-pixels ({high:,})")
    return low, high


class QwenVLWriter(LlavaWriter):
    name = "qwen-vl"
    description = ("Qwen2-VL / Qwen2.5-VL / Qwen3-VL fine-tuning (qwen-vl-finetune): LLaVA-shaped, grounding as "
                   "JSON bbox_2d in the model's coordinates")
    box_style = BoxStyle(MODELS[DEFAULT_MODEL], "qwen-json")
    jsonl_note = None          # qwen-vl-finetune reads .json and .jsonl
    cli_options = [
        click.Option(["--qwen-model"], type=click.Choice(sorted(MODELS)), default=None,
                     help=f"qwen-vl writer: the model whose box coordinates to write (default {DEFAULT_MODEL}: "
                          "pixels after smart resize; qwen2-vl and qwen3-vl: [0, 1000] of the original image)."),
        click.Option(["--qwen-min-pixels"], type=click.IntRange(1, HIGHEST_PIXELS), default=None,
                     help=f"qwen-vl writer, qwen2.5-vl: the processor's min_pixels (default {MIN_PIXELS:,}, as "
                          f"QwenLM's process_bbox.ipynb; at most {HIGHEST_PIXELS:,}); use your training's value."),
        click.Option(["--qwen-max-pixels"], type=click.IntRange(LOWEST_MAX_PIXELS, HIGHEST_PIXELS), default=None,
                     help=f"qwen-vl writer, qwen2.5-vl: the processor's max_pixels (default {MAX_PIXELS:,}, as "
                          "QwenLM's process_bbox.ipynb; qwen-vl-finetune trains with 451,584 unless told; from "
                          f"{LOWEST_MAX_PIXELS:,}, one {FACTOR}x{FACTOR} block, to {HIGHEST_PIXELS:,})."),
    ]

    def box_style_for(self, options):
        model = options.option("qwen_model") or DEFAULT_MODEL
        if model not in MODELS:
            raise curate.CurateError(f"--qwen-model must be one of {', '.join(sorted(MODELS))}, not {model!r}")
        return BoxStyle(MODELS[model], "qwen-json", (FACTOR, *pixel_limits(options)))


@curate.hookimpl
def register_writers(register):
    register(QwenVLWriter)
