"""WebDataset tar shards (https://github.com/webdataset/webdataset): members grouped by key,
``KEY.json`` (a LLaVA record: ``conversations``, optional ``id``) beside its images
``KEY.jpg`` (several: ``KEY.0.jpg``, ``KEY.1.png``, in tar order), the layout NeMo Curator and
many pretraining pipelines read and write.

Read as a stream (``tarfile`` in ``r|*`` mode: a shard is read once, front to back, in bounded
memory). A group is rejected, with its reason, when a member is a link, has a name that is
absolute or climbs with ``..``, is over the image size limit, or when its key was seen before
in the shard (a key's members must sit together); a shard that is not a tar is one error.
Written as shards ``shard-NNNNNN.tar`` in the output folder (a README.md card beside them).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, TextIO

import curate
from curate import Options, Reader, RecordError, Sample, Writer
from curate.errors import CurateError
from curate.image_source import unsafe_member
from curate.images import MAX_IMAGE_BYTES, ImageLocator, UnreadableImage, image_from_bytes
from curate.plugins.hf_parquet import SHARD_MB, group_name
from curate.plugins.llava import record_to_sample, sample_to_record

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the name up to the first dot of its last part."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


class Group:
    """The members of one key, read so far, and the first reason to refuse it."""

    def __init__(self, key: str, index: int):
        self.key, self.index = key, index
        self.record_text: bytes | None = None
        self.images: list[tuple[str, bytes]] = []
        self.problem: tuple[str, str] | None = None      # (field, reason)

    def refuse(self, field: str, reason: str) -> None:
        if self.problem is None:
            self.problem = (field, reason)


class WebDatasetReader(Reader):
    name = "webdataset"
    description = "WebDataset tar shards (KEY.json LLaVA record + KEY.jpg images), read as a stream"
    holds_images = True

    def sniff(self, path: Path, head: str) -> int:
        return 30 if head[257:262] == "ustar" else 0       # a tar: JSON records inside must not fool llava's sniff

    def read(self, path: Path, options: Options) -> Iterator[Sample]:
        path = Path(path)
        seen: set[str] = set()
        group: Group | None = None
        groups = 0
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    key, extension = split_key(member.name)
                    if group is None or key != group.key:
                        if group is not None:
                            yield from self._finish(group, path, options)
                        group = Group(key, groups)
                        groups += 1
                        if key in seen:
                            group.refuse("key", f"the key {key!r} appears again after other keys (a key's members "
                                                "must sit together; duplicate keys are ambiguous)")
                        seen.add(key)
                    self._add(group, member, extension, tar)
                    if options.progress:
                        options.progress(member.size + 512)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CurateError(f"{path}: not a readable tar shard ({type(e).__name__}: {e})") from None
        if group is not None:
            yield from self._finish(group, path, options)

    @staticmethod
    def _add(group: Group, member: tarfile.TarInfo, extension: str, tar) -> None:
        if member.isdir():
            return
        problem = unsafe_member(member.name)
        if problem:
            return group.refuse("member", problem)
        if not member.isfile():
            return group.refuse("member", f"the archive member {member.name!r} is a link or a special file")
        if member.size > MAX_IMAGE_BYTES:
            return group.refuse("member", f"{member.name!r}: {member.size:,} bytes is over the "
                                          f"{MAX_IMAGE_BYTES:,}-byte limit")
        if extension == "json":
            if group.record_text is not None:
                return group.refuse("member", f"the key {group.key!r} has two .json members")
            group.record_text = tar.extractfile(member).read()
        elif extension.rpartition(".")[2] in IMAGE_EXTENSIONS:
            group.images.append((member.name, tar.extractfile(member).read()))

    def _finish(self, group: Group, path: Path, options: Options) -> Iterator[Sample]:
        def bad(field, reason):
            return RecordError(path, reason, index=group.index, record_id=group.key, field=field)

        if group.problem is None and group.record_text is None:
            group.refuse("json", f"the key {group.key!r} has no .json member")
        if group.problem is not None:
            options.reject(bad(*group.problem), {"key": group.key})
            return
        try:
            record = json.loads(group.record_text)
        except ValueError as e:
            options.reject(bad("json", f"{group.key}.json is not JSON ({e})"), {"key": group.key})
            return
        if not isinstance(record, dict):
            options.reject(bad("json", f"{group.key}.json is not a JSON object"), {"key": group.key})
            return
        record.setdefault("id", group.key)
        record.pop("image", None)
        if group.images:
            record["image"] = [name for name, _ in group.images]
        try:
            sample = record_to_sample(record, path, group.index)
            images = [image_from_bytes(data, group_name(path.parent.name), name=name,
                                       origin={"shard": str(path), "member": name})
                      for name, data in group.images]
        except RecordError as error:
            options.reject(error, record)
            return
        except UnreadableImage as e:
            options.reject(bad("image", str(e)), record)
            return
        sample.image = None if not images else images[0] if len(images) == 1 else images
        yield sample


class WebDatasetWriter(Writer):
    name = "webdataset"
    description = "WebDataset tar shards (a folder: shard-NNNNNN.tar of KEY.json + KEY.jpg, README.md card)"
    embeds_images = True
    writes_folder = True
    settings = (SHARD_MB,)

    def write(self, samples: Iterable[Sample], stream: TextIO, options: Options) -> int:
        locator = ImageLocator(options.image_root)
        limit = options.setting("shard_size_mb") * (1 << 20)
        outputs, folder = options.outputs, Path(options.folder)
        tar, size, shards, written = None, 0, 0, 0
        sources: Counter = Counter()
        now = time.time()
        for number, sample in enumerate(samples):
            try:
                members = self.members(sample, f"{number:09d}", locator)
            except UnreadableImage as e:
                options.reject(RecordError(options.path, f"the image cannot be embedded: {e}", record_id=sample.id,
                                           field="image"), sample.as_record())
                continue
            if tar is None:
                path = outputs.claim(folder / f"shard-{shards:06d}.tar", "shard")
                tar = tarfile.open(fileobj=outputs.open(path, "wb"), mode="w", format=tarfile.USTAR_FORMAT)
                shards, size = shards + 1, 0
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), now, 0o644
                tar.addfile(info, io.BytesIO(data))
                size += len(data) + 512
            written += 1
            sources[sample.source] += 1
            if size >= limit:
                tar.close()
                tar = None
        if tar is not None:
            tar.close()
        stream.write(f"# WebDataset written by curate\n\n{written:,} samples in {shards} shard"
                     f"{'s' if shards != 1 else ''} (shard-NNNNNN.tar: KEY.json, a LLaVA record, and its images "
                     "KEY.jpg or KEY.N.jpg).\n\n| source | samples |\n|---|---|\n"
                     + "".join(f"| {s} | {c:,} |\n" for s, c in sorted(sources.items(), key=lambda kv: -kv[1])))
        return written

    @staticmethod
    def members(sample: Sample, key: str, locator) -> list[tuple[str, bytes]]:
        images = []
        for k, image in enumerate(sample.images):
            data = locator.read_bytes(image)
            extension = (str(image).rpartition(".")[2].lower() or "jpg") if "." in str(image) else "jpg"
            extension = extension if extension in IMAGE_EXTENSIONS else "jpg"
            images.append((f"{key}.{k}.{extension}" if len(sample.images) > 1 else f"{key}.{extension}", data))
        record = sample_to_record(sample)
        if images:
            record["image"] = [name for name, _ in images] if len(images) > 1 else images[0][0]
        return [(f"{key}.json", json.dumps(record, ensure_ascii=False).encode()), *images]


@curate.hookimpl
def register_readers(register):
    register(WebDatasetReader)


@curate.hookimpl
def register_writers(register):
    register(WebDatasetWriter)
