"""Errors that the CLI turns into one-line messages (never a traceback)."""

from __future__ import annotations


import re

_SETTING = re.compile("\ue000([A-Za-z_][A-Za-z0-9_]*)\ue001")


def setting(name: str) -> str:
    """A setting named in a message: the command line shows its flag (``--svit-task``), the
    Python API its keyword (``svit_task``); see :meth:`CurateError.for_command_line`."""
    return f"\ue000{name}\ue001"


def as_flags(text: str) -> str:
    """``text`` with the settings it names shown as command-line flags."""
    return _SETTING.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


class CurateError(Exception):
    """Any failure caused by the user's input, arguments or environment. Its text names
    settings as the Python API spells them; :meth:`for_command_line` as the CLI does."""

    def __str__(self) -> str:
        return _SETTING.sub(lambda m: m.group(1), super().__str__())

    def for_command_line(self) -> str:
        return as_flags(super().__str__())


class PluginConflictError(CurateError):
    """Two installed packages provide a component with the same name."""


class RecordError(CurateError):
    """A record that cannot be read or written, located as precisely as we can.

    The message names the file, the record (index and id) or the line and
    column, and the field, so that a user can find it in a million-record file.
    """

    def __init__(self, path, reason, *, index=None, record_id=None, field=None,
                 line=None, column=None):
        self.path = str(path) if path is not None else None
        self.reason = reason
        self.index = index
        self.record_id = record_id
        self.field = field
        self.line = line
        self.column = column
        super().__init__(self.describe())

    def location(self) -> str:
        parts = [self.path or "<input>"]
        if self.line is not None:
            parts.append(f"line {self.line}" + (f", column {self.column}" if self.column is not None else ""))
        if self.index is not None:
            parts.append(f"record {self.index}")
        if self.record_id is not None:
            parts.append(f"id {self.record_id!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]

    def describe(self) -> str:
        return f"{self.location()}: {self.reason}"
