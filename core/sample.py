"""The one model every reader yields and every writer consumes."""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Any, Iterator, Protocol

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


class RecordShape(Protocol):
    """How a format's records hold what a :class:`Sample` models, for the samples its reader
    builds with :meth:`Sample.as_read`: one object per reader, shared by all its samples."""

    name: str       # the format (its reader's and writer's name)

    def turns(self, record: dict) -> list[Turn]:
        """The record's turns as :class:`Turn` objects."""

    def extra(self, record: dict) -> dict:
        """The record's keys that a Sample does not model."""

    def texts(self, record: dict, roles=None) -> Iterator[str]:
        """The text of each turn (of ``roles`` only, when given), as the record holds it."""


def _field(slot: str, doc: str) -> property:
    """A field of :class:`Sample` read as a plain attribute; setting it changes the sample, which
    then forgets the record it was read from."""
    def set_field(sample, value):
        sample._forget_record()
        setattr(sample, slot, value)
    return property(attrgetter(slot), set_field, doc=doc)


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

    A reader may build a sample with :meth:`as_read` from a record its writer would write
    exactly as it is: the sample then carries the record, builds its turns and ``extra`` only
    when they are asked for, and a writer of the same format writes the record as read
    (:meth:`record_as_read`) instead of a dict built from the fields. Unchanged is kept by
    construction: setting any field, or taking ``conversations`` or ``extra`` (whose objects
    the taker may change in place), makes the sample forget the record for good. Reading
    ``id``, ``image``, ``video`` or :meth:`texts` keeps it (an image list is the record's own
    list, so a change made in it is in the record too).
    """

    __slots__ = ("_id", "_image", "_conversations", "_extra", "_video", "_record", "_shape", "_tags")

    def __init__(self, id, image=None, conversations=None, extra=None, video=None):
        self._id = id
        self._image = image
        self._conversations = conversations if conversations is not None else []
        self._extra = extra if extra is not None else {}
        self._video = video
        self._record = self._shape = self._tags = None

    @classmethod
    def as_read(cls, record: dict, shape: RecordShape, id, image, tags: tuple[int, int]) -> "Sample":
        """A sample that is ``record`` as read by ``shape``'s reader, which has checked it, found
        its ``id`` and ``image`` (the record's own values), counted its ``<image>`` and ``<video>``
        tags (``tags``, :meth:`tag_counts` while the record is kept) and knows that its format's
        writer writes the record's keys in their order (so no ``video``: see the class's docstring)."""
        sample = cls.__new__(cls)
        sample._id, sample._image, sample._video = id, image, None
        sample._conversations = sample._extra = None        # in the record until asked for
        sample._record, sample._shape, sample._tags = record, shape, tags
        return sample

    id = _field("_id", "A string or an integer (a number or None after some readers and ``--ids``).")
    image = _field("_image", "A path, a list of paths, or None.")
    video = _field("_video", "A video path, a list of them, or None.")

    @property
    def conversations(self) -> list[Turn]:
        self._forget_record()           # the caller may change the turns in place
        return self._conversations

    @conversations.setter
    def conversations(self, turns: list[Turn]):
        self._forget_record()
        self._conversations = turns

    @property
    def extra(self) -> dict:
        self._forget_record()           # the caller may change the dict in place
        return self._extra

    @extra.setter
    def extra(self, extra: dict):
        self._forget_record()
        self._extra = extra

    def record_as_read(self, format_name: str) -> dict | None:
        """The record this sample was read from, when its reader was ``format_name``'s and the
        sample is unchanged since; else None (write it from its fields)."""
        shape = self._shape
        return self._record if shape is not None and shape.name == format_name else None

    def copy(self) -> "Sample":
        """A sample of its own: its turns, ``extra`` and media lists are copies, so that what
        changes the copy (ids, image paths, boxes rewritten in the turns) leaves this one as it
        is. This sample keeps its record; the copy is built from the fields."""
        def own(value):
            return list(value) if isinstance(value, list) else value
        turns = [Turn(t.role, t.text, dict(t.extra) if t.extra else t.extra) for t in self._turns()]
        return Sample(self._id, own(self._image), turns, dict(self._extras()), own(self._video))

    def _forget_record(self) -> None:
        """Build what was left in the record, then drop it: the sample may change from now on."""
        if self._record is not None:
            if self._conversations is None:
                self._conversations = self._shape.turns(self._record)
                self._extra = self._shape.extra(self._record)
            self._record = self._shape = None

    def _turns(self) -> list[Turn]:
        """The turns, to read only (built afresh, not kept, while the sample holds its record)."""
        return self._conversations if self._conversations is not None else self._shape.turns(self._record)

    def _extras(self) -> dict:
        """``extra``, to read only (as :meth:`_turns`)."""
        return self._extra if self._extra is not None else self._shape.extra(self._record)

    def texts(self, roles=None) -> Iterator[str]:
        """The text of each turn (of ``roles`` only, when given), read without building turns."""
        if self._conversations is None:
            return self._shape.texts(self._record, roles)
        return (turn.text for turn in self._conversations if roles is None or turn.role in roles)

    @property
    def images(self) -> list[str]:
        if self._image is None:
            return []
        return list(self._image) if isinstance(self._image, list) else [self._image]

    @property
    def videos(self) -> list[str]:
        if self._video is None:
            return []
        return list(self._video) if isinstance(self._video, list) else [self._video]

    def tag_counts(self, roles=None) -> tuple[int, int]:
        """How many ``<image>`` and ``<video>`` the text holds (in the turns of ``roles`` only)."""
        if roles is None and self._record is not None:
            return self._tags                   # counted by the reader; nothing has changed since
        text = "\0".join(self.texts(roles))     # no tag holds "\0": none is found across two turns
        return text.count(IMAGE_TOKEN), text.count(VIDEO_TOKEN)

    @property
    def source(self) -> str:
        """Source dataset of the (first) image, or else video, derived from its path."""
        media = self.images or self.videos
        return source_of(media[0] if media else None)

    @property
    def image_placement(self) -> str:
        """Where ``<image>`` sits in the first turn that holds it: prefix, suffix, middle or none."""
        for text in self.texts():
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
        turns = [{"from": turn.role, "value": turn.text, **(turn.extra or {})} for turn in self._turns()]
        video = {"video": self._video} if self._video is not None else {}
        return {"id": self._id, "image": self._image, **video, "conversations": turns, **self._extras()}

    def __eq__(self, other):
        return (isinstance(other, Sample) and self._id == other._id and type(self._id) is type(other._id)
                and self._image == other._image and self._turns() == other._turns()
                and self._extras() == other._extras() and self._video == other._video)

    def __repr__(self):
        video = f", video={self._video!r}" if self._video is not None else ""
        return f"Sample(id={self._id!r}, image={self._image!r}{video}, turns={len(self._turns())})"


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
