"""Typed settings of every component (reader, writer, embedder, index, signal, verifier,
filter): one declaration each.

A component lists its :class:`Setting` declarations (name, type, default, help, allowed values); from that
one declaration the command line makes its flag (``svit_task`` -> ``--svit-task``, shown on every
command that uses the component), ``-O svit_task=referring`` and the Python API
(``settings={"svit_task": "referring"}``, ``Inputs(settings=...)``) are parsed and checked the
same way, and a setting no component of the run declares is refused. The component gets the
typed values (defaults filled in) where it works: a reader or writer from
``options.setting("svit_task")``, an embedder as keywords of ``load()``, an index as keywords
of ``new()``, a signal, verifier or filter in ``self.values`` (a filter's first setting is also
the VALUE of ``--filter NAME=VALUE``). Two packages declaring one setting name is refused when
the second registers, naming both.

Messages name settings through :func:`curate.errors.setting`, so that the command line shows
``--svit-task`` and the Python API ``svit_task``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .errors import CurateError, setting

TYPES = (str, int, float, bool, Path)
# Options of curate's own commands: a component's setting may not take one of these names.
RESERVED = frozenset({"image_root", "image_prefix", "seed", "option", "options", "output", "overwrite", "on_error",
                      "rejects", "boxes", "ids", "extract_images", "quiet", "from_format", "to_format", "removed", "filter", "filters",
                      "threshold", "signals", "verify", "scope", "index", "embedder", "model", "weights", "cache",
                      "device", "decode", "engine", "workers", "batch_size", "report", "help"})


class SettingError(CurateError):
    """A value a setting does not take."""


@dataclass(frozen=True)
class Setting:
    """One typed setting. ``choices``: the allowed values (strings); ``minimum``/``maximum``:
    bounds of a number; ``default``: what the component gets when the user gives nothing."""

    name: str
    type: type = str
    default: object = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"setting name {self.name!r} must be a Python identifier (svit_task)")
        if self.type not in TYPES:
            raise ValueError(f"setting {self.name!r}: type must be one of {', '.join(t.__name__ for t in TYPES)}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value):
        """``value`` (typed, or a string from ``-O``) as this setting's type, checked."""
        if value is None:
            return self.default
        value = self._typed(value)
        if self.choices and value not in self.choices:
            raise self.error(f"must be one of {', '.join(self.choices)}, not {value!r}")
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f"lie in {_number(low)}..{_number(high)}" if low is not None and high is not None else
                      f"be at least {_number(low)}" if low is not None else f"be at most {_number(high)}")
            raise self.error(f"must {bounds}, not {_number(value)}")
        return value

    def error(self, reason: str) -> "SettingError":
        return SettingError(f"{setting(self.name)}: {reason}")

    def describe(self) -> str:
        """What a value must be, in words: ``a whole number of at least 1``, ``one of a, b``."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.type in (int, float):
            low, high = self.minimum, self.maximum
            bounds = (f" from {low} to {high}" if low is not None and high is not None else
                      f" of at least {low}" if low is not None else f" of at most {high}" if high is not None else "")
            return ("a whole number" if self.type is int else "a number") + bounds
        return {bool: "true or false", Path: "a path", str: "text"}[self.type]

    def _typed(self, value):
        kind = self.type
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                return value.lower() in ("1", "true", "yes")
            raise self.error(f"must be true or false, not {value!r}")
        if kind in (int, float):
            if isinstance(value, bool):
                raise self.error(f"must be a number, not {value!r}")
            if isinstance(value, str):
                try:
                    value = kind(value.replace("_", ""))
                except ValueError:
                    raise self.error(f"must be {'a whole number' if kind is int else 'a number'}, "
                                     f"not {value!r}") from None
            if kind is int and not isinstance(value, int) or kind is float and not isinstance(value, (int, float)):
                raise self.error(f"must be {'a whole number' if kind is int else 'a number'}, not {value!r}")
            if kind is float and value != value or value in (float("inf"), float("-inf")):
                raise self.error(f"must be a finite number, not {value!r}")
            return kind(value)
        if kind is Path:
            if not isinstance(value, (str, Path)):
                raise self.error(f"must be a path, not {value!r}")
            return Path(value)
        if not isinstance(value, str):
            raise self.error(f"must be text, not {value!r}")
        return value


def _number(value) -> str:
    text = "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)
    return text if len(text) <= 40 else text[:18] + "…" + text[-18:]


def declared(components) -> dict[str, Setting]:
    """The settings ``components`` declare, by name (a name two of them share is one setting)."""
    found: dict[str, Setting] = {}
    for component in components:
        for one in getattr(component, "settings", ()) or ():
            found.setdefault(one.name, one)
    return found


def resolve(given: dict, settings: dict[str, Setting]) -> dict:
    """The values of ``settings`` (parsed, defaults filled) from ``given`` (names -> values)."""
    return {name: one.parse(given.get(name)) for name, one in settings.items()}


def values_for(component, given: dict) -> dict:
    """The typed values of the settings ``component`` declares, from ``given``."""
    return resolve(given, declared([component]))


def configured(component, given: dict):
    """``component`` (a signal, verifier or filter) for one run: a copy whose ``values`` holds
    the typed values of its declared settings from ``given``; itself when it declares none."""
    if not component.settings:
        return component
    one = copy.copy(component)
    one.values = MappingProxyType(values_for(component, given))
    return one


def refuse_unknown(given: dict, components) -> None:
    """A name in ``given`` that none of ``components`` (``(kind, component)`` pairs: every
    component of one run) declares is an error naming the settings they do take."""
    known = declared(component for _, component in components)
    unknown = sorted(set(given) - set(known))
    if unknown:
        kinds = list(dict.fromkeys(kind for kind, _ in components))
        who = " or ".join(kinds) if len(kinds) < 3 else ", ".join(kinds[:-1]) + " or " + kinds[-1]
        raise CurateError(f"no {who} of this run takes the setting {unknown[0]!r} "
                          f"(theirs: {', '.join(sorted(known)) or 'none'})")
