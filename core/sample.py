"""The one model every reader yields and every writer consumes."""

from __future__ import annotations

import re
from typing import Any

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"         # a video's place in the text, as a Sample holds it (see Sample)
ROLES = ("human", "gpt", "system")

# Path prefixes of the public image roots (LLaVA-1.5, ShareGPT4V; FORMATS.md), longest first.
_SOURCE_PREFIXES = (
    ("vg/VG_100K_2/", "VG_100K_2"),
    ("vg/VG_100K/", "VG_100K"),
    ("VG_100K_2/", "VG_100K_2"),
    ("VG_100K/", "VG_100K"),
    ("coco/", "coco"),
    ("gqa/", "gqa"),
    ("ocr_vqa/", "ocr_vqa"),
    ("textvqa/", "textvqa"),
    ("share_textvqa/", "share_textvqa"),
    ("sam/", "sam"),
    ("llava/llava_pretrain/", "llava_pretrain"),
    ("wikiart/", "wikiart"),
    ("web-celebrity/", "web-celebrity"),
    ("web-landmark/", "web-landmark"),
)
_PRETRAIN_SHARD = re.compile(r"^\d{5}/")          # 00453/004539375.jpg (LAION/CC/SBU 558K)
_CC3M = re.compile(r"^GCC_train_\d+\.")           # GCC_train_000000000.jpg (CC3M 595K)
_BARE_COCO = re.compile(r"^\d{12}\.jpg$")         # 000000033471.jpg (LLaVA-Instruct-150K)

TEXT_ONLY = "text-only"


def source_of(image: str | None) -> str:
    """The source dataset an image path belongs to (``coco``, ``gqa``, ``VG_100K``...)."""
    if not image:
        return TEXT_ONLY
    for prefix, name in _SOURCE_PREFIXES:
        if image.startswith(prefix):
            return name
    if _PRETRAIN_SHARD.match(image):
        return "laion_cc_sbu"
    if _CC3M.match(image):
        return "cc3m"
    if _BARE_COCO.match(image):
        return "coco"
    head, sep, _ = image.partition("/")
    return head if sep else "other"


class Turn:
    """One message of a conversation: a role (human, gpt, system) and its text.

    ``extra`` holds any other key the input turn had, so it survives a round trip.
    """

    __slots__ = ("role", "text", "extra")

    def __init__(self, role: str, text: str, extra: dict[str, Any] | None = None):
        self.role = role
        self.text = text
        self.extra = extra

    def __eq__(self, other):
        return (isinstance(other, Turn) and self.role == other.role
                and self.text == other.text and (self.extra or {}) == (other.extra or {}))

    def __repr__(self):
        return f"Turn({self.role!r}, {self.text[:40]!r}{', extra' if self.extra else ''})"


class Sample:
    """One training record.

    - ``id``: a string or an integer, kept exactly as given.
    - ``image``: a path relative to an image root, a list of them for multi-image
      records, or None for text-only records.
    - ``conversations``: a list of :class:`Turn`. Each image has its ``<image>`` in the text
      and each video its ``<video>`` (whatever tag the file format uses for it: LLaVA-Video
      writes ``<image>`` for a video, its reader and writer translate).
    - ``extra``: every key of the input record that the reader did not model.
    - ``video``: a video path (or a list of them), relative to the root like images, or None.
      Videos are carried, never decoded.
    """

    __slots__ = ("id", "image", "conversations", "extra", "video")

    def __init__(self, id, image=None, conversations=None, extra=None, video=None):
        self.id = id
        self.image = image
        self.conversations = conversations if conversations is not None else []
        self.extra = extra if extra is not None else {}
        self.video = video

    @property
    def images(self) -> list[str]:
        if self.image is None:
            return []
        return list(self.image) if isinstance(self.image, list) else [self.image]

    @property
    def videos(self) -> list[str]:
        if self.video is None:
            return []
        return list(self.video) if isinstance(self.video, list) else [self.video]

    def tag_counts(self, roles=None) -> tuple[int, int]:
        """How many ``<image>`` and ``<video>`` the text holds (in the turns of ``roles`` only)."""
        texts = [t.text for t in self.conversations if roles is None or t.role in roles]
        return sum(t.count(IMAGE_TOKEN) for t in texts), sum(t.count(VIDEO_TOKEN) for t in texts)

    @property
    def source(self) -> str:
        """Source dataset of the (first) image, or else video, derived from its path."""
        media = self.images or self.videos
        return source_of(media[0] if media else None)

    @property
    def image_placement(self) -> str:
        """Where ``<image>`` sits in the first turn that holds it: prefix, suffix, middle or none."""
        for turn in self.conversations:
            text = turn.text
            if IMAGE_TOKEN in text:
                stripped = text.strip()
                if stripped.startswith(IMAGE_TOKEN):
                    return "prefix"
                if stripped.endswith(IMAGE_TOKEN):
                    return "suffix"
                return "middle"
        return "none"

    def as_record(self) -> dict:
        """The sample as a LLaVA-shaped dict (for a rejects file, where the original record is
        no longer at hand)."""
        turns = [{"from": turn.role, "value": turn.text, **(turn.extra or {})} for turn in self.conversations]
        video = {"video": self.video} if self.video is not None else {}
        return {"id": self.id, "image": self.image, **video, "conversations": turns, **self.extra}

    def __eq__(self, other):
        return (isinstance(other, Sample) and self.id == other.id and type(self.id) is type(other.id)
                and self.image == other.image and self.conversations == other.conversations
                and self.extra == other.extra and self.video == other.video)

    def __repr__(self):
        video = f", video={self.video!r}" if self.video is not None else ""
        return f"Sample(id={self.id!r}, image={self.image!r}{video}, turns={len(self.conversations)})"


class Rejected:
    """A record that could not become a Sample (or be written); kept to be accounted for."""

    __slots__ = ("error", "raw")

    def __init__(self, error, raw=None):
        self.error = error
        self.raw = raw

    def as_json(self) -> dict:
        e = self.error
        out = {"file": e.path, "index": e.index, "id": e.record_id, "field": e.field,
               "reason": e.reason, "message": e.describe()}
        if self.raw is not None:
            out["record"] = self.raw
        return out
