"""Qwen-VL fine-tuning data (QwenLM's ``qwen-vl-finetune``, for Qwen2-VL, Qwen2.5-VL and
Qwen3-VL): LLaVA-shaped records with ``<image>``, grounding answers as JSON objects
``{"bbox_2d": [x1, y1, x2, y2], "label": "object"}`` after the object they locate.

The box numbers follow the model (QwenLM's ``qwen-vl-finetune/tools/process_bbox.ipynb``):

- Qwen2.5-VL: absolute pixels of the image *after* the processor's ``smart_resize`` (sides
  multiples of 28, pixel count within min/max pixels), rounded and clamped to the resized
  image. The pixel limits default to what qwen-vl-finetune trains with (its ``DataArguments``:
  min_pixels 12,544, max_pixels 451,584); set ``--qwen-min-pixels``/``--qwen-max-pixels`` to
  your training's when it overrides them.
- Qwen2-VL and Qwen3-VL: integers in [0, 1000] of the original image.
"""

from __future__ import annotations


import curate
from curate.boxes import QWEN_FINETUNE_RESIZE, BoxStyle
from curate.images import MAX_PIXELS as MAX_IMAGE_PIXELS
from curate.media import QWEN_VL_FINETUNE
from curate.plugins.llava import LlavaWriter
from curate.settings import Setting
from curate.errors import setting

MODELS = {"qwen2.5-vl": "smart-resize", "qwen2-vl": "qwen-1000", "qwen3-vl": "qwen-1000"}
DEFAULT_MODEL = "qwen2.5-vl"
FACTOR, MIN_PIXELS, MAX_PIXELS = QWEN_FINETUNE_RESIZE
# Bounds of the pixel limits. smart_resize makes every image at least one FACTOR x FACTOR block
# (sides are multiples of FACTOR, never 0), so a max_pixels below that cannot be honoured and
# would squeeze every box into a few pixels. Above the largest image curate opens, a max means
# no limit, and a min would blow every image up past anything curate reads.
LOWEST_MAX_PIXELS = FACTOR * FACTOR
HIGHEST_PIXELS = MAX_IMAGE_PIXELS


def pixel_limits(options) -> tuple[int, int]:
    """(min_pixels, max_pixels), each checked by its setting's bounds, checked against each other."""
    low, high = options.setting("qwen_min_pixels"), options.setting("qwen_max_pixels")
    if low > high:
        raise curate.CurateError(f"{setting('qwen_min_pixels')} ({low:,}) is above {setting('qwen_max_pixels')} "
                                 f"({high:,})")
    return low, high


class QwenVLWriter(LlavaWriter):
    name = "qwen-vl"
    description = ("Qwen2-VL / Qwen2.5-VL / Qwen3-VL fine-tuning (qwen-vl-finetune): LLaVA-shaped, grounding as "
                   "JSON bbox_2d in the model's coordinates")
    box_style = BoxStyle(MODELS[DEFAULT_MODEL], "qwen-json")
    jsonl_note = None          # qwen-vl-finetune reads .json and .jsonl
    media_rule = QWEN_VL_FINETUNE    # "image" and "video", each a path or a list
    settings = (
        Setting("qwen_model", default=DEFAULT_MODEL, choices=tuple(sorted(MODELS)),
                help="qwen-vl writer: the model whose box coordinates to write (qwen2.5-vl: pixels after smart "
                     "resize; qwen2-vl and qwen3-vl: [0, 1000] of the original image)."),
        Setting("qwen_min_pixels", int, MIN_PIXELS, minimum=1, maximum=HIGHEST_PIXELS,
                help="qwen-vl writer, qwen2.5-vl: the processor's min_pixels (default: qwen-vl-finetune's "
                     "--min_pixels default, 28*28*16); use your training's value."),
        Setting("qwen_max_pixels", int, MAX_PIXELS, minimum=LOWEST_MAX_PIXELS, maximum=HIGHEST_PIXELS,
                help="qwen-vl writer, qwen2.5-vl: the processor's max_pixels (default: qwen-vl-finetune's "
                     f"--max_pixels default, 28*28*576); use your training's value (at least one {FACTOR}x{FACTOR} "
                     "block)."),
    )

    def box_style_for(self, options):
        model = options.setting("qwen_model")
        return BoxStyle(MODELS[model], "qwen-json", (FACTOR, *pixel_limits(options)))


@curate.hookimpl
def register_writers(register):
    register(QwenVLWriter)
