"""The ``curate`` command line: click for commands, rich for tables and progress."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import api
from .errors import CurateError
from .registry import KINDS, get_registry, register_commands
from .progress import ProgressBar, stderr_console
from .stats import PLACEMENTS, summarise

stdout_console = Console()


def fail(message: str) -> None:
    """One line on stderr, exit code 1: the contract for every user-facing failure."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _warn_plugin_problems() -> None:
    for warning in get_registry().warnings:
        stderr_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


class CurateGroup(click.Group):
    """Turns CurateError (and broken pipes, Ctrl-C) into one-line errors, never tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CurateError as e:
            fail(str(e))
        except KeyboardInterrupt:
            click.echo("error: interrupted; no output was written", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)
        except OSError as e:  # disk full, permission denied, ...
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}")
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:
            if os.environ.get("CURATE_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (run with CURATE_DEBUG=1 for a traceback, "
                 f"and please report it)")


def parse_options(values) -> dict[str, str]:
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CurateError(f"-O/--option takes KEY=VALUE, not {item!r}")
        options[key.strip()] = value
    return options


@click.group(cls=CurateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="curate")
def cli():
    """curate: convert and deduplicate visual instruction-tuning datasets.

    Formats, embedders and indexes are plugins; `curate plugins` lists what is installed.
    """


@cli.command()
@click.argument("from_format", metavar="FROM")
@click.argument("to_format", metavar="TO")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write (.jsonl for JSON Lines where the writer supports it).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (never an input).")
@click.option("--on-error", type=click.Choice(api.ON_ERROR), default="fail", show_default=True,
              help="fail: stop at the first bad record, write nothing. skip: set bad records "
                   "aside in the rejects file with their reason, and go on.")
@click.option("--rejects", type=click.Path(path_type=Path), default=None,
              help="Where skipped records go (JSON Lines) [default: OUTPUT.rejects.jsonl].")
@click.option("--image-root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder that image paths are relative to (formats that need image files).")
@click.option("--image-prefix", default=None,
              help="Folder to put before bare image file names, e.g. coco/train2017.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for formats that draw at random (same input and seed, same output).")
@click.option("-O", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="An option for a plugin's reader or writer; repeat for several.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
def convert(from_format, to_format, inputs, output, overwrite, on_error, rejects, image_root,
            image_prefix, seed, options, quiet):
    """Convert INPUT files from format FROM to format TO.

    FROM may be `auto` to recognise each input by its content. Output is written
    atomically: it appears complete or not at all.

    \b
    Example:
      curate convert llava sharegpt4v llava_v1_5_mix665k.json -o mix.jsonl
    """
    _warn_plugin_problems()
    report = api.convert(inputs, output, from_format, to_format, overwrite=overwrite,
                         on_error=on_error, rejects=rejects, image_root=image_root,
                         image_prefix=image_prefix, seed=seed, extra=parse_options(options),
                         show_progress=not quiet)
    if not quiet:
        print_report(report)


def print_report(report: api.Report) -> None:
    table = Table(title=f"{report.reader} → {report.writer}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = report.records_in / report.seconds if report.seconds else 0
    table.add_row("input records", f"{report.records_in:,}")
    table.add_row("written", f"{report.written:,}")
    table.add_row("removed", f"{report.removed:,}")
    table.add_row("rejected", f"{report.rejected:,}")
    table.add_row("time", f"{report.seconds:.2f} s ({rate:,.0f} records/s)")
    stderr_console.print(table)
    for note in report.notes:
        stderr_console.print(f"note: {note}", highlight=False)
    stderr_console.print(f"wrote {report.output}", highlight=False)
    if report.rejects_path:
        stderr_console.print(f"[yellow]{report.rejected:,} rejected records, with reasons, in "
                             f"{report.rejects_path}[/]", highlight=False)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--from", "from_format", default="auto", show_default=True,
              help="Format of the inputs (auto: recognise by content).")
@click.option("--on-error", type=click.Choice(api.ON_ERROR), default="fail", show_default=True,
              help="fail: stop at the first bad record. skip: leave bad records out of the counts.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def inspect(inputs, from_format, on_error, as_json):
    """Summarise datasets: per source, samples, unique images, text-only samples, turns
    and where `<image>` sits in the first turn (prefix, suffix, middle, none)."""
    _warn_plugin_problems()
    total_bytes = sum(p.stat().st_size for p in inputs if p.is_file())
    with ProgressBar("inspect", total_bytes, enabled=not as_json) as bar:
        def samples():
            for path in inputs:
                yield from api.read(path, from_format, on_error=on_error, progress=bar.advance)
        rows = summarise(bar.count(samples()))
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    table = Table(title=", ".join(str(p) for p in inputs))
    for name in ("source", "samples", "images", "text-only", "turns", *PLACEMENTS):
        table.add_column(name, justify="left" if name == "source" else "right", no_wrap=True,
                         min_width=12 if name == "source" else len(name))
    for row in rows:
        style = "bold" if row.source == "total" else None
        table.add_row(row.source, f"{row.samples:,}", f"{row.unique_images:,}", f"{row.text_only:,}",
                      f"{row.turns:,}", *[f"{row.placement[p]:,}" for p in PLACEMENTS], style=style)
    stdout_console.print(table)


@cli.command()
def formats():
    """List the installed readers and writers, and the package each comes from."""
    registry = get_registry()
    _warn_plugin_problems()
    names = sorted(set(registry.names("reader")) | set(registry.names("writer")))
    table = Table(title="formats")
    for column in ("format", "read", "write", "package", "description"):
        table.add_column(column)
    for name in names:
        reader = registry.components["reader"].get(name)
        writer = registry.components["writer"].get(name)
        component = reader or writer
        table.add_row(name, "yes" if reader else "", "yes" if writer else "", component.plugin.package,
                      component.description)
    stdout_console.print(table)


@cli.command()
def plugins():
    """List every plugin, its package and version, and what it registers."""
    registry = get_registry()
    _warn_plugin_problems()
    table = Table(title="plugins")
    for column in ("plugin", "package", "version", "provides", "status"):
        table.add_column(column)
    for info in registry.plugins:
        provides = [f"{c.kind} {c.name}" for kind in KINDS for c in registry.components[kind].values()
                    if c.plugin is info]
        provides += [f"{c.kind} {c.name} (conflict)" for group in registry.conflicts.values()
                     for c in group[1:] if c.plugin is info]
        table.add_row(info.name, info.package, info.version, ", ".join(provides) or "-",
                      f"[red]{info.error}[/]" if info.error else "ok")
    stdout_console.print(table)


def main():
    register_commands(get_registry(), cli)
    cli(prog_name="curate")


if __name__ == "__main__":
    main()
