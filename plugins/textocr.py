"""TextOCR-GPT4V captions (``{filename, caption, caption_image, caption_text, caption_condensed}``):
one detailed-description sample per image, the caption field and the instruction pool chosen
by options, the instruction drawn with ``--seed``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator


import curate
from curate.errors import RecordError
from curate.formats import Options, Reader, head_has_keys
from curate.jsonstream import iter_records
from curate.prompts import DETAIL_INSTRUCTIONS
from curate.records import unsafe_image_path
from curate.sample import Sample, Turn
from curate.settings import Setting

CAPTION_FIELDS = ("caption", "caption_image", "caption_text", "caption_condensed")
BRIEF_INSTRUCTIONS = (
    "Describe the image concisely.", "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.", "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.", "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.", "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.", "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
OCR_INSTRUCTIONS = (
    "Describe the image in detail, including all the text in it.",
    "Give a detailed description of the image and transcribe the text it contains.",
    "What does this image show? Describe it thoroughly and read out any text.",
)
POOLS = {"detail": DETAIL_INSTRUCTIONS, "brief": BRIEF_INSTRUCTIONS, "ocr": OCR_INSTRUCTIONS}


class TextOcrReader(Reader):
    name = "textocr-gpt4v"
    description = "TextOCR-GPT4V captions: one detailed-description sample per image"
    settings = (
        Setting("textocr_caption", default="caption", choices=tuple(CAPTION_FIELDS),
                help="textocr-gpt4v reader: which caption becomes the answer."),
        Setting("textocr_instructions", default="ocr", choices=tuple(POOLS),
                help="textocr-gpt4v reader: the instruction pool the question is drawn from (seeded)."),
    )

    def sniff(self, path: Path, head: str) -> int:
        return 20 if head_has_keys(head, "filename", "caption_condensed") else 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        path = Path(path)
        field = options.setting("textocr_caption")
        pool = POOLS[options.setting("textocr_instructions")]
        rng = options.state.setdefault("textocr_rng", random.Random(options.seed))
        for index, record in iter_records(path, options.progress):
            if isinstance(record, RecordError):
                options.reject(record, None)
                continue
            filename = record.get("filename") if isinstance(record, dict) else None
            caption = record.get(field) if isinstance(record, dict) else None
            problem = ("filename", "missing") if not isinstance(filename, str) or not filename else \
                ("filename", unsafe_image_path(filename)) if unsafe_image_path(filename) else \
                (field, "missing or not a non-empty string") if not isinstance(caption, str) or not caption.strip() \
                else None
            if problem:
                options.reject(RecordError(path, problem[1], index=index, record_id=filename, field=problem[0]), record)
                continue
            yield Sample(f"textocr_{Path(filename).stem}", filename,
                         [Turn("human", "<image>\n" + rng.choice(pool)), Turn("gpt", caption.strip())])


@curate.hookimpl
def register_readers(register):
    register(TextOcrReader)
