"""curate: convert and deduplicate visual instruction-tuning datasets.

>>> import curate
>>> samples = curate.read("llava_v1_5_mix665k.json")            # lazily, one Sample at a time
>>> curate.write(samples, "mix.jsonl", "llava")                  # atomically
>>> report = curate.convert(["svit.json"], "out.json", "auto", "llava")
>>> found = curate.identify_duplicates(curate.Inputs(["mix.json"], image_root="data"),
...                                    curate.EmbedderSpec("timm-pool"))

Plugins implement the contracts exported here (:class:`Reader`, :class:`Writer`,
:class:`Embedder` and its :class:`LoadedEmbedder`, :class:`IndexKind` and its
:class:`SimilarityIndex`, :class:`Signal`, :class:`Verifier`, :class:`Filter`, a :class:`Stage`),
declare their options with :class:`Setting` and register them with ``@curate.hookimpl`` hooks;
everything a plugin needs (:class:`Sample`, :class:`RecordError`, :class:`UnreadableImage`,
:class:`WholeImage`, :class:`BoxStyle`, ...) is importable from here.

Names are imported on first use, so ``import curate`` (and the command line's start-up)
stays cheap until something is needed.
"""

from importlib import import_module

_EXPORTS = {
    "hookspecs": ["hookimpl"],
    "sample": ["Sample", "Turn", "source_of"],
    "errors": ["CurateError", "RecordError", "setting"],
    "settings": ["Setting", "SettingError"],
    "images": ["UnreadableImage"],
    "preprocess": ["WholeImage"],
    "boxes": ["BoxStyle"],
    "contracts": ["Embedder", "IndexKind", "LoadedEmbedder", "Options", "Reader", "SimilarityIndex", "Writer",
                  "Sidecar", "Signal", "Verdict", "Verifier", "head_has_keys", "samples_from_json"],
    "engine": ["Inputs", "Report"],
    "stages": ["Filter", "Item", "Stage", "StageContext", "Tally"],
    "api": ["convert", "read", "write"],
    "decisions": ["Decisions", "apply"],
    "dedup_settings": ["EmbedderSpec", "EmbedSettings", "SearchSettings"],
    "deduplicate": ["DedupResult", "Duplicates", "Embeddings", "ReportSettings", "dedup", "embed",
                    "identify_duplicates"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'curate' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
