"""What several command modules share: the options they all take, declared once, the refusal to replace earlier
results, and the command group that runs its ``run`` command when no subcommand is named."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

ModelOption = Annotated[Optional[Path], typer.Option(help="Model folder; default the bundled model.")]
QuietOption = Annotated[bool, typer.Option(help="No progress bars.")]
WorkersOption = Annotated[int, typer.Option(min=0, help="Data-loading worker processes.")]
TtaOption = Annotated[int, typer.Option(min=1, max=8, help="Test-time augmentation views (1-8).")]
ArchOption = Annotated[str, typer.Option(help="Backbone: efficientnet_lite0, inception_v3 or timm:<name>.")]
WeightsOption = Annotated[Optional[str], typer.Option(help="Local ImageNet weights file (for archs without packaged weights).")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace earlier results in --out (otherwise refused).")]
MaxClassSizeOption = Annotated[Optional[float], typer.Option(
    help="Partitioning threshold (images per training class); default the paper's 1,000 per 129,450 images, "
         "scaled to the data.")]


class DefaultCommandGroup(TyperGroup):
    """A command group that runs its ``run`` command when the first argument names none of its subcommands.

    So ``dermlens segment a.jpg b.jpg`` means ``dermlens segment run a.jpg b.jpg`` while
    ``dermlens segment train ...`` still reaches the ``train`` subcommand.
    """

    default_command = "run"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def batch_group(help: str) -> typer.Typer:
    """A command group whose ``run`` command processes a batch of images: ``dermlens GROUP IMAGE... --out DIR``."""
    return typer.Typer(cls=DefaultCommandGroup, no_args_is_help=True, help=help)



def refuse_to_replace(out: Path | None, results: Iterable[str], overwrite: bool) -> None:
    """One line, before anything is loaded or written, when ``out`` already holds earlier results (glob patterns in
    ``results``; a name taken from the user goes through ``glob.escape``) and ``--overwrite`` was not given: no
    command replaces results unasked."""
    if overwrite or out is None or not out.is_dir():
        return
    found = sorted({path.name for pattern in results for path in out.glob(pattern)})
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise typer.BadParameter(f"{out} already holds results ({found[0]}{more}); pass --overwrite to replace "
                                 "them, or choose another folder", param_hint="'--out'")
