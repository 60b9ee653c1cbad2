"""The ``dermlens`` command: one module per command group, each parsing arguments and printing, the work done by
one library call. This module builds the top-level group, turns a user's mistake into one line (``--debug`` shows
the traceback) and registers the groups. Start-up stays cheap: command modules import heavy libraries (torch...)
inside their commands, so ``dermlens --help`` never loads them.

    classify   train, evaluate, predict, export, operating-point, model-card
    study      study (``make demo``'s job), demo, report, explain
    serve      serve
    taxonomy / segment / screen / gate / pet   their command groups
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from dermlens.cli import classify, gate, screen, segment, serve, study, taxonomy
from dermlens.cli.pet import pet_app

# Errors that are the user's to fix (a missing file, a dataset in an unknown layout, a label the taxonomy lacks...):
# one line and exit code 2, not a traceback. ``--debug`` (or DERMLENS_DEBUG=1) shows the traceback for bug reports.
USER_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the dermlens package


def is_user_error(error: BaseException) -> bool:
    """True for errors with a message meant for the user: dermlens's own error types, file-system mistakes, and a
    ValueError that dermlens raised itself (its last frame is dermlens code). A ValueError from inside a library is
    a bug and keeps its traceback."""
    if isinstance(error, USER_FILE_ERRORS) or type(error).__module__.split(".")[0] == "dermlens":
        return True
    if isinstance(error, ValueError) and error.__traceback__ is not None:
        tb = error.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)
    return False


class UserError(typer.TyperException):
    """A user's mistake, told in one line."""

    exit_code = 2


def is_bare_group_help(error: typer.TyperException) -> bool:
    """The "error" a group called without a command raises (``no_args_is_help``): its message is its help text
    (empty when Rich has already printed the help). Told by what it carries, through Typer's public names only
    (its Click exception classes are private)."""
    message = error.format_message().strip()
    return getattr(error, "ctx", None) is not None and (not message or message.startswith("Usage:"))


class DermlensGroup(TyperGroup):
    """The top-level command group: every error a user can fix is reported in ONE line, exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):  # Typer's own (usage errors among them)
            raise
        except Exception as e:  # noqa: BLE001 - sorted below: user errors become one line, bugs keep their traceback
            if ctx.params.get("debug") or not is_user_error(e):
                raise
            where = f"{ctx.command_path} {ctx.invoked_subcommand}" if ctx.invoked_subcommand else ctx.command_path
            raise UserError(f"{where}: error: {e}") from e

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as e:
            if isinstance(e, UserError):
                typer.echo(e.format_message(), err=True)
            elif is_bare_group_help(e):  # a bare group: its help, as typer shows it
                typer.echo(e.format_message(), err=True)
            elif getattr(e, "ctx", None) is not None or e.exit_code == 2:  # a usage error: one line naming the problem
                path = e.ctx.command_path if getattr(e, "ctx", None) else (prog_name or "dermlens")
                typer.echo(f"{path}: error: {e.format_message()} (see {path} --help)", err=True)
            else:
                typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=DermlensGroup, add_completion=False, no_args_is_help=True, help="Skin-lesion classification over a disease taxonomy (research tool, not a medical device).")


@app.callback()
def top_level_options(
    debug: Annotated[bool, typer.Option("--debug", envvar="DERMLENS_DEBUG", help="Show the full traceback of an error (for bug reports).")] = False,
):
    pass  # --debug is read by DermlensGroup.invoke from the context


app.add_typer(study.app)
app.add_typer(classify.app)
app.add_typer(serve.app)
app.add_typer(taxonomy.app, name="taxonomy")
app.add_typer(segment.app, name="segment")
app.add_typer(screen.app, name="screen")
app.add_typer(gate.app, name="gate")
app.add_typer(pet_app, name="pet")


def main():  # pragma: no cover - the console-script entry point
    from dermlens.runtime import reexec_with_jemalloc

    reexec_with_jemalloc()
    app(prog_name="dermlens")

