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
from curate.plugins.llava import LlavaWriter

MODELS = {"qwen2.5-vl": "smart-resize", "qwen2-vl": "qwen-1000", "qwen3-vl": "qwen-1000"}
DEFAULT_MODEL = "qwen2.5-vl"
FACTOR, MIN_PIXELS, MAX_PIXELS = QWEN25_RESIZE


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
        click.Option(["--qwen-min-pixels"], type=click.IntRange(1), default=None,
                     help=f"qwen-vl writer, qwen2.5-vl: the processor's min_pixels (default {MIN_PIXELS:,}, as "
                          "QwenLM's process_bbox.ipynb); use your training's value."),
        click.Option(["--qwen-max-pixels"], type=click.IntRange(1), default=None,
                     help=f"qwen-vl writer, qwen2.5-vl: the processor's max_pixels (default {MAX_PIXELS:,}, as "
                          "QwenLM's process_bbox.ipynb; qwen-vl-finetune trains with 451,584 unless told)."),
    ]

    def box_style_for(self, options):
        model = options.option("qwen_model") or DEFAULT_MODEL
        if model not in MODELS:
            raise curate.CurateError(f"--qwen-model must be one of {', '.join(sorted(MODELS))}, not {model!r}")
        resize = (FACTOR, int(options.option("qwen_min_pixels") or MIN_PIXELS),
                  int(options.option("qwen_max_pixels") or MAX_PIXELS))
        if resize[1] > resize[2]:
            raise curate.CurateError(f"--qwen-min-pixels ({resize[1]:,}) is above --qwen-max-pixels ({resize[2]:,})")
        return BoxStyle(MODELS[model], "qwen-json", resize)


@curate.hookimpl
def register_writers(register):
    register(QwenVLWriter)
