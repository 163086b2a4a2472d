"""curate: convert and deduplicate visual instruction-tuning datasets.

>>> import curate
>>> samples = curate.read("llava_v1_5_mix665k.json")            # lazily, one Sample at a time
>>> curate.write(samples, "mix.jsonl", "llava")                  # atomically
>>> report = curate.convert(["svit.json"], "out.json", "auto", "llava")
>>> found = curate.identify_duplicates(curate.Inputs(["mix.json"], image_root="data"),
...                                    curate.EmbedderSpec("timm-pool"))

Plugins implement the contracts exported here (:class:`Reader`, :class:`Writer`,
:class:`Embedder` and its :class:`LoadedEmbedder`, :class:`IndexKind` and its
:class:`SimilarityIndex`) and register them with ``@curate.hookimpl`` hooks.
"""

from .hookspecs import hookimpl
from .sample import Sample, Turn, source_of
from .errors import CurateError, RecordError
from .contracts import (Embedder, IndexKind, LoadedEmbedder, Options, Reader, SimilarityIndex, Writer,
                        head_has_keys, samples_from_json)
from .engine import Inputs, Report
from .api import convert, read, write
from .dedup import (DedupResult, Duplicates, EmbedderSpec, EmbedSettings, Embeddings, ReportSettings,
                    SearchSettings, dedup, embed, identify_duplicates)

__all__ = ["Sample", "Turn", "source_of", "hookimpl", "CurateError", "RecordError",
           "Reader", "Writer", "Options", "Embedder", "LoadedEmbedder", "IndexKind", "SimilarityIndex",
           "head_has_keys", "samples_from_json",
           "Inputs", "Report", "read", "write", "convert",
           "EmbedderSpec", "EmbedSettings", "SearchSettings", "ReportSettings", "Embeddings", "Duplicates",
           "DedupResult", "embed", "identify_duplicates", "dedup"]
