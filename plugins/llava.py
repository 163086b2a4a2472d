"""LLaVA-1.5 records: ``{"id", "image", "conversations": [{"from", "value"}]}``.

One JSON array (the 665K mix, on a single line) or JSON Lines with the same records.
Every key this module does not model is kept in ``Sample.extra`` / ``Turn.extra`` so
that a round trip gives JSON-equal output.

LLaVA-Video (LLaVA-NeXT's trainer) adds ``video``: one path, whose place in the text is an
``<image>`` tag; a Sample holds it as ``<video>`` (so that other formats write their own tag),
and the writer writes ``<image>`` back.
"""

from __future__ import annotations

from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import curate
from curate.boxes import BRACKET_PADDED
from curate import Options, Reader, RecordError, Sample, Turn, Writer
from curate.contracts import head_has_keys, samples_from_json
from curate.media import LLAVA_NEXT, checked
from curate.records import json_type, turn_order_problem, unsafe_image_path, write_records
from curate.sample import IMAGE_TOKEN, ROLES, VIDEO_TOKEN

_RECORD_KEYS = ("id", "image", "conversations", "video")
_TURN_KEYS = ("from", "value")



def record_to_sample(record, path: Path, index: int, shape: "LlavaShape | None" = None) -> Sample:
    """Validate one LLaVA record and build its Sample; RecordError names what is wrong.

    With ``shape`` (the reader's), a record that its writer would write back exactly as it is
    (:func:`_written_as_is`) becomes a sample that carries it (:meth:`Sample.as_read`), its
    turns left in the record: every check below runs on the record itself either way.

    This runs once per record of million-record files: the common, valid path does no
    string formatting; messages are built only for the record that is wrong."""
    if type(record) is not dict:
        raise RecordError(path, f"the record is a JSON {json_type(record)}, not an object", index=index)
    record_id = record.get("id")

    def bad(field, reason):
        return RecordError(path, reason, index=index, record_id=record_id, field=field)

    if "id" not in record:
        raise bad("id", "the record has no id")
    if type(record_id) is not str and type(record_id) is not int:
        raise bad("id", f"the id must be a string or an integer, not a JSON {json_type(record_id)}")
    image = record.get("image")
    if image is not None:
        if not _is_image_value(image):
            raise bad("image", "the image must be a path string or a list of path strings")
        for path_text in ([image] if type(image) is str else image):
            problem = unsafe_image_path(path_text)
            if problem:
                raise bad("image", problem)
    conversations = record.get("conversations")
    if type(conversations) is not list:
        raise bad("conversations", "missing" if conversations is None
                  else f"must be a list of turns, not a JSON {json_type(conversations)}")
    if not conversations:
        raise bad("conversations", "the conversation is empty")
    tokens, video_tokens, turns_as_is = _checked_turns(conversations, bad)
    problem = turn_order_problem([turn["from"] for turn in conversations])
    as_is = shape is not None and turns_as_is and _written_as_is(record, image)
    turns = None if as_is else [_turn(turn) for turn in conversations]
    images = 0 if image is None else 1 if type(image) is str else len(image)
    video = record.get("video")
    if video is not None:
        tokens, problem = _video_tags(video, image, turns, tokens, bad) if problem is None else (tokens, problem)
    if problem is None and tokens != images:
        problem = f"{tokens} {IMAGE_TOKEN} tokens for {images} images"
    if problem:
        raise bad("conversations", problem)
    if as_is:
        return Sample.as_read(record, shape, record_id, image, (tokens, video_tokens))
    known = 2 + ("image" in record) + ("video" in record)
    extra = {k: v for k, v in record.items() if k not in _RECORD_KEYS} if len(record) > known else {}
    if "image" in record and image is None:
        extra["image"] = None  # an explicit null survives the round trip
    if "video" in record and video is None:
        extra["video"] = None
    return Sample(record_id, image, turns, extra, video)


def _checked_turns(conversations: list, bad) -> tuple[int, int, bool]:
    """Check every turn of a record (an object with a known role and a text) without building
    it. Returns how many ``<image>`` and ``<video>`` the texts hold, and whether every turn's keys
    begin with ``from``, ``value`` (as :func:`sample_to_record` writes them)."""
    tokens, video_tokens, as_is = 0, 0, True
    for position, turn in enumerate(conversations):
        if type(turn) is dict:
            role, text = turn.get("from"), turn.get("value")
            if role in ROLES and type(text) is str:     # a tuple: a role that is a list is no role, not a crash
                if "<" in text:
                    tokens += text.count(IMAGE_TOKEN)
                    video_tokens += text.count(VIDEO_TOKEN)
                for first_key in turn:
                    break
                if first_key != "from" or len(turn) > 2 and list(turn)[1] != "value":
                    as_is = False
                continue
        raise _turn_error(bad, position, turn)
    return tokens, video_tokens, as_is


def _written_as_is(record: dict, image) -> bool:
    """Whether :func:`sample_to_record` writes ``record``'s keys in their order: ``id``, the
    image (when not null), ``conversations``, then the others; and no ``video`` (its tags are
    translated)."""
    keys = tuple(record)
    if image is not None:
        return keys[:3] == _ID_IMAGE_TURNS and "video" not in record
    return keys[:2] == _ID_TURNS and "image" not in record and "video" not in record


_VALUE = itemgetter("value")
_ID_IMAGE_TURNS = ("id", "image", "conversations")
_ID_TURNS = ("id", "conversations")


def _turn(turn: dict) -> Turn:
    """A checked turn of a record as a Turn (any key besides ``from`` and ``value`` in extra)."""
    extra = {k: v for k, v in turn.items() if k not in _TURN_KEYS} if len(turn) > 2 else None
    return Turn(turn["from"], turn["value"], extra)


class LlavaShape:
    """How a LLaVA record holds turns and extra keys, for the samples a reader builds with
    :meth:`Sample.as_read` (only from records :func:`_written_as_is`: no video, no null image)."""

    def __init__(self, name: str):
        self.name = name

    def turns(self, record: dict) -> list[Turn]:
        return [_turn(turn) for turn in record["conversations"]]

    def extra(self, record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in _RECORD_KEYS}

    def texts(self, record: dict, roles=None) -> Iterator[str]:
        turns = record["conversations"]
        if roles is None:
            return map(_VALUE, turns)
        return (turn["value"] for turn in turns if turn["from"] in roles)


def _video_tags(video, image, turns: list[Turn], tokens: int, bad) -> tuple[int, str | None]:
    """Check a record's ``video`` and give its tags the Sample's ``<video>``: LLaVA-Video writes
    a video's place as ``<image>`` (a record with no image), other LLaVA-shaped formats (InternVL,
    Qwen) as ``<video>``. Returns the ``<image>`` tags left and a problem, or None."""
    if not _is_image_value(video):
        raise bad("video", "the video must be a path string or a list of path strings")
    paths = [video] if type(video) is str else video
    for path_text in paths:
        problem = unsafe_image_path(path_text)
        if problem:
            raise bad("video", problem.replace("image", "video"))
    video_tags = sum(turn.text.count(VIDEO_TOKEN) for turn in turns)
    if not video_tags and image is None and tokens:
        for turn in turns:                    # LLaVA-Video: the <image> tags are the video's
            turn.text = turn.text.replace(IMAGE_TOKEN, VIDEO_TOKEN)
        video_tags, tokens = tokens, 0
    if video_tags != len(paths):
        return tokens, f"{video_tags} {VIDEO_TOKEN} tokens for {len(paths)} videos"
    return tokens, None


def _turn_error(bad, position: int, turn) -> RecordError:
    field = f"conversations[{position}]"
    if not isinstance(turn, dict):
        return bad(field, f"a turn must be an object, not a JSON {json_type(turn)}")
    role, text = turn.get("from"), turn.get("value")
    if role not in ROLES:
        return bad(field + ".from", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return bad(field + ".value", f"the text must be a string, not a JSON {json_type(text)}")


def sample_to_record(sample: Sample, video_tag: str = VIDEO_TOKEN) -> dict:
    """The sample as a LLaVA-shaped record; a video's ``<video>`` is written ``video_tag``."""
    record = {"id": sample.id} if sample.id is not None else {}
    if sample.image is not None:
        record["image"] = sample.image
    if sample.video is not None:
        record["video"] = sample.video
        record["conversations"] = [_turn_to_dict(t, video_tag) for t in sample.conversations]
    else:
        # one dict per turn, made inline: this runs for every turn of million-record files
        record["conversations"] = [{"from": t.role, "value": t.text} if not t.extra else _turn_to_dict(t)
                                   for t in sample.conversations]
    if sample.extra:
        for key, value in sample.extra.items():
            record.setdefault(key, value)
    return record


def _turn_to_dict(turn: Turn, video_tag: str = VIDEO_TOKEN) -> dict:
    text = turn.text if video_tag == VIDEO_TOKEN else turn.text.replace(VIDEO_TOKEN, video_tag)
    out = {"from": turn.role, "value": text}
    if turn.extra:
        out.update(turn.extra)
    return out


def _is_image_value(image) -> bool:
    if isinstance(image, str):
        return bool(image)
    return isinstance(image, list) and bool(image) and all(isinstance(i, str) and i for i in image)


class LlavaReader(Reader):
    name = "llava"
    description = "LLaVA-1.5 conversations (JSON array or JSON Lines)"
    image_roots: tuple[str, ...] = ()
    box_style = BRACKET_PADDED      # [x1, y1, x2, y2] of the square-padded image

    def sniff(self, path: Path, head: str) -> int:
        if not head_has_keys(head, "conversations", "from", "value"):
            return 0
        return 10 + sum(f'"{root}' in head for root in self.image_roots)

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        return samples_from_json(Path(path), options, partial(record_to_sample, shape=LlavaShape(self.name)))


class LlavaWriter(Writer):
    name = "llava"
    description = "LLaVA-1.5 conversations (.json array, or .jsonl lines); videos as LLaVA-Video's"
    box_style = BRACKET_PADDED
    media_rule = LLAVA_NEXT         # how the trainer pairs tags with images and videos (curate.media)
    # said in the summary when the output is JSON Lines and the trainer cannot read them
    jsonl_note = ("wrote JSON Lines (.jsonl); LLaVA's own trainer (train.py's json.load) reads only a JSON "
                  "array: name the output .json for it")

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        if self.jsonl_note and options.path is not None and str(options.path).endswith(".jsonl"):
            options.state.setdefault("notes", {})[self.name] = f"{self.name}: {self.jsonl_note}"
        tag, name = self.media_rule.video_tag, self.name

        def record_of(sample: Sample) -> dict:
            """The record as read when the sample is its reader's (this format's) and unchanged."""
            record = sample.record_as_read(name)
            return sample_to_record(sample, tag) if record is None else record

        return write_records(map(record_of, checked(samples, self.media_rule, options)), stream, options.path)


@curate.hookimpl
def register_readers(register):
    register(LlavaReader)


@curate.hookimpl
def register_writers(register):
    register(LlavaWriter)
