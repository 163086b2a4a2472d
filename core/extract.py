"""Images as files for trainers that read files (``--extract-images DIR``).

LLaVA(-NeXT), InternVL and qwen-vl-finetune read image files from a folder; data held as bytes
(a Parquet cell, a tar member) must become files for them. :class:`ImageFiles` is the stage
that does it: each distinct image (by content) is written once into DIR, under its own name
when that is safe and free, else under its content hash, and the samples' paths become paths
relative to DIR. Without ``--extract-images``, a writer that writes paths is refused images
held as bytes (their paths would name nothing), with the flag that fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CurateError, RecordError, setting
from .image_source import ImageBytes, digest_of, extension_of
from .images import UnreadableImage
from .records import unsafe_image_path
from .stages import Stage

MAX_NAME_CHARS = 200


def safe_name(name) -> bool:
    """Whether an image's own name can be used as a path under DIR as it is."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and unsafe_image_path(name) is None
            and "\0" not in name and "\\" not in name
            and all(part and part not in (".", "..") and not part.startswith(".") for part in name.split("/")))


class ImageFiles(Stage):
    """Writes every image into ``folder`` once (see the module); ``folder`` None: only checks
    that no image held as bytes reaches a writer that writes paths (``embeds``: the writer
    holds bytes itself, and needs neither)."""

    name = "images"

    def __init__(self, folder: Path | None, writer):
        super().__init__()
        self.folder = Path(folder) if folder is not None else None
        self.writer = writer
        self.embeds = writer.embeds_images
        if self.folder is not None and self.embeds:
            raise CurateError(f"the {writer.name} writer embeds the images in its output; {setting('extract_images')} "
                              "is for writers whose trainer reads image files")
        if self.folder is not None and self.folder.exists() and not self.folder.is_dir():
            raise CurateError(f"{self.folder}: {setting('extract_images')} names a file; name a folder")
        self.names: dict[str, str] = {}          # content digest -> its name under the folder
        self.taken: set[str] = set()
        self.inside: set[str] = set()            # folders under DIR checked to stay inside it
        self.written = 0

    @property
    def active(self) -> bool:
        return self.folder is not None or not self.embeds

    def process(self, items, context):
        if not self.active:
            yield from items
            return
        for item in items:
            sample = item.sample
            if self.folder is None:
                held = next((image for image in sample.images if isinstance(image, ImageBytes)), None)
                if held is not None:
                    raise CurateError(f"{item.path}: the images are held as bytes in the input; the {self.writer.name} "
                                      f"writer writes image paths: pass {setting('extract_images')} DIR to write each "
                                      "image there once, with the records' paths relative to it")
                yield item
                continue
            try:
                names = [self.extract(image, context) for image in sample.images]
            except UnreadableImage as e:
                context.sink(RecordError(item.path, f"the image cannot be extracted: {e}", index=item.number,
                                         record_id=sample.id, field="image"), None)
                continue
            if names:
                sample.image = names if isinstance(sample.image, list) else names[0]
            yield item

    def extract(self, image: str, context) -> str:
        """The image's name under the folder, writing it there the first time its content is seen."""
        data = context.images.read_bytes(image)
        own = (image.name or str(image)) if isinstance(image, ImageBytes) else image
        digest = image.digest if isinstance(image, ImageBytes) and image._digest else digest_of(data)
        name = self.names.get(digest)
        if name is not None:
            return name
        name = own if safe_name(own) and own not in self.taken and self._stays_inside(own) \
            else self._hashed(digest, data, own)
        self.names[digest] = name
        self.taken.add(name)
        context.outputs.put(self.folder, name, data)
        self.written += 1
        return name

    def _stays_inside(self, name: str) -> bool:
        """Whether ``DIR/name``'s folder resolves inside DIR (a folder there that is a symbolic
        link to elsewhere must not take the image out of it)."""
        folder = os.path.dirname(name)
        if not folder or folder in self.inside:
            return True
        root = os.path.realpath(self.folder)
        real = os.path.realpath(self.folder / folder)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            self.inside.add(folder)
            return True
        return False

    def _hashed(self, digest: str, data: bytes, own: str) -> str:
        extension = extension_of(data) or os.path.splitext(own)[1][:10].lower()
        name, n = f"{digest}{extension}", 1
        while name in self.taken:         # an own name that happened to look like this hash
            name, n = f"{digest}-{n}{extension}", n + 1
        return name

    def finish(self) -> None:
        if self.folder is not None:
            self.tally.notes.append(f"wrote {self.written:,} distinct images into {self.folder} (the records' "
                                    "image paths are relative to it)")
