"""curate: convert and deduplicate visual instruction-tuning datasets.

>>> import curate
>>> samples = curate.read("llava_v1_5_mix665k.json")            # lazily, one Sample at a time
>>> curate.write(samples, "mix.jsonl", "llava")                  # atomically
>>> report = curate.convert(["svit.json"], "out.json", "auto", "llava")
"""

from .hookspecs import hookimpl
from .sample import Sample, Turn, source_of
from .errors import CurateError, RecordError
from .api import convert, read, write, Report

__all__ = ["Sample", "Turn", "source_of", "hookimpl", "CurateError", "RecordError",
           "read", "write", "convert", "Report"]
