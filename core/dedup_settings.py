"""Dedup's settings: which model embeds (:class:`EmbedderSpec`), how the embedding runs
(:class:`EmbedSettings`) and how duplicates are decided (:class:`SearchSettings`, with the
signals dedup uses unless told otherwise), apart from the work they steer, so that the command
line reads its defaults without loading the dedup machinery."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .contracts import EMBEDDING, LoadedEmbedder
from .errors import CurateError, setting
from .registry import get_registry
from .settings import configured, values_for
from .verification import DEFAULT_VERIFIER, NONE

# The signals dedup uses unless told otherwise (measured with bench/quality.py: each adds what
# the others miss, at no false removal).
DEFAULT_SIGNALS = ("exact", EMBEDDING, "phash")
SCOPES = ("source", "global")
ENGINES = ("local", "ray")
DEFAULT_THRESHOLD = 0.9            # for an embedder that declares none


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "curate" / "embeddings"


# --- settings ---------------------------------------------------------------------------------

@dataclass
class EmbedderSpec:
    """Which model embeds the images. ``settings``: the run's settings (``Inputs.settings``,
    set by :func:`curate.embed` and :func:`curate.identify_duplicates`), of which the embedder
    gets the ones it declares."""

    name: str = "vit-cls"
    model: str | None = None
    weights: Path | None = None
    device: str = "auto"
    settings: dict = field(default_factory=dict)

    @property
    def plugin(self):
        return get_registry().get("embedder", self.name)

    @property
    def values(self) -> dict:
        """The typed values of the embedder's declared settings."""
        return values_for(self.plugin, self.settings)

    def load(self) -> LoadedEmbedder:
        weights = str(self.weights) if self.weights else None
        return self.plugin.load(self.model, weights, self.device, **self.values)

    def for_workers(self) -> dict:
        """What a Ray actor needs to load the same model (absolute paths: it runs elsewhere)."""
        return {"embedder": self.name, "model": self.model, "device": self.device, "settings": self.values,
                "weights": str(Path(self.weights).absolute()) if self.weights else None}


@dataclass
class EmbedSettings:
    """How the embedding stage runs."""

    cache_dir: Path | None = None        # None: no cache
    batch_size: int = 32
    workers: int = 2
    decode: str = "auto"                 # threads, processes, device, or auto (see decodes_on_device)
    engine: str = "local"                # local or ray
    ray_address: str | None = None
    show_progress: bool = False

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise CurateError(f"{setting('engine')} must be one of {', '.join(ENGINES)}, not {self.engine!r}")


@dataclass
class SearchSettings:
    """How duplicates are decided: the embedding's thresholds (the output is filtered at the
    first; None: the embedder's own default), the other signals (``NAME`` or ``NAME=VALUE`` in
    the signal's unit, in the order their matches are recorded; ``embedding`` marks the
    embedding's place), scope and index. ``settings``: the run's settings (``Inputs.settings``,
    set by :func:`curate.identify_duplicates`), of which the index, the signals and the verifier
    get the ones they declare."""

    thresholds: tuple | None = None
    scope: str = "source"
    index: str = "auto"
    signals: tuple = DEFAULT_SIGNALS
    verify: str = DEFAULT_VERIFIER       # the verifier that confirms each removal; "none": the signals decide
    settings: dict = field(default_factory=dict)

    @property
    def index_kind(self):
        return get_registry().get("index", self.index)

    @property
    def index_options(self) -> dict:
        """The typed values of the index's declared settings (hnsw: hnsw_m, ...)."""
        return values_for(self.index_kind, self.settings)

    @property
    def verifier(self):
        """The verifier plugin (configured with its settings), or None with ``verify="none"``."""
        return None if self.verify == NONE else configured(get_registry().get("verifier", self.verify), self.settings)

    def components(self) -> list[tuple[str, object]]:
        """The index, signals and verifier these settings use, as ``(kind, plugin)`` pairs."""
        found = [("index", self.index_kind)] + [("signal", plugin) for _, plugin, _ in self.resolved_signals() if plugin]
        return found + ([("verifier", self.verifier)] if self.verifier is not None else [])

    @property
    def intent(self) -> str:
        """What this run removes, in words for the summary and the report."""
        if self.verify == NONE:
            return "similar images (thinning by similarity, no verification)"
        return f"verified near-duplicates (verifier: {self.verify})"

    def __post_init__(self):
        if self.thresholds:
            self.thresholds = tuple(dict.fromkeys(float(t) for t in self.thresholds))
            for t in self.thresholds:
                if not -1.0 <= t <= 1.0:
                    raise CurateError(f"{setting('threshold')} {t}: a cosine similarity must lie in [-1, 1]")
        else:
            self.thresholds = None
        if self.scope not in SCOPES:
            raise CurateError(f"{setting('scope')} must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        self.signals = tuple(self.signals)
        names = [entry.partition("=")[0] for entry in self.signals]
        if EMBEDDING not in names:
            raise CurateError(f"{setting('signals')} must name {EMBEDDING} (dedup always embeds; "
                              f"{setting('signals')} {EMBEDDING} uses the embedding alone)")
        if len(set(names)) != len(names):
            raise CurateError(f"{setting('signals')} names a signal twice: {','.join(self.signals)}")
        if any(entry.startswith(EMBEDDING + "=") for entry in self.signals):
            raise CurateError(f"{setting('signals')}: the embedding's threshold is set with {setting('threshold')}")

    def with_model_default(self, model: LoadedEmbedder) -> "SearchSettings":
        """These settings with the embedder's own default threshold when the user gave none."""
        if self.thresholds:
            return self
        default = model.default_threshold if getattr(model, "default_threshold", None) is not None \
            else DEFAULT_THRESHOLD
        return dataclasses.replace(self, thresholds=(float(default),))

    def resolved_signals(self) -> list[tuple[str, object, float | None]]:
        """Every signal in order: (name, its plugin, its threshold as a cosine similarity); the
        embedding is (``embedding``, None, None), its thresholds being ``thresholds``."""
        from .embedding import checked_similarity
        out = []
        registry = get_registry()
        for entry in self.signals:
            name, sep, value = entry.partition("=")
            if name == EMBEDDING:
                out.append((name, None, None))
                continue
            signal = configured(registry.get("signal", name), self.settings)
            try:
                wanted = float(value) if sep else signal.default
            except ValueError:
                raise CurateError(f"{setting('signals')} {entry}: {value!r} is not a number") from None
            out.append((name, signal, checked_similarity(signal, wanted)))
        return out
