"""README's "Writing a plugin" teaches from the exported contracts: its hook table lists every
hook of curate.hookspecs, and every ``curate.Name`` it shows a plugin author is importable from
``curate`` itself (one import surface)."""

import re
from pathlib import Path

import curate
from curate import hookspecs

README = Path(__file__).resolve().parents[1] / "README.md"


def plugin_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## Writing a plugin"):text.index("## Development")]


def test_the_hook_table_lists_every_hook():
    hooks = {name for name in dir(hookspecs) if name.startswith("register_")}
    listed = set(re.findall(r"^\| `(register_\w+)\(", plugin_section(), re.MULTILINE))
    assert hooks and listed == hooks


def test_every_name_the_plugin_guide_uses_is_importable_from_curate():
    names = set(re.findall(r"\bcurate\.([A-Z]\w*|hookimpl|setting)\b", plugin_section()))
    assert {"Filter", "Stage", "Setting", "Reader", "UnreadableImage"} <= names
    missing = sorted(name for name in names if not hasattr(curate, name))
    assert not missing
    assert {"Filter", "Stage", "StageContext", "Item", "Tally", "Setting", "Verdict"} <= set(curate.__all__)
