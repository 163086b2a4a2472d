"""ShareGPT4V: the LLaVA record shape with extra image roots (SAM, WikiArt, web photos)."""

from __future__ import annotations

import curate
from curate.plugins.llava import LlavaReader, LlavaWriter

SHAREGPT4V_ROOTS = ("sam/images/", "llava/llava_pretrain/", "wikiart/images/", "share_textvqa/images/",
                    "web-celebrity/images/", "web-landmark/images/")


class ShareGPT4VReader(LlavaReader):
    name = "sharegpt4v"
    description = "ShareGPT4V captions and mix (LLaVA records; SAM, WikiArt, web image roots)"
    image_roots = SHAREGPT4V_ROOTS

    def sniff(self, path, head: str) -> int:
        score = super().sniff(path, head)
        return score + 1 if score > 10 else 0   # only when one of its own roots shows up


class ShareGPT4VWriter(LlavaWriter):
    name = "sharegpt4v"
    description = "ShareGPT4V (LLaVA records; .json array or .jsonl lines)"


@curate.hookimpl
def register_readers(register):
    register(ShareGPT4VReader)


@curate.hookimpl
def register_writers(register):
    register(ShareGPT4VWriter)
