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

import random
import re
from pathlib import Path
from typing import Iterator

import click

import curate
from curate.boxes import SVIT_ORIGINAL
from curate.prompts import DETAIL_INSTRUCTIONS
from curate.errors import RecordError
from curate.formats import Options, Reader, head_has_keys
from curate.images import ImageLocator, UnreadableImage
from curate.jsonstream import iter_records
from curate.sample import Sample, Turn

TASKS = ("conversation", "complex", "detail", "referring")
REFERRING_INSTRUCTIONS = (
    "Provide the bounding boxes of the mentioned objects.",
    "Include the coordinates for each mentioned object.",
    "Locate the objects with their coordinates.",
)
_FILE_TASKS = (("referring", "referring"), ("complex", "complex"), ("detail", "detail"), ("conversation", "conversation"))
# "<st>object<ed>" followed by one or more "[...]" groups separated by commas
_OBJECT_BOXES = re.compile(r"<ed>((?:\s*,?\s*\[[^\[\]]*\])+)")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(r"^\s*-?\d+(?:\.\d+)?(?:[eE]-?\d+)?\s*$")


def detect_task(path: Path, head: str) -> str | None:
    name = path.name.lower()
    for word, task in _FILE_TASKS:
        if word in name:
            return task
    if "<st>" in head:
        return "referring"
    return None


def check_boxes(text: str) -> str | None:
    """The first problem with the boxes after an object, or None. Boxes are 4 numbers in [0, 1],
    x1 <= x2 and y1 <= y2."""
    for match in _OBJECT_BOXES.finditer(text):
        for group in _GROUP.findall(match.group(1)):
            parts = group.split(",")
            if len(parts) != 4 or not all(_NUMBER.match(p) for p in parts):
                return f"malformed box [{group}]: expected four numbers"
            x1, y1, x2, y2 = (float(p) for p in parts)
            if not all(0.0 <= v <= 1.0 for v in (x1, y1, x2, y2)):
                return f"box [{group.strip()}] lies outside [0, 1]"
            if x1 > x2 or y1 > y2:
                return f"box [{group.strip()}] has x1 > x2 or y1 > y2"
    return None


class SvitReader(Reader):
    name = "svit"
    description = "SVIT original files (conversation, complex reasoning, detail, referring QAs), as SVIT's LLaVA-1.5 release"
    box_style = SVIT_ORIGINAL       # <st>object<ed> [box]: writers keep the object where they can
    cli_options = [
        click.Option(["--svit-task"], type=click.Choice(TASKS), default=None,
                     help="svit reader: the task of the input files (default: from the file name, or "
                          "<st> markers for referring QAs)."),
    ]

    def sniff(self, path: Path, head: str) -> int:
        return 20 if head_has_keys(head, "image_id", "conversations", "content") else 0

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        from curate.jsonstream import read_head
        path = Path(path)
        task = options.option("svit_task") or detect_task(path, read_head(path))
        if task is None:
            raise curate.CurateError(f"{path}: cannot tell which SVIT task this file holds; pass --svit-task "
                                     f"({', '.join(TASKS)})")
        if options.image_root is None:
            raise curate.CurateError("svit: --image-root is needed to tell VG_100K from VG_100K_2 (a Visual "
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
                samples = list(self._samples(record, index, path, task, state))
            except RecordError as error:
                options.reject(error, record)
                continue
            yield from samples
        options.state.setdefault("notes", {})["svit"] = (
            f"svit: {state['records']:,} SVIT records (one per image) became {sum(state['counters'].values()):,} "
            "samples with the release's granularity; the counts above are samples")

    def _samples(self, record, index, path, task, state):
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
        counters, rng = state["counters"], state["rng"]
        for c, conversation in enumerate(conversations):
            field = f"conversations[{c}].content"
            content = conversation.get("content") if isinstance(conversation, dict) else None
            if not isinstance(content, list) or not content:
                raise bad(field, "missing or empty")
            turns = []
            for t, turn in enumerate(content):
                role = turn.get("from") if isinstance(turn, dict) else None
                text = turn.get("value") if isinstance(turn, dict) else None
                if role not in ("user", "gpt") or not isinstance(text, str):
                    raise bad(f"{field}[{t}]", "a turn needs from: user|gpt and a string value")
                if task == "referring":
                    problem = check_boxes(text)
                    if problem:
                        raise bad(f"{field}[{t}].value", problem,
                                  record_id=f"svit_referring_{counters['referring']}")
                turns.append(("human" if role == "user" else "gpt", text))
            if task == "detail" and turns[0][0] == "gpt":
                turns.insert(0, ("human", rng.choice(DETAIL_INSTRUCTIONS)))
            if len(turns) % 2 or any(role != ("human", "gpt")[i % 2] for i, (role, _) in enumerate(turns)):
                raise bad(field, "turns must alternate user, gpt, starting with user")
            extra = {k: v for k, v in conversation.items() if k != "content"}
            for group in self._group(turns, task, rng):
                n = counters[task]
                counters[task] += 1
                group[0] = Turn("human", "<image>\n" + group[0].text)
                yield Sample(f"svit_{task}_{n}", image, group, dict(extra))

    def _group(self, turns, task, rng):
        """Split one conversation into records with the release's granularity."""
        if task == "conversation":
            yield [Turn(role, text) for role, text in turns]
            return
        for k in range(0, len(turns) - 1, 2):
            (q_role, question), (a_role, answer) = turns[k], turns[k + 1]
            if task == "referring":
                # the <st>/<ed> marks stay: each writer renders the referred object its own way
                # (LLaVA drops the marks, as SVIT's release does; InternVL writes <ref>..</ref>)
                question = question + " " + rng.choice(REFERRING_INSTRUCTIONS)
            yield [Turn("human", question), Turn("gpt", answer)]

    def _image_path(self, image_id, state) -> str | None:
        folders = state["folders"]
        if image_id in folders:
            return folders[image_id]
        found = None
        for folder in ("VG_100K", "VG_100K_2"):
            relative = f"vg/{folder}/{image_id}.jpg"
            try:
                if state["locator"].path(relative).exists():
                    found = relative
                    break
            except UnreadableImage:
                break
        folders[image_id] = found
        return found


@curate.hookimpl
def register_readers(register):
    register(SvitReader)
