"""Running filter stages over a dataset: ``curate filter`` (plugins chosen by name) and
``curate apply`` (an earlier dedup's decisions) are both one run of the engine with filters
between the reader and the writer, their removals in one exclusion file."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from .atomic import Outputs
from .engine import Inputs, Report, Run, default_writer
from .errors import CurateError, setting
from .filter_report import CountSources, FilterReportFiles, write_reports
from .registry import get_registry, plugin_call
from .settings import values_for
from .stages import Filter


def parse_filter(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=VALUE`` (as ``--filter`` takes it)."""
    name, equals, value = text.partition("=")
    if not name.strip():
        raise CurateError(f"{setting('filter')} {text!r}: name a filter (NAME or NAME=VALUE)")
    return name.strip(), value if equals else None


def default_filters(registry) -> list[str]:
    """The filters that run when none is named: those whose class says ``default = True``,
    cheapest first (their ``order``)."""
    found = [(getattr(registry.get("filter", name), "order", 100), name) for name in registry.names("filter")
             if getattr(registry.get("filter", name), "default", False)]
    return [name for _, name in sorted(found)]


def filter_stages(specs: list[tuple[str, str | None]], given: dict | None = None) -> list[Filter]:
    """A fresh, configured stage for each ``(name, value)``, in the order given; no specs: the
    default filters (:func:`default_filters`). Each takes its settings from ``given`` (the run's
    settings, ``Inputs.settings``), then ``value`` as its primary one."""
    registry = get_registry()
    if not specs:
        specs = [(name, None) for name in default_filters(registry)]
        if not specs:
            installed = ", ".join(registry.names("filter")) or "none"
            raise CurateError(f"name at least one filter with {setting('filter')} NAME[=VALUE] (installed: "
                              f"{installed}; none is a default)")
    stages = []
    for name, value in specs:
        registered = registry.get("filter", name)
        with plugin_call("filter", registered):
            stage = type(registered)()
            stage.values = MappingProxyType(values_for(stage, given or {}))
            if value is not None:
                stage.configure(value)
                stage.setting = value
        stages.append(stage)
    return stages


def run_filters(inputs: Inputs, output, filters: list[Filter], *, to: str | None = None, removed=None,
                on_error: str = "fail", rejects=None, boxes: str | None = None, ids: str | None = None,
                extract_images=None, overwrite: bool = False, show_progress: bool = False, extra_sources=(),
                report_dir=None) -> Report:
    """Write ``inputs`` to ``output`` through ``filters``; what they remove goes, with why, to
    ``removed`` (default ``OUTPUT.removed.jsonl``), and with ``report_dir`` the filter report
    (:mod:`curate.filter_report`) to that folder. All files appear together or not at all."""
    output = Path(output)
    with Outputs([*inputs.sources, *extra_sources], overwrite=overwrite) as outputs:
        run = Run(inputs, output, to or default_writer(inputs), outputs, on_error=on_error, rejects=rejects,
                  boxes=boxes, ids=ids, extract_images=extract_images, show_progress=show_progress, title="filter",
                  components=[("filter", stage) for stage in filters])
        removed_path = outputs.claim(Path(removed) if removed else output.with_name(output.name + ".removed.jsonl"),
                                     "removed list", overwrite=True)
        for stage in filters:
            stage.exclusions = removed_path
        files = FilterReportFiles.claim(outputs, Path(report_dir)) if report_dir is not None else None
        sources = CountSources()            # for the report only (curate apply has none)
        report = run.execute([sources, *filters] if files is not None else filters)
        if files is not None:
            write_reports(files, outputs, report, filters, sources, removed_path, inputs.image_root)
    report.notes.append(f"{report.removed:,} removed samples, each with why, in {removed_path}")
    if files is not None:
        report.notes.append(f"filter report: {files.html}")
    return report
