"""SVIT's original files (conversation, complex reasoning, detail description, referring QAs),
read into Samples exactly as SVIT's own LLaVA-1.5 release (``format/llava-v1.5``) shapes them:

- one record per conversation; one per QA for complex reasoning and referring; one per
  description for detail; ids ``svit_{task}_{n}``;
- ``<image>\\n`` before the first question; ``user`` becomes ``human``;
- referring QAs: one of three response-format instructions (seeded) appended to each
  question. Their boxes stay normalised to the original image and the ``<st>object<ed>``
  marks stay in the text (this reader's box style); writing LLaVA drops the marks and pads
  the boxes to a square with SVIT's recipe, writing InternVL gives ``<ref>object</ref>``.
"""

from __future__ import annotations

import bisect
import random
from pathlib import Path
from typing import Iterator


import curate
from curate.boxes import SVIT_ORIGINAL, BoxError
from curate.prompts import DETAIL_INSTRUCTIONS
from curate.errors import RecordError, setting
from curate.formats import Options, Reader, head_has_keys
from curate.images import KEPT_SIZES, ImageLocator, UnreadableImage
from curate.jsonstream import iter_records
from curate.sample import Sample, Turn
from curate.settings import Setting
from curate.stages import ConvertsOwnBoxes

TASKS = ("conversation", "complex", "detail", "referring")
REFERRING_INSTRUCTIONS = (
    "Provide the bounding boxes of the mentioned objects.",
    "Include the coordinates for each mentioned object.",
    "Locate the objects with their coordinates.",
)
_FILE_TASKS = (("referring", "referring"), ("complex", "complex"), ("detail", "detail"), ("conversation", "conversation"))


def detect_task(path: Path, head: str) -> str | None:
    name = path.name.lower()
    for word, task in _FILE_TASKS:
        if word in name:
            return task
    if "<st>" in head:
        return "referring"
    return None


def check_boxes(text: str) -> str | None:
    """The first problem with the boxes of an SVIT text, or None (curate's one box parser:
    :meth:`curate.boxes.BoxStyle.groups`)."""
    try:
        for _ in SVIT_ORIGINAL.groups(text):
            pass
    except BoxError as e:
        return str(e)
    return None


class SvitReader(Reader, ConvertsOwnBoxes):
    name = "svit"
    description = "SVIT original files (conversation, complex reasoning, detail, referring QAs), as SVIT's LLaVA-1.5 release"
    box_style = SVIT_ORIGINAL       # <st>object<ed> [box]: writers keep the object where they can
    settings = (
        Setting("svit_task", choices=tuple(TASKS),
                help="svit reader: the task of the input files (default: from the file name, or <st> markers "
                     "for referring QAs)."),
    )

    def sniff(self, path: Path, head: str) -> int:
        return 20 if head_has_keys(head, "image_id", "conversations", "content") else 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        return self._read(path, options, None)

    def read_converting(self, path: Path, options: Options, rewriter) -> Iterator[Sample]:
        """The box stage's fast path: each record's texts checked and converted in this pass."""
        return self._read(path, options, rewriter)

    def _read(self, path: Path, options: Options, boxes) -> Iterator[Sample]:
        from curate.jsonstream import read_head
        path = Path(path)
        task = options.setting("svit_task") or detect_task(path, read_head(path))
        if task is None:
            raise curate.CurateError(f"{path}: cannot tell which SVIT task this file holds; pass {setting('svit_task')} "
                                     f"({', '.join(TASKS)})")
        if options.image_root is None:
            raise curate.CurateError(f"svit: {setting('image_root')} is needed to tell VG_100K from VG_100K_2 (a Visual "
                                     "Genome root or a LLaVA data root holding vg/)")
        state = options.state.setdefault("svit", {"counters": dict.fromkeys(TASKS, 0),
                                                  "rng": random.Random(options.seed), "records": 0,
                                                  "locator": ImageLocator(options.image_root), "folders": {}})
        for index, record in iter_records(path, options.progress):
            state["records"] += 1
            if isinstance(record, RecordError):
                options.reject(record, None)
                continue
            try:
                samples = self._samples(record, index, path, task, state, boxes)
            except RecordError as error:
                options.reject(error, record)
                continue
            yield from samples
        options.state.setdefault("notes", {})["svit"] = (
            f"svit: {state['records']:,} SVIT records (one per image) became {sum(state['counters'].values()):,} "
            "samples with the release's granularity; the counts above are samples")

    def _samples(self, record, index, path, task, state, boxes):
        """The record's samples. With ``boxes`` (the run's rewriter), the texts of the whole
        record are checked and their boxes converted in one pass, the image's size read once."""
        def bad(field, reason, record_id=None):
            return RecordError(path, reason, index=index, record_id=record_id or (
                record.get("image_id") if isinstance(record, dict) else None), field=field)

        if not isinstance(record, dict):
            raise bad(None, "the record is not a JSON object")
        image_id = record.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or str(image_id) == "":
            raise bad("image_id", "missing or not a Visual Genome id")
        image = self._image_path(image_id, state)
        if image is None:
            raise bad("image_id", f"{image_id}.jpg is in neither VG_100K/ nor VG_100K_2/ under {state['locator'].root}")
        conversations = record.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            raise bad("conversations", "missing or empty")
        roles, texts = [], []                   # every turn of the record, in order
        starts = []                             # where each conversation's turns begin
        for c, conversation in enumerate(conversations):
            content = conversation.get("content") if isinstance(conversation, dict) else None
            if not isinstance(content, list) or not content:
                raise bad(f"conversations[{c}].content", "missing or empty")
            starts.append(len(texts))
            for t, turn in enumerate(content):
                role, text = (turn.get("from"), turn.get("value")) if isinstance(turn, dict) else (None, None)
                if role not in ("user", "gpt") or not isinstance(text, str):
                    raise bad(f"conversations[{c}].content[{t}]", "a turn needs from: user|gpt and a string value")
                roles.append(role)
                texts.append(text)
        starts.append(len(texts))
        counters, rng = state["counters"], state["rng"]
        texts, box_count = self._checked_boxes(texts, starts, task, counters, boxes, bad,
                                               lambda: boxes.image_size(image, path, index=index, record_id=image_id))
        samples = []
        for c, conversation in enumerate(conversations):
            these_roles, these_texts = roles[starts[c]:starts[c + 1]], texts[starts[c]:starts[c + 1]]
            if task == "detail" and these_roles[0] == "gpt":
                these_roles.insert(0, "user")
                these_texts.insert(0, rng.choice(DETAIL_INSTRUCTIONS))
            pairs = len(these_roles) // 2
            if (len(these_roles) % 2 or these_roles[0::2].count("user") != pairs
                    or these_roles[1::2].count("gpt") != pairs):
                raise bad(f"conversations[{c}].content", "turns must alternate user, gpt, starting with user")
            extra = {k: v for k, v in conversation.items() if k != "content"}
            first = counters[task]
            groups = self._group(these_texts, task, rng)
            counters[task] = first + len(groups)
            samples += [Sample(f"svit_{task}_{n}", image, group, dict(extra)) for n, group in enumerate(groups, first)]
        if boxes is not None:
            boxes.tally(box_count, image)
        return samples

    @staticmethod
    def _checked_boxes(texts, starts, task, counters, boxes, bad, size):
        """The texts with their boxes checked and, with ``boxes``, converted to the writer's
        style (the whole record in one pass where every box is plain, text by text where one is
        not); and how many boxes. A bad box refuses the record, naming the turn that holds it."""
        def refuse(k, problem):
            c = bisect.bisect_right(starts, k) - 1        # the conversation, and the turn in it
            t = k - starts[c]
            # referring QAs: the id of the QA that holds the turn
            qa = f"svit_referring_{counters['referring'] + starts[c] // 2 + t // 2}" if task == "referring" else None
            return bad(f"conversations[{c}].content[{t}].value", problem, record_id=qa)

        if boxes is not None:
            return boxes.rewrite_texts(texts, size, refuse)
        for k, text in enumerate(texts):
            problem = check_boxes(text)
            if problem:
                raise refuse(k, problem)
        return texts, 0

    @staticmethod
    def _group(texts, task, rng) -> list[list[Turn]]:
        """Split one conversation (texts of user, gpt, user, ...) into the turns of records with
        the release's granularity; ``<image>\\n`` before the first question of each."""
        if task == "conversation":
            texts = ["<image>\n" + texts[0], *texts[1:]]
            return [[Turn("gpt" if k % 2 else "human", text) for k, text in enumerate(texts)]]
        if task != "referring":
            return [[Turn("human", "<image>\n" + question), Turn("gpt", answer)]
                    for question, answer in zip(texts[0::2], texts[1::2])]
        # Without a rewriter the <st>/<ed> marks stay: each writer renders the referred object
        # its own way (LLaVA drops the marks, as SVIT's release does; InternVL writes <ref>..</ref>).
        choice = rng.choice
        return [[Turn("human", f"<image>\n{question} {choice(REFERRING_INSTRUCTIONS)}"), Turn("gpt", answer)]
                for question, answer in zip(texts[0::2], texts[1::2])]

    def _image_path(self, image_id, state) -> str | None:
        folders = state["folders"]
        if image_id in folders:
            return folders[image_id]
        if len(folders) >= KEPT_SIZES:        # a cache: memory stays flat on any dataset
            folders.clear()
        found = None
        for folder in ("VG_100K", "VG_100K_2"):
            relative = f"vg/{folder}/{image_id}.jpg"
            try:
                if state["locator"].find(relative) is not None:
                    found = relative
                    break
            except UnreadableImage:
                break
        folders[image_id] = found
        return found


@curate.hookimpl
def register_readers(register):
    register(SvitReader)
