import json
import subprocess
import sys

import pytest

TINY = ["--set", "training.epochs=2", "--set", "time.n_steps=20", "--set", "data.n_classes=3",
        "--set", "data.samples_per_class=30", "--set", "model.hidden.0.size=8",
        "--set", "training.batch_size=16"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "spikegrad.cli", *args], capture_output=True,
                          text=True)


def test_train_json_output(tmp_path):
    done = run("train", "randman", *TINY, "--json", "--quiet", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("test_accuracy", "valid_accuracy", "train_accuracy", "hidden_spikes_per_neuron",
                "status", "wall_time_s"):
        assert key in result
    assert result["status"] == "completed" and len(result["hidden_spikes_per_neuron"]) == 1
    for name in ("config.yaml", "metrics.jsonl", "result.json", "checkpoint.pt"):
        assert (tmp_path / "run" / name).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "randman", "--set", "model.hidden.0.tau_mem_ms=0.5"],
         "model.hidden.0.tau_mem_ms: must be greater than time.dt_ms"),
        (["train", "randman", "--set", "model.hidden.0.size=0"], "model.hidden.0.size"),
        (["train", "randman", "--set", "surrogate.name=wiggle"], "unknown surrogate 'wiggle'"),
        (["train", "randman", "--set", "training.colour=blue"], "training.colour: unknown key"),
        (["train", "no-such-config"], "no such config file or built-in config"),
        (["train", "randman", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikegrad: error: ") and message in lines[0]


def test_help_on_every_command():
    for args in (["--help"], ["train", "--help"], ["config", "--help"], ["config", "show", "-h"]):
        done = run(*args)
        assert done.returncode == 0 and "Usage" in done.stdout


def test_cli_reference_has_every_command_and_is_docs_cli_md():
    from pathlib import Path

    import click

    from spikegrad.cli import help_reference, main

    def paths(command, prefix):
        yield prefix
        if isinstance(command, click.Group):
            context = click.Context(command)
            for name in command.list_commands(context):
                yield from paths(command.get_command(context, name), f"{prefix} {name}")

    text = help_reference()
    for path in paths(main, "spikegrad"):
        assert f"## `{path}`\n\n```text\nUsage: {path} " in text, path
    assert "--resume" in text and "--db FILE" in text
    docs = Path(__file__).parents[1] / "docs" / "cli.md"
    assert docs.read_text() == text, (
        "regenerate: python -c \"import spikegrad.cli as c; print(c.help_reference(), end='')\""
        " > docs/cli.md")


def test_a_bug_is_a_traceback_not_a_user_error(monkeypatch):
    from click.testing import CliRunner

    import spikegrad.config
    from spikegrad.cli import main

    def broken(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(spikegrad.config, "load_config", broken)
    result = CliRunner().invoke(main, ["config", "show", "randman"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_user_facing_errors_share_one_base():
    from spikegrad.data.files import DataFileError, MissingDataError
    from spikegrad.errors import (
        ArgumentError,
        ConfigError,
        GridTooLargeError,
        RunFolderError,
        SpikegradError,
    )
    from spikegrad.functional import InputError
    from spikegrad.io import PathError
    from spikegrad.studies.db import MissingResultsDBError, ResultsDBError

    for error in (ArgumentError, ConfigError, DataFileError, GridTooLargeError, InputError,
                  MissingDataError, MissingResultsDBError, PathError, ResultsDBError,
                  RunFolderError):
        assert issubclass(error, SpikegradError), error
    assert issubclass(MissingResultsDBError, FileNotFoundError)


def test_library_errors_name_no_flags_and_only_the_cli_imports_click():
    """Flags belong to the command line; the library's errors name its own arguments (the
    command line puts its flags in, e.g. spikegrad.cli.support.message)."""
    import ast
    import re
    from pathlib import Path

    package = Path(__file__).parents[1] / "src" / "spikegrad"
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
    problems = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "cli" and path.parent.parent == package:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""]
                problems += [f"{path.name}: imports click" for n in names
                             if n.split(".")[0] == "click"]
            if isinstance(node, ast.Raise) and node.exc is not None:
                for part in ast.walk(node.exc):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str) \
                            and flag.search(part.value):
                        problems.append(f"{path.name}:{node.lineno}: {part.value!r}")
    assert not problems, problems


def test_resume_without_a_run_says_a_new_run_starts(tmp_path):
    args = ["train", "randman", "--set", "training.epochs=1", "--set", "time.n_steps=20",
            "--set", "data.samples_per_class=20", "--set", "model.hidden.0.size=8", "--quiet",
            "--out", str(tmp_path / "typo"), "--resume"]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"spikegrad: {tmp_path / 'typo'}: no checkpoint to continue, " \
                            "a new run starts\n"
    again = run(*args)  # now it has one: continued, no notice
    assert again.returncode == 0 and again.stderr == ""
