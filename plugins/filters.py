"""curate's built-in filters (``curate filter``), plugins through ``register_filters`` like any
other. Each removal says why: the filter, a reason, and where it has one the measured value and
the threshold it crossed. Thresholds were chosen on bench/filter_quality.py (bench/README.md).

Defaults (what ``curate filter`` runs when no ``--filter`` is named) are the defects that break
a loader or leave nothing to learn: empty-answer, duplicate-sample, unreadable, wrong-format,
too-small, odd-aspect, flat. The judgments of quality (blurry, dark, light, low-info) and
too-long (which depends on the model's context) run when named.

Image filters judge every image of a sample (one failing image removes the sample), keep
text-only samples, and leave images they cannot read to ``unreadable``; they share one decoded
look per image (:mod:`curate.plugins.image_look`).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from types import MappingProxyType

import curate
from curate.image_source import ImageBytes
from curate.errors import CurateError
from curate.filter_report import MeasureHistogram, NearThreshold
from curate.progress import shown

from .image_look import LookObserver, format_mismatch, look


class CountedFilter(curate.Filter):
    """A filter that says its removals per source dataset (a note in the run's summary)."""

    order = 50

    def finish(self):
        if self.tally.removed:
            sources = ", ".join(f"{name} {count:,}" for name, count in self.removed_by_source.most_common())
            self.tally.notes.append(f"{self.name}: removed {self.tally.removed:,} samples ({sources})")


# --- image filters --------------------------------------------------------------------------

class ImageFilter(CountedFilter):
    """Judges each image of a sample with :meth:`judge` (a look -> None or a reason dict);
    images that cannot be read are ``unreadable``'s question, not this filter's."""

    reads_unreadable = False
    measures: tuple = ()          # the Look measures judge reads (taken in dedup's decode when it runs)
    shared: dict = {}             # image -> Look taken from dedup's decode (curate dedup --filter)

    def decode_observer(self):
        return LookObserver(self.measures)

    def take_observed(self, observed):
        self.shared = observed.get(LookObserver.name, {})

    def decide(self, item):
        for image in item.sample.images:
            if getattr(self.context.images, "root", None) is None and not isinstance(image, ImageBytes):
                raise CurateError(f"filter {self.name!r} reads images: give {curate.setting('image_root')}")
            seen = self.shared.get(image) or look(self.context.images, image)
            if seen.problem is not None and not self.reads_unreadable:
                continue
            outcome = self.judge(item, image, seen)
            if outcome is not None:
                return outcome
        return None

    def judge(self, item, image, seen):
        """None to keep ``image`` (of ``item``'s sample), a dict saying why to remove the sample."""
        raise NotImplementedError


def threshold_setting(filter_name: str, kind, default, low=None, high=None, unit: str = "") -> tuple[curate.Setting]:
    """The settings of a threshold filter: its threshold, ``NAME_threshold`` (``--filter NAME=VALUE``)."""
    return (curate.Setting(filter_name.replace("-", "_") + "_threshold", kind, default, minimum=low, maximum=high,
                           help=f"{filter_name} filter: its threshold{unit} (as --filter {filter_name}=N)."),)


class ThresholdFilter(ImageFilter):
    """An image filter that compares one measure with a threshold (its one setting)."""

    measure = ""
    below = True            # True: a value under the threshold removes; False: over it
    unit = ""
    chart = (0.0, 1.0, False)       # the histogram's range in the report: low, high, logarithmic

    @property
    def threshold(self):
        return self.values[self.settings[0].name]

    @cached_property
    def near(self) -> NearThreshold:
        """The images measured nearest the threshold, on both sides (for the filter report)."""
        return NearThreshold(self.threshold)

    @cached_property
    def histogram(self) -> MeasureHistogram:
        """Where the measure of every image judged fell (for the filter report)."""
        return MeasureHistogram(*self.chart[:2], log=self.chart[2])

    def value(self, seen) -> float:
        raise NotImplementedError

    def judge(self, item, image, seen):
        value = self.value(seen)
        self.histogram.add(value)
        removed = (value < self.threshold) if self.below else (value > self.threshold)
        self.near.add(value, removed, lambda: {"id": item.sample.id, "image": image, "source": item.sample.source})
        if removed:
            side = "under" if self.below else "over"
            return {"reason": f"{self.measure} {value:.3g}{self.unit} is {side} {self.threshold:g}{self.unit}",
                    "measure": self.measure, "value": round(value, 4), "threshold": self.threshold}
        return None

    def details(self):
        return {"measure": self.measure, "threshold": self.threshold, "unit": self.unit,
                "removes": "under" if self.below else "over", "near_threshold": self.near.as_json(),
                "histogram": self.histogram.as_json()}


class Unreadable(ImageFilter):
    name = "unreadable"
    description = "drop samples whose image is missing, truncated or cannot be decoded (default)"
    default, order = True, 10
    reads_unreadable = True

    def judge(self, item, image, seen):
        return {"reason": seen.problem} if seen.problem is not None else None


class WrongFormat(ImageFilter):
    name = "wrong-format"
    description = ("drop samples whose image is not the format its name says, a GIF named .jpg (LLaVA #593); "
                   "loaders that decode by extension fail on them. Not a default: Pillow-based loaders (LLaVA, "
                   "Qwen, InternVL) read them by their content")
    order = 11

    def judge(self, item, image, seen):
        mismatch = format_mismatch(image, seen.format)
        return {"reason": mismatch, "format": seen.format} if mismatch else None


class TooSmall(ThresholdFilter):
    name = "too-small"
    description = "drop samples whose image has a side under N pixels (too-small=N, default 32)"
    default, order = True, 12
    measure, unit = "shorter side", " px"
    settings = threshold_setting("too-small", int, 32, low=1, unit=" in pixels")
    chart = (4.0, 4096.0, True)

    def value(self, seen):
        return min(seen.size)


class OddAspect(ThresholdFilter):
    name = "odd-aspect"
    description = ("drop samples whose image's long side is over N times its short side (odd-aspect=N, "
                   "default 200: Qwen2-VL's smart_resize refuses such images)")
    default, order = True, 13
    measure, below = "aspect ratio", False
    settings = threshold_setting("odd-aspect", float, 200.0, low=1.0)
    chart = (1.0, 1000.0, True)

    def value(self, seen):
        return max(seen.size) / min(seen.size)


class Flat(ThresholdFilter):
    name = "flat"
    description = ("drop samples whose image is one flat colour or nearly: every channel's standard deviation "
                   "under N grey levels (flat=N, default 3). Not a default: its conversation may still teach")
    order = 14
    measure = "spread"
    settings = threshold_setting("flat", float, 3.0, low=0.0, high=255.0, unit=" in grey levels")
    chart = (0.25, 128.0, True)
    measures = ("spread",)

    def value(self, seen):
        return seen.spread


class Blurry(ThresholdFilter):
    name = "blurry"
    description = ("drop samples whose image is blurred at 384 px: Crete-Roffet blur over N "
                   "(blurry=N from 0 to 1, default 0.55)")
    measure, below = "blur", False
    settings = threshold_setting("blurry", float, 0.55, low=0.0, high=1.0)
    measures = ("blur",)

    def value(self, seen):
        return seen.blur


class Dark(ThresholdFilter):
    name = "dark"
    description = ("drop samples whose image is too dark: the 99th percentile of brightness under N "
                   "(dark=N from 0 to 1, default 0.17; cleanvision's score, its default 0.32)")
    measure = "99th percentile of brightness"
    settings = threshold_setting("dark", float, 0.17, low=0.0, high=1.0)
    measures = ("dark_score",)

    def value(self, seen):
        return seen.dark_score


class Light(ThresholdFilter):
    name = "light"
    description = ("drop samples whose image is too light: the 5th percentile of brightness over N "
                   "(light=N from 0 to 1, default 0.83; cleanvision flags over 0.95)")
    measure, below = "5th percentile of brightness", False
    settings = threshold_setting("light", float, 0.83, low=0.0, high=1.0)
    measures = ("light_score",)

    def value(self, seen):
        return seen.light_score


class LowInfo(ThresholdFilter):
    name = "low-info"
    description = ("drop samples whose image holds little information: RGB histogram entropy under N bits "
                   "(low-info=N, default 3.5; cleanvision's 3.0)")
    measure, unit = "entropy", " bits"
    settings = threshold_setting("low-info", float, 3.5, low=0.0, high=16.0, unit=" in bits")
    chart = (0.0, 10.0, False)
    measures = ("entropy",)

    def value(self, seen):
        return seen.entropy


# --- sample filters -------------------------------------------------------------------------

class DuplicateSample(CountedFilter):
    name = "duplicate-sample"
    description = "drop a sample with the same image(s) and the same conversation as an earlier one (default)"
    default, order = True, 2

    def __init__(self, exclusions=None):
        super().__init__(exclusions)
        self.seen: dict[bytes, str] = {}       # 16-byte digest -> the first sample's id, shown

    def decide(self, item):
        sample = item.sample
        digest = hashlib.blake2b(digest_size=16)
        for part in (repr(sample.images), *(f"{t.role}\0{t.text}" for t in sample.conversations)):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\1")
        key = digest.digest()
        first = self.seen.get(key)
        if first is None:
            self.seen[key] = shown(repr(sample.id))
            return None
        return {"reason": f"the same image and conversation as sample {first}", "first": first}


class EmptyAnswer(CountedFilter):
    name = "empty-answer"
    description = "drop samples with an empty or whitespace-only answer, or no answer at all (default)"
    default, order = True, 1

    def decide(self, item):
        answers = [turn for turn in item.sample.conversations if turn.role == "gpt"]
        if not answers:
            return {"reason": "no answer (no gpt turn)"}
        for number, turn in enumerate(answers, 1):
            if not turn.text.strip():
                return {"reason": f"answer {number} is empty", "turn": number}
        return None


class TooLong(CountedFilter):
    name = "too-long"
    description = ("drop samples whose conversation is over N characters (too-long=N), or N tokens of a "
                   "tokenizer (too-long=N:tiktoken/cl100k_base, too-long=N:hf/path/to/tokenizer.json)")
    order = 3
    settings = (curate.Setting("too_long_limit", int, 16_000, minimum=1,
                               help="too-long filter: the longest conversation kept (as --filter too-long=N)."),
                curate.Setting("too_long_tokenizer", help="too-long filter: count the tokens of tiktoken/ENCODING "
                                                          "or hf/FILE instead of characters (too-long=N:TOKENIZER)."))
    count, unit = len, "characters"

    @property
    def limit(self) -> int:
        return self.values["too_long_limit"]

    def configure(self, value):
        """``N`` or ``N:TOKENIZER``."""
        number, colon, tokenizer = value.partition(":")
        super().configure(number)
        if colon:
            self.values = MappingProxyType({**self.values, "too_long_tokenizer": tokenizer})

    def process(self, items, context):
        tokenizer = self.values["too_long_tokenizer"]
        if tokenizer:
            self.count, self.unit = load_tokenizer(self.name, tokenizer), f"{tokenizer} tokens"
        yield from super().process(items, context)

    def decide(self, item):
        text = "\n".join(turn.text for turn in item.sample.conversations)
        size = self.count(text) if len(text) > self.limit or self.count is not len else len(text)
        if size > self.limit:
            return {"reason": f"{size:,} {self.unit}, over {self.limit:,}", "length": size, "limit": self.limit}
        return None

    def details(self):
        return {"limit": self.limit, "unit": self.unit}


def load_tokenizer(filter_name: str, spec: str):
    """A function counting the tokens of a text, for ``tiktoken/ENCODING`` or ``hf/FILE``."""
    kind, _, name = spec.partition("/")
    try:
        if kind == "tiktoken":
            import tiktoken
            encoding = tiktoken.get_encoding(name)
            return lambda text: len(encoding.encode(text, disallowed_special=()))
        if kind == "hf":
            from tokenizers import Tokenizer
            tokenizer = Tokenizer.from_file(name)
            return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
    except ImportError as e:
        raise CurateError(f"filter {filter_name!r}: the tokenizer {spec!r} needs {e.name}, which is not installed "
                          f"(pip install {e.name}, or give a character limit: {filter_name}=N)") from None
    except Exception as e:       # an unknown encoding, a missing file, no network for a download
        raise CurateError(f"filter {filter_name!r}: cannot load the tokenizer {spec!r} "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    raise CurateError(f"filter {filter_name!r}: a tokenizer is tiktoken/ENCODING or hf/FILE, not {spec!r}")


FILTERS = (EmptyAnswer, DuplicateSample, TooLong, Unreadable, WrongFormat, TooSmall, OddAspect, Flat, Blurry,
           Dark, Light, LowInfo)


@curate.hookimpl
def register_filters(register):
    for cls in FILTERS:
        register(cls)
