"""Rich progress bars on stderr that cost nothing on the hot path and stay silent when piped."""

from __future__ import annotations

import re
import time
from typing import Iterable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

stderr_console = Console(stderr=True)
# C0 and C1 control characters (ESC starts terminal escape sequences; a newline in a file name
# would split a one-line message), shown, never sent raw.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


SHOWN_CHARS = 64                     # of any one string from the data: an id, a path, a source, a reason


def shown(value) -> str:
    """A string from the data as a page or a message shows it: whole up to SHOWN_CHARS characters,
    else its start and its end around an ellipsis (report.json keeps it whole). Escaped, a
    character costs at most 6 bytes, so every string costs a page a bounded number of bytes."""
    value = str(value)
    if len(value) <= SHOWN_CHARS:
        return value
    half = (SHOWN_CHARS - 1) // 2
    return value[:half] + "…" + value[-half:]


def plain(value) -> str:
    """Text from the data made safe for a terminal: control characters become visible escapes."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), str(value))


def safe(value) -> str:
    """:func:`plain`, with rich markup escaped too (``[/]`` in an id must not become markup)."""
    from rich.markup import escape
    return escape(plain(value))
_UPDATE_EVERY = 2048


class _RateColumn(ProgressColumn):
    """Items per second, from the ``items`` field (the bar itself may count bytes)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        items = task.fields.get("items", 0)
        rate = items / elapsed if elapsed > 0 else 0.0
        return Text(f"{items:,} {self.unit} ({rate:,.0f}/s)", style="cyan")


class ProgressBar:
    """A bar over a known total (bytes, images) with an item count and rate beside it."""

    def __init__(self, description: str, total: float | None, unit: str = "records",
                 enabled: bool = True):
        self.enabled = enabled and stderr_console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
            _RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=stderr_console, disable=not self.enabled, transient=False)
        self.task = self.progress.add_task(description, total=total, items=0)
        self.items = 0
        self._last = 0.0
        self._pending = 0.0          # advance not drawn yet (add)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.update(self.task, advance=self._pending, items=self.items, refresh=True)
        self.progress.stop()

    def advance(self, amount: float) -> None:
        """Advance the bar (bytes read, for instance)."""
        if self.enabled:
            self.progress.advance(self.task, amount + self._pending)
            self._pending = 0.0

    def count(self, items: Iterable) -> Iterator:
        """Pass items through, counting them for the rate column (as they are, with no bar)."""
        return self._counted(items) if self.enabled else iter(items)

    def _counted(self, items: Iterable) -> Iterator:
        update_every = _UPDATE_EVERY
        for item in items:
            self.items += 1
            if self.items % update_every == 0:
                now = time.monotonic()
                if now - self._last > 0.1:
                    self._last = now
                    self.progress.update(self.task, items=self.items)
            yield item

    def add(self, items: int, amount: float) -> None:
        """Count ``items`` more and advance the bar by ``amount``, redrawing at most every 0.1 s
        (cheap enough to call per image)."""
        if not self.enabled:
            return
        self.items += items
        self._pending += amount
        now = time.monotonic()
        if now - self._last > 0.1:
            self._last = now
            self.progress.update(self.task, advance=self._pending, items=self.items)
            self._pending = 0.0

    def set_items(self, items: int) -> None:
        self.items = items
        if self.enabled:
            self.progress.update(self.task, items=items)
