"""How each trainer pairs the ``<image>`` and ``<video>`` tags of a record's text with its media
lists. A writer checks every sample with its trainer's :class:`MediaRule` and rejects, naming the
record, one the trainer would fail on or misread (the most frequent data error trainers report:
LLaMA-Factory #5883, #6135, #7909; ms-swift #5247). Each rule is read from the trainer's code:

- LLaMA-Factory (``mm_plugin._validate_messages``): every message counted, the number of
  ``<image>`` equal to the images and of ``<video>`` to the videos.
- ms-swift (``Template._add_default_tags``): fewer tags than media is fine (it puts the missing
  ones at the start of the first message); more only warns and the extra tags stay in the text.
- qwen-vl-finetune (``data_processor._build_messages``): only the user turns hold media (a tag
  in an answer is text); each tag takes the next image or video, and there must be exactly
  enough.
- InternVL (``internvl_chat_finetune``): a record holds images or one video (``video`` a
  path); an image list needs a tag per image; a video is one ``<video>`` in the first turn,
  replaced only where ``<video>\\n`` is written (it adds one there when the turn has none).
- LLaVA-NeXT (LLaVA-Video, ``train.py``): a record holds images or one video, never both (the
  image wins); the video is one ``<image>`` in the text; images need a tag each.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RecordError
from .sample import IMAGE_TOKEN, VIDEO_TOKEN, Sample


@dataclass(frozen=True)
class MediaRule:
    """A trainer's rule. ``trainer``: its name, for messages; ``video_tag``: how the format
    writes a video's place (LLaVA-Video: ``<image>``); ``one_video``: at most one video, written
    as a path; ``images_with_video``: a record may hold both; ``user_turns_only``: tags count only
    in the user's turns; ``fewer_tags_ok``: the trainer adds missing tags itself."""

    trainer: str
    video_tag: str = VIDEO_TOKEN
    one_video: bool = False
    images_with_video: bool = True
    user_turns_only: bool = False
    fewer_tags_ok: bool = False

    def problem(self, sample: Sample) -> tuple[str, str] | None:
        """(field, reason) when the trainer would fail on or misread ``sample``, else None."""
        if sample.video is None and not self.user_turns_only and _one_tag_per_image(sample):
            return None                       # the common case, checked in a few microseconds
        images, videos = sample.images, sample.videos
        if videos and self.one_video and len(videos) > 1:
            return "video", f"{len(videos)} videos: {self.trainer} takes one video per record"
        if videos and images and not self.images_with_video:
            return "video", (f"{len(images)} images and a video: {self.trainer} reads a record's images or its "
                             "video, not both")
        image_tags, video_tags = sample.tag_counts(("human",) if self.user_turns_only else None)
        where = " in the user's turns" if self.user_turns_only else ""
        for tags, media, tag, what in ((image_tags, len(images), IMAGE_TOKEN, "images"),
                                       (video_tags, len(videos), VIDEO_TOKEN, "videos")):
            if tags != media and not (self.fewer_tags_ok and tags < media):
                shown = self.video_tag if tag == VIDEO_TOKEN else tag
                return "conversations", (f"{tags} {shown} tags{where} for {media} {what}: {self.trainer} needs "
                                         f"{'at most ' if self.fewer_tags_ok else ''}one per {what[:-1]}")
        return None


def _one_tag_per_image(sample: Sample) -> bool:
    """Whether a sample without videos has exactly one ``<image>`` per image and no ``<video>``."""
    image_tags, video_tags = sample.tag_counts()
    image = sample.image
    return not video_tags and image_tags == (0 if image is None else 1 if type(image) is str else len(image))


class InternVLRule(MediaRule):
    """Beyond the counts: InternVL puts ``<image>\\n`` before the first turn of a one-image record
    whose first turn has none (a tag in a later turn then makes two), and replaces only
    ``<video>\\n`` in the first turn with a video's frames (a ``<video>`` elsewhere stays text)."""

    def problem(self, sample):
        found = super().problem(sample)
        first = next(sample.texts(), None)
        if found is not None or first is None:
            return found
        if type(sample.image) is str and IMAGE_TOKEN not in first:
            return "conversations", ("the image's <image> is not in the first turn: InternVL would add another "
                                     "there, two tags for one image")
        if sample.video is not None and "<video>\n" not in first:
            return "conversations", ("the video's tag must be written '<video>\\n' in the first turn: InternVL "
                                     "replaces only that with the frames")
        return None


LLAMA_FACTORY = MediaRule("LLaMA-Factory")
MS_SWIFT = MediaRule("ms-swift", fewer_tags_ok=True)
QWEN_VL_FINETUNE = MediaRule("qwen-vl-finetune", user_turns_only=True)
INTERNVL = InternVLRule("InternVL", one_video=True, images_with_video=False)
LLAVA_NEXT = MediaRule("LLaVA-NeXT", video_tag=IMAGE_TOKEN, one_video=True, images_with_video=False)


def checked(samples, rule: MediaRule, options):
    """The samples ``rule`` accepts; each other one goes to ``options.reject``, naming the record."""
    for sample in samples:
        found = rule.problem(sample)
        if found is None:
            yield sample
        else:
            field, reason = found
            options.reject(RecordError(options.path, reason, record_id=sample.id, field=field), None)
