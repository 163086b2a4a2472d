"""The ``curate`` command line: click for commands, rich for tables and progress."""

from __future__ import annotations

import gc
import os
import sys
from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import api
from .boxes import CONVENTIONS
from .engine import ID_MODES, ON_ERROR, Inputs
from .dedup_settings import DEFAULT_SIGNALS
from .interrupts import exit_interrupted, install_signal_handlers, interruption_of
from .errors import CurateError, as_flags, setting
from .jsonstream import dumps
from .registry import KINDS, get_registry, register_commands
from .progress import plain, safe, stderr_console
from .stats import PLACEMENTS, summarise_inputs

stdout_console = Console()


def fail(message: str) -> None:
    """One line on stderr, exit code 1: the contract for every user-facing failure."""
    click.echo(f"error: {plain(str(message).strip()) or 'failed'}", err=True)
    sys.exit(1)


def _warn_plugin_problems() -> None:
    for warning in get_registry().warnings:
        stderr_console.print(f"[yellow]warning:[/] {safe(as_flags(warning))}", highlight=False, soft_wrap=True)


def check_utf8(ctx: click.Context) -> None:
    """Every name and text given on the command line must be UTF-8, checked here once: curate
    writes them into UTF-8 files (dataset_info.json, reports, rejects, records' ids). A name
    typed in a Latin-1 shell reaches Python with its other bytes escaped, which no such file holds."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and not _is_utf8(os.fspath(item)):
                name = max(param.opts, key=len) if isinstance(param, click.Option) else param.human_readable_name
                shown = os.fspath(item).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise CurateError(f"{name}: '{shown}' is not UTF-8 (typed in a Latin-1 shell?); curate writes "
                                  "names into UTF-8 files (dataset_info.json, reports, rejects): give it in UTF-8, "
                                  "renaming the file if need be")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CurateCommand(click.Command):
    """A command whose names are checked (:func:`check_utf8`) before it runs."""

    def invoke(self, ctx):
        check_utf8(ctx)
        return super().invoke(ctx)


class CurateGroup(click.Group):
    """Turns CurateError (and broken pipes, Ctrl-C) into one-line errors, never tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CurateError as e:
            fail(e.for_command_line())
        except KeyboardInterrupt as e:
            exit_interrupted(e)
        except BrokenPipeError:
            sys.exit(1)
        except OSError as e:  # disk full, permission denied, ...
            where = f"{e.filename}: " if e.filename else ""
            fail(f"{where}{e.strerror or e}")
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:
            interrupted = interruption_of(e)
            if interrupted is not None:
                exit_interrupted(interrupted)
            if os.environ.get("CURATE_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (run with CURATE_DEBUG=1 for a traceback, "
                 f"and please report it)")

    command_class = CurateCommand


def parse_options(values) -> dict[str, str]:
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CurateError(f"-O/--option takes NAME=VALUE, not {item!r}")
        options[key.strip()] = value
    return options


@click.group(cls=CurateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="curate")
def cli():
    """curate: convert and deduplicate visual instruction-tuning datasets.

    Formats, embedders and indexes are plugins; `curate plugins` lists what is installed.
    """


def _apply(options, function):
    for option in reversed(options):
        function = option(function)
    return function


def input_options(*, image_root_required: bool = False, with_from: bool = True):
    """How inputs are read, the same on every command that reads (the readers' own options,
    such as --svit-task, are added to each such command in :func:`main`)."""
    options = [
        click.option("--image-root", required=image_root_required, default=None,
                     type=click.Path(path_type=Path),
                     help="Folder (or .zip/.tar archive, read in place) that the records' image paths are "
                          "relative to (a LLaVA data root or the dataset's own); needed for image files, box "
                          "conversion and SVIT. Images embedded in the input (Parquet, WebDataset) need none."),
        click.option("--image-prefix", default=None,
                     help="Folder to put before bare image file names, e.g. coco/train2017."),
        click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
                     help="Seed for formats that draw at random (same input and seed, same output)."),
        click.option("-O", "--option", "options", multiple=True, metavar="NAME=VALUE",
                     help="A setting of the reader or writer, by name (-O svit_task=referring is --svit-task "
                          "referring); repeat for several."),
    ]
    if with_from:
        options.insert(0, click.option("--from", "from_format", default="auto", show_default=True,
                                       help="Format of the inputs (auto: recognise each file by its content)."))
    return lambda function: _apply(options, function)


def output_options(function):
    """What happens to records that cannot be written, and to existing outputs."""
    return _apply([
        click.option("--on-error", type=click.Choice(ON_ERROR), default="fail", show_default=True,
                     help="fail: stop at the first bad record, write nothing. skip: set bad records "
                          "aside in the rejects file with their reason, and go on."),
        click.option("--rejects", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Where skipped records go (JSON Lines) [default: OUTPUT.rejects.jsonl]."),
        click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (never an input)."),
        click.option("--boxes", type=click.Choice(CONVENTIONS), default=None,
                     help="Write boxes in this convention instead of the writer's own: original (normalised "
                          "to the image), padded (normalised to the square-padded image, LLaVA-1.5), thousand "
                          "(integers in [0, 1000), InternVL), pixels (of the original image), smart-resize "
                          "(pixels after Qwen2.5-VL's resize), qwen-1000 (integers in [0, 1000], Qwen2-VL and "
                          "Qwen3-VL). Needs --image-root for sizes."),
        click.option("--ids", type=click.Choice(ID_MODES), default=None,
                     help="keep: write ids as read (lossless). string: write every id as a string. drop: write no "
                          "ids. [default: string for writers whose trainer loads the file with Hugging Face "
                          "datasets (llama-factory, ms-swift: ids that mix integers and strings do not load "
                          "before datasets 4.7 and lose leading zeros after), keep for the others]"),
        click.option("--extract-images", type=click.Path(path_type=Path, dir_okay=True), default=None,
                     help="Folder to write every image into once (by its own name when safe, else its content "
                          "hash), with the records' paths relative to it: for images held as bytes (Parquet, "
                          "WebDataset) and writers whose trainer reads files (llava, internvl, qwen-vl...)."),
    ], function)


def make_inputs(paths, from_format, image_root, image_prefix, seed, options, format_options) -> Inputs:
    """The Inputs of a command: the formats' settings, given as flags or -O NAME=VALUE pairs."""
    settings = {k: v for k, v in format_options.items() if v is not None}
    settings.update(parse_options(options))
    return Inputs(paths, from_format, image_root=image_root, image_prefix=image_prefix, seed=seed, settings=settings)


@cli.command()
@click.argument("from_format", metavar="FROM")
@click.argument("to_format", metavar="TO")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write (.jsonl for JSON Lines where the writer supports it).")
@input_options(with_from=False)
@output_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
def convert(from_format, to_format, inputs, output, overwrite, on_error, rejects, image_root,
            image_prefix, seed, boxes, ids, extract_images, options, quiet, **format_options):
    """Convert INPUT files from format FROM to format TO.

    FROM may be `auto` to recognise each input by its content. Output is written
    atomically: it appears complete or not at all.

    \b
    Example:
      curate convert llava sharegpt4v llava_v1_5_mix665k.json -o mix.jsonl
    """
    _warn_plugin_problems()
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    report = api.convert(source, output, to=to_format, overwrite=overwrite, on_error=on_error, rejects=rejects,
                         boxes=boxes, ids=ids, extract_images=extract_images, show_progress=not quiet)
    if not quiet:
        print_report(report)
    else:
        for warning in report.warnings:
            stderr_console.print(f"[yellow]warning:[/] {safe(as_flags(warning))}", highlight=False)


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
        stderr_console.print(f"note: {safe(as_flags(note))}", highlight=False)
    for warning in report.warnings:
        stderr_console.print(f"[yellow]warning:[/] {safe(as_flags(warning))}", highlight=False)
    stderr_console.print(f"wrote {safe(report.output)}", highlight=False)
    if report.rejects_path:
        stderr_console.print(f"[yellow]{report.rejected:,} rejected records, with reasons, in "
                             f"{safe(report.rejects_path)}[/]", highlight=False)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@input_options()
@click.option("--on-error", type=click.Choice(ON_ERROR), default="fail", show_default=True,
              help="fail: stop at the first bad record. skip: leave bad records out of the counts.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def inspect(inputs, from_format, image_root, image_prefix, seed, options, on_error, as_json, **format_options):
    """Summarise datasets: per source, samples, unique images, text-only samples, turns
    and where `<image>` sits in the first turn (prefix, suffix, middle, none)."""
    _warn_plugin_problems()
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    rows, rejected = summarise_inputs(source, on_error, show_progress=not as_json)
    if as_json:
        click.echo(dumps([r.as_json() for r in rows] + [{"rejected": rejected.count}], indent=2))
        return
    table = Table(title=safe(", ".join(str(p) for p in inputs)))
    for name in ("source", "samples", "images", "text-only", "turns", *PLACEMENTS):
        table.add_column(name, justify="left" if name == "source" else "right", no_wrap=True,
                         min_width=12 if name == "source" else len(name))
    for row in rows:
        style = "bold" if row.source == "total" else None
        table.add_row(safe(row.source), f"{row.samples:,}", f"{row.unique_images:,}", f"{row.text_only:,}",
                      f"{row.turns:,}", *[f"{row.placement[p]:,}" for p in PLACEMENTS], style=style)
    stdout_console.print(table)
    total = rows[-1].samples
    stderr_console.print(f"{total + rejected.count:,} records = {total:,} summarised + {rejected.count:,} rejected"
                         + (f" (first: {plain(rejected.first)})" if rejected.first else ""), highlight=False,
                         markup=False)


def embedding_options(function):
    """Options shared by `dedup` and `embed` (one code path for embedding)."""
    return _apply([
        click.option("--embedder", default="vit-cls", show_default=True,
                     help="Image embedder: vit-cls (a ViT's class token, as in the LLaVA-665K study) or "
                          "timm-pool (pooled features; offline default EfficientNet-Lite0). See `curate plugins`."),
        click.option("--model", default=None,
                     help="timm model name [default: vit_large_patch14_clip_336.openai for vit-cls, "
                          "efficientnet_lite0 for timm-pool]."),
        click.option("--weights", type=click.Path(path_type=Path, dir_okay=False), default=None,
                     help="Model weights (.safetensors or PyTorch checkpoint) instead of timm's pretrained ones."),
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Embedding cache folder; a re-run embeds only new or changed images "
                          "[default: $XDG_CACHE_HOME/curate/embeddings]."),
        click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache."),
        click.option("--batch-size", type=click.IntRange(1, 8192), default=32, show_default=True,
                     help="Images per model call."),
        click.option("--workers", type=click.IntRange(1, 1024), default=min(4, os.cpu_count() or 1), show_default=True,
                     help="Threads that decode and resize images while the model runs, and that compare "
                          "candidate pairs ahead of the keep/remove walk (a verifier that allows it, as "
                          "content does; the decisions are the same with any number)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="Where the model runs (auto: CUDA when available, in bf16)."),
        click.option("--decode", type=click.Choice(["auto", "threads", "processes", "device"]), default="auto",
                     show_default=True,
                     help="How images are decoded: by threads (best on a few cores), forked processes (scale "
                          "on many cores), or device: JPEGs in batches on the model's device (nvJPEG on CUDA, "
                          "resized there too; other formats still on the CPU). auto: device when the model runs "
                          "on CUDA and --signals is just embedding, processes on CUDA otherwise, threads on "
                          "the CPU."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where embedding runs: this machine, or a Ray cluster (pip install 'curate[ray]'); "
                          "both fill the same cache."),
        click.option("--ray-address", default=None,
                     help="Ray cluster to join (e.g. ray://head:10001 or auto) [default: start Ray locally]."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary."),
    ], function)


def embed_settings(cache_dir, no_cache, batch_size, workers, decode, engine, ray_address, quiet):
    from .deduplicate import EmbedSettings, default_cache_dir
    return EmbedSettings(cache_dir=None if no_cache else (cache_dir or default_cache_dir()), batch_size=batch_size,
                         workers=workers, decode=decode, engine=engine, ray_address=ray_address,
                         show_progress=not quiet)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The filtered dataset (kept and text-only samples, in input order).")
@click.option("--to", "to_format", default=None, help="Format to write [default: the first input's format, or llava for formats curate only reads].")
@input_options()
@embedding_options
@click.option("--index", default="auto", show_default=True,
              help="Similarity index: exact (blocked matrix products), partitioned (exact products within "
                   "k-means partitions), hnsw (hnswlib, approximate), or auto (exact for small groups, "
                   "partitioned for large ones, as measured in bench/).")
@click.option("-t", "--threshold", "thresholds", type=float, multiple=True,
              help="Cosine similarity of the embedding at which two images are duplicates; repeat for "
                   "several (one embedding pass, every threshold reported, output filtered at the first) "
                   "[default: the embedder's own, measured in bench/: vit-cls 0.9 (the study's), "
                   "timm-pool 0.8].")
@click.option("--signals", "signals", default=",".join(DEFAULT_SIGNALS), show_default=True,
              help="Signals that can call a pair a near-duplicate, comma-separated, in the order a match is "
                   "recorded: embedding (always on; its threshold is -t), exact (same bytes or pixels), "
                   "phash (perceptual hash; phash=N sets the Hamming distance, default 10), and any a plugin "
                   "adds (`curate plugins`). A pair is removed when any of them matches.")
@click.option("--verify", default="content", show_default=True, metavar="VERIFIER|none",
              help="What confirms each candidate pair before an image is removed: content (the pair, aligned "
                   "past borders, scale, crop, a strip at an edge and mirroring, agrees block by block at a "
                   "resolution where text is legible, so charts, pages, covers and screenshots that differ in a "
                   "word, number or bar are kept), a verifier a plugin adds, or none: the signals alone decide, "
                   "which thins by similarity as the LLaVA-1.5 study did (it removes distinct images that look "
                   "alike). Exact matches (same bytes or pixels) need no verification.")
@click.option("--scope", type=click.Choice(["source", "global"]), default="source", show_default=True,
              help="source: compare images within each source dataset (as in the study). global: across all.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for report.json, report.md, report.html and removed.jsonl "
                   "[default: OUTPUT.report beside the output].")
@click.option("--sample-every", type=click.IntRange(1, 10**9), default=500, show_default=True,
              help="The report lists every N-th removed image with its kept twin.")
@click.option("--decisions-only", is_flag=True,
              help="Identify only: write the decisions (one JSON line per unique image: keep or remove, what it "
                   "duplicates and why) to OUTPUT, and no dataset or report. `curate apply` filters any export "
                   "of the inputs with them later; a full run also writes them, as decisions.jsonl in its report.")
@click.option("--drop-unreadable", is_flag=True,
              help="Set samples with a missing or unreadable image aside as rejects (default: keep them).")
@click.option("--filter", "filters", multiple=True, metavar="NAME[=VALUE]",
              help="Also run a filter, as `curate filter --filter` does (repeat for several; none by default): "
                   "before the duplicate filter, its removals with its reason in removed.jsonl. Image filters "
                   "measure the image decoded for the embedder, not a second decode.")
@click.option("--against", "against", multiple=True, type=click.Path(path_type=Path), metavar="EVAL",
              help="Decontaminate: also remove the training samples whose images near-duplicate an image of "
                   "EVAL (a benchmark's data, read as the inputs are, with the same --image-root; never written), "
                   "with every signal and the verification; the evaluation image always wins. Repeat for several; "
                   "the report counts the matches per EVAL.")
@output_options
def dedup(inputs, output, to_format, from_format, image_root, image_prefix, seed, options, embedder, model, weights,
          cache_dir, no_cache, batch_size, workers, device, decode, engine, ray_address, quiet, index, thresholds,
          signals, verify, scope, report_dir, sample_every, decisions_only, drop_unreadable, filters, against,
          on_error, rejects, overwrite, boxes, ids, extract_images, **format_options):
    """Remove near-duplicate images from datasets, and report what was removed.

    Each unique image is decoded once, embedded and hashed (--signals); within each scope
    group, images are walked in order of first appearance and an image is removed when an
    already kept image matches it in any signal (embedding similarity >= THRESHOLD, the same
    bytes, a perceptual hash within its distance) and the verifier (--verify) confirms that the
    two are the same picture. Samples of removed images go to removed.jsonl with
    the image they duplicate; text-only samples and samples of kept images are written.
    Inputs are read as `curate convert` reads them (--from, --image-prefix, --seed, -O and
    the formats' own options).

    \b
    Example:
      curate dedup llava_v1_5_mix665k.json -o dedup.json --image-root data/ \\
          -t 0.9 -t 0.8 -t 0.7 --report report/
      curate dedup train.json --against mmbench.json -o train.clean.json --image-root data/
    """
    from .deduplicate import EmbedderSpec, ReportSettings, SearchSettings, dedup as run_dedup, identify_to_file
    from .filtering import filter_stages, parse_filter
    _warn_plugin_problems()
    if filters and decisions_only:
        raise CurateError(f"{setting('filter')} filters the written dataset; {setting('decisions_only')} writes none "
                          f"(run `curate filter` on what `curate apply` writes)")
    stages = filter_stages([parse_filter(text) for text in filters]) if filters else []
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    identify = dict(embedder=EmbedderSpec(embedder, model, weights, device),
                    search=SearchSettings(thresholds, scope, index, parse_signals(signals), verify),
                    settings=embed_settings(cache_dir, no_cache, batch_size, workers, decode, engine, ray_address,
                                            quiet),
                    on_error=on_error, overwrite=overwrite,
                    against=make_inputs(against, from_format, image_root, image_prefix, seed, options, format_options)
                    if against else None)
    if decisions_only:
        decisions = identify_to_file(source, output, **identify)
        removed = sum(row["decision"] == "remove" for row in decisions.rows.values())
        stderr_console.print(f"decisions: {len(decisions.rows):,} unique images, {removed:,} to remove "
                             f"({plain(decisions.header['intent'])}); wrote {plain(output)}", highlight=False, markup=False)
        if against:
            matched = Counter(row["against"] for row in decisions.rows.values() if row.get("against"))
            for name, count in matched.items():
                stderr_console.print(f"against {plain(name)}: {count:,} training images to remove",
                                     highlight=False, markup=False)
            if not matched:
                stderr_console.print("against: no training image matches an evaluation image", highlight=False)
        return
    result = run_dedup(source, output, to=to_format, report=ReportSettings(report_dir, sample_every),
                       drop_unreadable=drop_unreadable, rejects=rejects, boxes=boxes, ids=ids, filters=stages,
                       extract_images=extract_images, **identify)
    if not quiet:
        print_dedup_summary(result)


@cli.command()
@click.argument("decisions", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write the kept samples to.")
@click.option("--to", "to_format", default=None, help="Format to write [default: the first input's format, or llava for formats curate only reads].")
@input_options()
@click.option("--removed", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where removed samples go, each with what it duplicates [default: OUTPUT.removed.jsonl].")
@click.option("--drop-unreadable", is_flag=True,
              help="Set samples whose image was unreadable when the decisions were made aside as rejects.")
@output_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
def apply(decisions, inputs, output, to_format, from_format, image_root, image_prefix, seed, options, removed,
          drop_unreadable, on_error, rejects, overwrite, boxes, ids, extract_images, quiet, **format_options):
    """Filter INPUTS with the DECISIONS of an earlier dedup.

    DECISIONS is the decisions.jsonl of a `curate dedup` report (or what `curate dedup
    --decisions-only` wrote), reviewed or edited by hand if need be (turn a row's "decision"
    to "keep" to keep that image). INPUTS may be the same data in another format: images are
    matched by their paths. A sample is removed when all of its images are removed; images the
    decisions do not name are kept.

    \b
    Example:
      curate dedup mix.json -o decisions.jsonl --image-root data/ --decisions-only
      curate apply decisions.jsonl mix_qwen.jsonl -o mix_qwen.dedup.jsonl
    """
    from .decisions import apply as apply_decisions
    _warn_plugin_problems()
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    report = apply_decisions(decisions, source, output, to=to_format, removed=removed, drop_unreadable=drop_unreadable,
                             on_error=on_error, rejects=rejects, boxes=boxes, ids=ids, extract_images=extract_images,
                             overwrite=overwrite,
                             show_progress=not quiet)
    print_outcome(report, quiet)


@cli.command(name="filter")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="File to write the kept samples to.")
@click.option("--filter", "filters", multiple=True, metavar="NAME[=VALUE]",
              help="A filter to run (repeat for a chain, run in the order given), with its setting if it takes "
                   "one; `curate plugins` lists the installed filters. With none, the defaults run: empty-answer, "
                   "duplicate-sample, unreadable, too-small, odd-aspect (the defects that break a trainer's loader "
                   "or leave nothing to learn); wrong-format, flat, blurry, dark, light, low-info and too-long run "
                   "when named.")
@click.option("--to", "to_format", default=None, help="Format to write [default: the first input's format, or llava for formats curate only reads].")
@input_options()
@click.option("--removed", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where removed samples go, each with the filter and its reason [default: OUTPUT.removed.jsonl].")
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for report.json, report.md and report.html: per filter what it removed per source, "
                   "and the images nearest each threshold [default: OUTPUT.report beside the output].")
@output_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
def filter_command(inputs, output, filters, to_format, from_format, image_root, image_prefix, seed, options, removed,
                   report_dir, on_error, rejects, overwrite, boxes, ids, extract_images, quiet, **format_options):
    """Drop samples with filter plugins, each removal with its reason.

    Each --filter names a filter registered by a plugin (the `register_filters` hook); they run
    in the order given, between the reader and the writer, and what they remove goes to one
    file with the filter's name and reason. Inputs are read and written as `curate convert`
    does (--from, --to, --image-root, -O and the formats' own options).

    \b
    Example:
      curate filter mix.json -o big.json --image-root data/ --filter min-side=224
    """
    from .filtering import filter_stages, parse_filter, run_filters
    _warn_plugin_problems()
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    stages = filter_stages([parse_filter(text) for text in filters], source.settings)
    report = run_filters(source, output, stages, to=to_format, removed=removed, on_error=on_error, rejects=rejects,
                         boxes=boxes, ids=ids, extract_images=extract_images, overwrite=overwrite,
                         show_progress=not quiet,
                         report_dir=report_dir or output.with_name(output.name + ".report"))
    print_outcome(report, quiet)


def print_outcome(report, quiet: bool) -> None:
    """The summary table, or with ``quiet`` the warnings alone."""
    if not quiet:
        print_report(report)
        return
    for warning in report.warnings:
        stderr_console.print(f"[yellow]warning:[/] {safe(as_flags(warning))}", highlight=False)


def parse_signals(text: str) -> tuple[str, ...]:
    entries = tuple(part.strip() for part in text.split(",") if part.strip())
    return entries if entries else ("embedding",)


def print_dedup_summary(result) -> None:
    data = result.report_data
    for block in data["thresholds"]:
        table = Table(title=f"threshold {block['threshold']}")
        for name in ("source", "samples", "unique images", "similar", "kept", "samples removed"):
            table.add_column(name, justify="left" if name == "source" else "right", no_wrap=True)
        for row in block["table"]:
            table.add_row(safe(row["source"]), f"{row['samples']:,}", f"{row['unique_images']:,}",
                          f"{row['similar']:,}", f"{row['kept']:,}", f"{row['samples_removed']:,}",
                          style="bold" if row["source"] == "total" else None)
        stderr_console.print(table)
        for name, matched in block.get("against", {}).items():
            stderr_console.print(f"against {plain(name)}: {matched['samples']:,} training samples removed "
                                 f"({matched['images']:,} images matched)", highlight=False, markup=False)
    emb = data["embedding"]
    stderr_console.print(f"images: {emb['unique_images']:,} unique, {emb['embedded']:,} embedded "
                         f"({emb['images_per_second'] or 0:,.1f}/s), {emb['cached']:,} from cache, "
                         f"{emb['unreadable']:,} unreadable", highlight=False)
    print_report(result.report)
    looked = len(result.duplicates.applied.refused)
    stderr_console.print(f"removed: {plain(data['settings']['intent'])}"
                         + (f"; {looked:,} pairs looked alike but were kept (different content)" if looked else ""),
                         highlight=False, markup=False)
    stderr_console.print(f"report: {plain(result.report_dir / 'report.html')}", highlight=False, markup=False)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also save the vectors as .npy (rows in order of first appearance; OUTPUT.json lists "
                   "the images and any failures).")
@click.option("--export", "export", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the embedded images' vectors with their ids for your own analysis: PATH.parquet (columns "
                   "image, sample_id, vector) or PATH.npy with PATH.ids.jsonl beside it (row, image, sample_id); "
                   "the suffix chooses.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT or the export if it exists.")
@input_options()
@embedding_options
def embed(inputs, output, export, overwrite, from_format, image_root, image_prefix, seed, options, embedder, model, weights,
          cache_dir, no_cache, batch_size, workers, device, decode, engine, ray_address, quiet, **format_options):
    """Embed the unique images of datasets into the cache (and optionally a .npy), without
    deduplicating. A later `curate dedup` with the same model and cache embeds nothing again."""
    from .deduplicate import EmbedderSpec, embed as run_embed
    from .vectors_out import check_export, export_embeddings, save_embeddings
    _warn_plugin_problems()
    settings = embed_settings(cache_dir, no_cache, batch_size, workers, decode, engine, ray_address, quiet)
    if output is None and export is None and settings.cache_dir is None:
        raise CurateError("nothing to keep the embeddings in: give --export PATH, -o OUTPUT.npy or drop --no-cache")
    if export is not None:
        check_export(export)
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    found = run_embed(source, EmbedderSpec(embedder, model, weights, device), settings)
    if output is not None:
        save_embeddings(found, output, inputs=source.sources, overwrite=overwrite)
    if export is not None:
        exported = export_embeddings(found, export, inputs=source.sources, overwrite=overwrite)
        if not quiet:
            stderr_console.print(f"exported {exported:,} vectors to {plain(export)}", highlight=False, markup=False)
    for warning in found.result.warnings:
        stderr_console.print(f"[yellow]warning:[/] {safe(as_flags(warning))}", highlight=False)
    if not quiet:
        result = found.result
        stderr_console.print(f"{len(found.images.paths):,} images: {result.embedded:,} embedded, {result.cached:,} "
                             f"from cache, {len(result.failures):,} unreadable, in {result.seconds:.1f} s"
                             + (f"; cache {settings.cache_dir}" if settings.cache_dir else ""),
                             highlight=False, markup=False)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The HTML page to write (self-contained: thumbnails are embedded).")
@input_options()
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Records to show.")
@click.option("--ids", default=None, help="Only these record ids (comma-separated).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def preview(inputs, output, from_format, image_root, image_prefix, seed, options, limit, ids, overwrite,
            **format_options):
    """Render records with their image and boxes as an HTML page, to check a conversion by eye.

    Boxes are drawn as each record's format means them: LLaVA's, normalised to the
    square-padded image, are drawn on the image padded to a square.
    """
    from .preview import write_preview
    _warn_plugin_problems()
    source = make_inputs(inputs, from_format, image_root, image_prefix, seed, options, format_options)
    wanted = {i.strip() for i in ids.split(",")} if ids else None
    write_preview(source, output, limit=limit, ids=wanted, overwrite=overwrite)
    stderr_console.print(f"wrote {plain(output)}", highlight=False, markup=False)


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
        table.add_row(safe(name), "yes" if reader else "", "yes" if writer else "", safe(component.plugin.package),
                      safe(component.description))
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
        table.add_row(safe(info.name), safe(info.package), safe(info.version), safe(", ".join(provides) or "-"),
                      f"[red]{safe(info.error)}[/]" if info.error else "ok")
    stdout_console.print(table)


def add_format_options(registry, command: click.Command, kinds=("reader", "writer")) -> None:
    """Show the settings of each component of ``kinds`` as options of a command: one flag per
    setting, from its declaration (:class:`curate.settings.Setting`)."""
    taken = {name for param in command.params for name in param.opts}
    for kind in kinds:
        for component in registry.components[kind].values():
            for one in component.obj.settings:
                if one.flag not in taken:
                    command.params.append(click_option(one))
                    taken.add(one.flag)


def click_option(one) -> click.Option:
    """The command-line option of a setting; click checks the type and bounds as it parses."""
    if one.choices:
        kind = click.Choice(one.choices)
    elif one.type is int:
        kind = click.IntRange(one.minimum, one.maximum)
    elif one.type is float:
        kind = click.FloatRange(one.minimum, one.maximum)
    elif one.type is Path:
        kind = click.Path(path_type=Path)
    else:
        kind = {bool: click.BOOL, str: click.STRING}[one.type]
    shown = f" [default: {one.default}]" if one.default is not None else ""
    return click.Option([one.flag, one.name], type=kind, default=None, help=one.help + shown)


def prepare(registry) -> click.Group:
    """Give the commands the formats' own options and the plugins' commands (once per registry)."""
    if not registry.cli_prepared:
        registry.cli_prepared = True
        for command in (convert, apply):
            add_format_options(registry, command)
        add_format_options(registry, dedup, kinds=("reader", "writer", "embedder", "index", "signal", "verifier"))
        add_format_options(registry, filter_command, kinds=("reader", "writer", "filter"))
        add_format_options(registry, embed, kinds=("reader", "embedder", "signal"))
        for command in (inspect, preview):
            add_format_options(registry, command, kinds=("reader",))
        register_commands(registry, cli)
    return cli


def main():
    """Run the command line (handlers are installed first by :mod:`curate.entry`). click runs
    outside its standalone mode, which turned a Ctrl-C that lands while it parses the arguments
    into its own "Aborted!" and exit 1: every interruption is curate's clean exit (128 + the
    signal), and the rest is what click's standalone mode does."""
    install_signal_handlers()
    command = prepare(get_registry())
    gc.freeze()     # modules and plugins live as long as the process: no collection need scan them again
    try:
        code = command.main(prog_name="curate", standalone_mode=False)
    except click.exceptions.Abort as e:         # a Ctrl-C outside a command, or a prompt refused
        interrupted = interruption_of(e)
        if interrupted is not None:
            exit_interrupted(interrupted)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as e:           # a usage error
        e.show()
        sys.exit(e.exit_code)
    except BrokenPipeError:                     # --help into a closed pipe
        sys.stdout = open(os.devnull, "w")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
