"""The Python API behind the CLI: read, write and convert datasets through Samples
(deduplication is in :mod:`curate.deduplicate`). Every function here is one call of the engine."""

from __future__ import annotations

from typing import Iterable, Iterator

from .atomic import Outputs
from .engine import Inputs, RejectSink, Report, Run, SampleSource
from .sample import Sample


def read(path, format: str = "auto", *, on_error: str = "fail", reject=None, progress=None,
         settings: dict | None = None, **inputs) -> Iterator[Sample]:
    """Yield the Samples of one file, read as the commands read it (:class:`Inputs`).

    Bad records raise :class:`RecordError`; ``on_error="skip"`` drops them silently (use
    :func:`convert` to keep them), or pass your own ``reject(error, raw)``. Other keywords:
    ``image_root``, ``image_prefix``, ``seed``; ``settings``: the reader's settings by name
    (``{"svit_task": "referring"}``).
    """
    source = Inputs([path], format, settings=dict(settings or {}), **inputs)
    yield from source.samples(progress=progress, reject=reject or RejectSink(on_error))


def write(samples: Iterable[Sample], path, format: str = "llava", *, overwrite: bool = False,
          settings: dict | None = None, ids: str | None = None, boxes_from: str | None = None,
          image_root=None, on_error: str = "fail", rejects=None) -> int:
    """Write Samples to ``path`` atomically, through the same stages as :func:`convert`;
    return how many were written.

    ``settings``: the writer's settings by name. ``ids``: as ``--ids`` (default: the writer's,
    loadable ids for a trainer that loads through ``datasets``). ``boxes_from``: the reader
    whose box convention the samples' texts follow (``"svit"`` for samples read from SVIT):
    their boxes are rewritten to the writer's convention as :func:`convert` does (with
    ``image_root`` where that needs the images' sizes); without it, boxes are written as they
    are. The writer's sidecars (LLaMA-Factory's ``dataset_info.json``) are written too.
    """
    source = SampleSource(samples, boxes_from, image_root, settings)
    with Outputs(overwrite=overwrite) as outputs:
        run = Run(source, path, format, outputs, on_error=on_error, rejects=rejects, ids=ids)
        return run.execute().written


def convert(inputs, output, from_: str = "auto", to: str = "llava", *, overwrite: bool = False,
            on_error: str = "fail", rejects=None, image_root=None, image_prefix: str | None = None,
            seed: int = 0, settings: dict | None = None, boxes: str | None = None, ids: str | None = None,
            extract_images=None, show_progress: bool = False) -> Report:
    """Read every input with one reader, write one output with one writer.

    ``inputs``: file paths (read with ``from_`` and the reading keywords), or an :class:`Inputs`.

    Nothing is lost: each input record is written or rejected with a reason
    (``on_error="skip"`` writes rejects to ``rejects``, default ``OUTPUT.rejects.jsonl``).
    The output appears only if the whole run succeeds. Boxes in the text are rewritten
    when the reader's convention differs from the writer's (or ``boxes``, to override it).
    ``extract_images``: a folder to write every image into once (images held as bytes, for a
    writer whose trainer reads files), the records' paths then relative to it.
    """
    source = inputs if isinstance(inputs, Inputs) else Inputs(
        inputs, from_, image_root=image_root, image_prefix=image_prefix, seed=seed, settings=dict(settings or {}))
    with Outputs(source.sources, overwrite=overwrite) as outputs:
        run = Run(source, output, to, outputs, on_error=on_error, rejects=rejects, boxes=boxes, ids=ids,
                  extract_images=extract_images, show_progress=show_progress)
        return run.execute()
