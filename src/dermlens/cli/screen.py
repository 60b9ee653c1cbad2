"""``dermlens screen [run] | train-head``: wide-field screening for ugly ducklings."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import ModelOption, OverwriteOption, QuietOption, batch_group, refuse_to_replace

app = batch_group("Wide-field screening: `dermlens screen PHOTO... --out DIR` finds lesions and ranks ugly ducklings; or train-head (labelled photos from `python benchmarks/screen_benchmark.py`).")


@app.command("run")
def run(
    photos: Annotated[list[Path], typer.Argument(help="Wide-field photos (files or folders).")],
    out: Annotated[Path, typer.Option(help="Output folder: <stem>.json, <stem>.annotated.jpg, <stem>.crops/rank<k>.jpg.")],
    model: ModelOption = None,
    lesion_head: Annotated[Optional[Path], typer.Option(help="Lesion/not-lesion head folder; default the bundled one.")] = None,
    per_photo: Annotated[bool, typer.Option("--per-photo", help="Each photo is its own patient (default: all photos are one patient).")] = False,
    patients: Annotated[Optional[Path], typer.Option(help="CSV with columns image,patient grouping the photos into patients.")] = None,
    size_weight: Annotated[float, typer.Option(help="Share of relative size in the ugly-duckling score (0-1).")] = 0.0,
    top_crops: Annotated[int, typer.Option(help="Crops written for this many top-ranked lesions per photo.")] = 5,
    tta: Annotated[int, typer.Option(min=1, max=8, help="Orientation views averaged per lesion crop (1-8); default 8: a lesion's answer does not depend on how the photo was turned. --tta 1 for long batch runs.")] = 8,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
):
    """Find every pigmented lesion, flag the suspicious ones, rank each patient's ugly ducklings (rank 1 = most unlike)."""
    # one call ranks one patient's photos against each other: results of another call in the same folder are refused
    refuse_to_replace(out, ["*.json", "*.annotated.jpg", "*.crops"], overwrite)
    from dermlens.data.io import find_images
    from dermlens.screen.screener import ScreenConfig, Screener, patient_ids, screen_files

    files = find_images(photos)
    groups = patient_ids(files, "photo" if per_photo else "all", patients)
    screener = Screener(model, lesion_head, ScreenConfig(size_weight=size_weight), tta=tta)
    summary = screen_files(screener, files, out, groups, top_crops=top_crops, progress=not quiet,
                           on_error=lambda name, problem: typer.echo(f"{name}: {problem}", err=True))
    lesions = sum(len(r.lesions) for r in summary.results)
    suspicious = sum(lesion.suspicious for r in summary.results for lesion in r.lesions)
    typer.echo(f"{len(files)} photos ({len(summary.failed)} failed): {lesions} lesions, {suspicious} suspicious; outputs in {out}")
    if summary.failed or not files:
        raise typer.Exit(1)


@app.command("train-head")
def train_head_command(
    benchmark: Annotated[Path, typer.Option(help="A benchmark made from the train split (`python benchmarks/screen_benchmark.py --split train`).")],
    out: Annotated[Path, typer.Option(help="Folder for lesion_head.safetensors and lesion_head.json.")],
    model: Annotated[Optional[Path], typer.Option(help="Classifier folder whose embedding the head reads; default the bundled model.")] = None,
    target_recall: Annotated[float, typer.Option(help="Share of true lesions the head's threshold lets through (held-out photos).")] = 0.995,
    overwrite: Annotated[bool, typer.Option(help="Replace a lesion head already in --out (otherwise refused).")] = False,
    quiet: QuietOption = False,
):
    """Train the lesion/not-lesion head on detector candidates of a train-split benchmark."""
    from dermlens.screen.lesion_head import HEAD_WEIGHTS
    from dermlens.screen.train_head import train_lesion_head

    if (out / HEAD_WEIGHTS).exists() and not overwrite:
        raise typer.BadParameter(f"{out} already holds a lesion head; pass --overwrite to replace it", param_hint="'--out'")

    folder = train_lesion_head(benchmark, out, model, target_recall=target_recall, progress=not quiet)
    typer.echo(f"lesion head: {folder}\n{(folder / 'lesion_head.json').read_text()}")
