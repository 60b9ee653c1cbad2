"""`dermlens --help` lists every subcommand with a one-line description, and every subcommand has its own help."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from dermlens.cli import app

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}


def registered_commands() -> dict:
    """name -> click command, for every subcommand and group the app registers (whoever added it)."""
    return dict(typer.main.get_command(app).commands)


def clean(text: str) -> list[str]:
    """Help lines without rich's box drawing and padding."""
    return [re.sub(r"\s+", " ", line.strip(" │╭╮╰╯─")).strip() for line in text.splitlines()]


def first_line(command) -> str:
    return (command.help or "").strip().splitlines()[0].strip() if command.help else ""


@pytest.fixture(scope="module")
def main_help() -> str:
    """The real entry point, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "dermlens", "--help"], capture_output=True, text=True,
                            env={**os.environ, **WIDE}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_expected_subcommands_exist():
    """Every command module's commands are registered (the groups live in modules of their own)."""
    assert {
        "study", "demo", "report", "explain", "train", "evaluate", "predict", "export", "operating-point",
        "model-card", "serve", "taxonomy", "segment", "screen", "gate", "pet",
    } <= set(registered_commands())


def test_help_starts_without_loading_torch():
    """`dermlens --help` stays quick: commands import their heavy libraries only when they run."""
    code = ("import sys\nfrom dermlens.cli import app\ntry:\n    app(['--help'], prog_name='dermlens')\n"
            "except SystemExit:\n    pass\nprint('LOADED', sorted(m for m in ('torch', 'sklearn', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **WIDE},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout[-300:]


def test_main_help_lists_every_subcommand_with_a_one_line_description(main_help):
    lines = clean(main_help)
    for name, command in registered_commands().items():
        description = first_line(command)
        assert description, f"subcommand {name!r} has no description"
        assert any(line.startswith(f"{name} {description[:40]}") for line in lines), (
            f"{name!r} is not listed with its description {description!r} in:\n{main_help}"
        )


@pytest.mark.parametrize("name", sorted(registered_commands()))
def test_every_subcommand_has_help(name):
    result = CliRunner().invoke(app, [name, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and name in result.output
    command = registered_commands()[name]
    if isinstance(command, typer.core.TyperGroup):  # a group lists its own subcommands the same way
        lines = clean(result.output)
        for sub_name, sub in command.commands.items():
            assert first_line(sub), f"{name} {sub_name} has no description"
            assert any(line.startswith(f"{sub_name} {first_line(sub)[:40]}") for line in lines), result.output


def test_no_arguments_shows_the_help_instead_of_a_traceback():
    result = CliRunner().invoke(app, [], env=WIDE)
    assert "Usage:" in result.output and "predict" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_defaults_are_the_recipe_s_and_the_help_claims_are_measured():
    """`train --balance` defaults to the recipe the README names (tree), as the library does; `pet study --help`
    states the time its defaults take, not "minutes"."""
    import inspect

    from dermlens.cli.classify import train_command
    from dermlens.train.recipe import TrainConfig

    assert inspect.signature(train_command).parameters["balance"].default == TrainConfig().balance == "tree"
    result = CliRunner().invoke(app, ["pet", "study", "--help"])
    assert "half an hour" in result.output and "minutes on a laptop" not in result.output
