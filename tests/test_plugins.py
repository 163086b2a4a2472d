"""Plugins are found through entry points; a broken one is named and the rest keep working."""

import textwrap
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, assert_one_line_error, load_json, pip_installed, run_curate, with_path

EXAMPLE = ROOT / "examples" / "curate-plugin-example"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example plugin, pip-installed for real into a folder put on PYTHONPATH."""
    return pip_installed(EXAMPLE, tmp_path_factory.mktemp("example-site"))


@pytest.mark.slow
def test_installed_example_plugin_is_listed_with_its_package(example_site):
    out = run_curate("plugins", env=with_path(example_site), check=0).stdout
    line = next(line for line in out.splitlines() if "csv-captions" in line)
    assert "curate-csv-captions" in line and "0.1.0" in line and "ok" in line
    assert "curate-csv-captions" in run_curate("formats", env=with_path(example_site), check=0).stdout


@pytest.mark.slow
def test_convert_uses_the_example_plugin_both_ways(example_site, tmp_path):
    env = with_path(example_site)
    csv_path = tmp_path / "captions.csv"
    result = run_curate("convert", "llava", "csv-captions", FIXTURES / "llava_small.json", "-o", csv_path,
                        env=env)
    assert_one_line_error(result, "id 'oa_text_only_1'", "needs an image")   # a writer's reject
    run_curate("convert", "llava", "csv-captions", FIXTURES / "llava_small.json", "-o", csv_path, "-q",
               "--on-error", "skip", env=env, check=0)
    assert csv_path.read_text().splitlines()[0] == "id,image,caption"
    assert len(csv_path.read_text().splitlines()) == 1 + 8
    assert load_json(str(csv_path) + ".rejects.jsonl")[0]["id"] == "oa_text_only_1"
    back = tmp_path / "back.json"
    run_curate("convert", "auto", "llava", csv_path, "-o", back, "-q", env=env, check=0)
    records = load_json(back)
    assert records[0]["image"] == "coco/train2017/000000033471.jpg"
    assert records[0]["conversations"][1]["value"] == "The bus in the image is white and red."


def fake_plugin(site: Path, package: str, entry: str, module: str, code: str) -> None:
    """A minimal installed distribution: a module plus dist-info declaring a curate entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{package.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[curate]\n{entry} = {module}\n")


def test_plugin_that_fails_to_import_is_named_and_the_rest_works(tmp_path):
    fake_plugin(tmp_path, "broken-pkg", "broken", "broken_mod", "raise RuntimeError('boom')\n")
    result = run_curate("plugins", env=with_path(tmp_path), check=0)
    assert "warning: plugin 'broken' from package 'broken-pkg' failed to import" in result.stderr
    assert "RuntimeError: boom" in result.stderr
    out = tmp_path / "o.json"
    run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", out, "-q",
               env=with_path(tmp_path), check=0)
    assert len(load_json(out)) == 9


def test_plugin_whose_hook_raises_is_named(tmp_path):
    fake_plugin(tmp_path, "raising-pkg", "raising", "raising_mod", """
        import curate

        @curate.hookimpl
        def register_readers(register):
            raise ValueError("bad hook")
    """)
    result = run_curate("formats", env=with_path(tmp_path), check=0)
    assert "plugin 'raising' from package 'raising-pkg': register_readers raised ValueError: bad hook" \
        in result.stderr
    assert "llava" in result.stdout


def test_two_packages_with_one_format_name_is_an_error_naming_both(tmp_path):
    fake_plugin(tmp_path, "clash-pkg", "clash", "clash_mod", """
        import curate
        from curate.formats import Reader

        class Clash(Reader):
            name = "llava"

            def read(self, path, options):
                return iter(())

        @curate.hookimpl
        def register_readers(register):
            register(Clash)
    """)
    env = with_path(tmp_path)
    result = run_curate("convert", "llava", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json",
                        env=env)
    assert_one_line_error(result, "reader 'llava'", "curate (plugin 'llava')", "clash-pkg (plugin 'clash')")
    # the other bundled components keep working
    run_curate("convert", "sharegpt4v", "llava", FIXTURES / "llava_small.json", "-o", tmp_path / "o.json",
               "-q", env=env, check=0)


def test_plugins_can_add_commands(tmp_path):
    fake_plugin(tmp_path, "cmd-pkg", "cmd", "cmd_mod", """
        import click
        import curate

        @curate.hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello from a plugin")
    """)
    assert run_curate("hello", env=with_path(tmp_path), check=0).stdout.strip() == "hello from a plugin"


def test_bundled_plugins_are_entry_points_of_curate():
    from importlib.metadata import entry_points
    names = {ep.name: ep.dist.metadata["Name"] for ep in entry_points(group="curate")}
    assert names.get("llava") == "curate" and names.get("sharegpt4v") == "curate"


def test_hook_with_a_misnamed_parameter_from_an_installed_package(tmp_path):
    fake_plugin(tmp_path, "typo-pkg", "typo", "typo_mod", """
        import curate

        @curate.hookimpl
        def register_readers(reg):
            pass
    """)
    result = run_curate("formats", env=with_path(tmp_path), check=0)
    assert "Traceback" not in result.stderr
    assert "plugin 'typo' from package 'typo-pkg' could not be registered" in result.stderr
    assert "reg" in result.stderr and "llava" in result.stdout


def test_plugin_that_exits_at_import_is_named(tmp_path):
    fake_plugin(tmp_path, "exit-pkg", "exiter", "exit_mod", "import sys\nsys.exit(3)\n")
    result = run_curate("formats", env=with_path(tmp_path), check=0)
    assert "plugin 'exiter' from package 'exit-pkg' failed to import: SystemExit" in result.stderr
    assert "llava" in result.stdout
