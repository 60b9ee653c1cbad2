"""``dermlens segment [run] | train | evaluate``: lesion tissue-fraction segmentation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import OverwriteOption, QuietOption, batch_group, refuse_to_replace

app = batch_group("Lesion tissue-fraction segmentation: `dermlens segment IMAGE... --out DIR`, or train / evaluate a segmenter.")

SegmenterOption = Annotated[Optional[Path], typer.Option(help="A segmenter folder; default: the bundled one.")]


@app.command("run")
def run(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    out: Annotated[Path, typer.Option(help="Output folder: <stem>_fraction.png, <stem>_mask.png, measurements.csv.")],
    model: SegmenterOption = None,
    tta: Annotated[bool, typer.Option(help="Average over flips.")] = True,
    mm_per_pixel: Annotated[Optional[float], typer.Option(help="Scale of the photos, to add measurements in mm.")] = None,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
):
    """Per-pixel lesion fraction (8-bit PNG, 255 = all lesion), binary mask at 0.5, and lesion measurements."""
    refuse_to_replace(out, ["measurements.csv"], overwrite)
    from dermlens.segment.batch import segment_images
    from dermlens.segment.segmenter import Segmenter

    rows = segment_images(images, out, Segmenter(model, tta=tta), mm_per_pixel=mm_per_pixel, progress=not quiet)
    failed = [r for r in rows if r["error"]]
    for row in failed:
        typer.echo(f"error: {row['error']}", err=True)
    typer.echo(f"{len(rows) - len(failed)} segmented, {len(failed)} failed; {out / 'measurements.csv'}")
    if failed or not rows:
        raise typer.Exit(1)


@app.command("train")
def train(
    data: Annotated[Path, typer.Option(help="Dataset with labels.csv columns image, mask and split (e.g. ../shared/data/ham10000).")],
    out: Annotated[Path, typer.Option(help="Run folder: model/, checkpoint/, metrics.jsonl.")],
    epochs: int = 10,
    batch_size: int = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the decoder (the encoder gets a tenth).")] = 1e-3,
    width: Annotated[int, typer.Option(help="Model grid width.")] = 192,
    height: Annotated[int, typer.Option(help="Model grid height.")] = 144,
    target: Annotated[str, typer.Option(help="fraction (soft-label cross-entropy) or binary (the conventional baseline).")] = "fraction",
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (quick runs).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start again in a run folder that holds a run (its checkpoint and log are replaced).")] = False,
    seed: int = 0,
    quiet: QuietOption = False,
):
    """Train a tissue-fraction U-Net (EfficientNet-Lite0 encoder) on the dataset's `train` split, select on `val`."""
    from dermlens.segment.pairs import load_pairs
    from dermlens.segment.training import SegmentTrainConfig, train_segmenter

    if target not in ("fraction", "binary"):
        raise typer.BadParameter("fraction or binary", param_hint="--target")
    cfg = SegmentTrainConfig(input_size=(width, height), epochs=epochs, batch_size=batch_size, lr=lr, target=target,
                             max_steps_per_epoch=max_steps_per_epoch, seed=seed)
    train_pairs, val_pairs = load_pairs(data, "train"), load_pairs(data, "val")
    model_dir = train_segmenter(train_pairs, val_pairs, out, cfg, resume=resume, overwrite=overwrite, progress=not quiet,
                                provenance={"data": str(data), "train_images": len(train_pairs), "val_images": len(val_pairs)})
    typer.echo(f"model: {model_dir}")


@app.command("evaluate")
def evaluate(
    data: Annotated[Path, typer.Option(help="Dataset with labels.csv columns image and mask.")],
    model: SegmenterOption = None,
    split: Annotated[Optional[str], typer.Option(help="Only this split (e.g. test); default: every row with a mask.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write metrics.json (with per-image Jaccard) here.")] = None,
    tta: bool = True,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
):
    """Mean Jaccard and ISIC thresholded Jaccard (0 below 0.65), with 95% bootstrap intervals."""
    refuse_to_replace(out, ["metrics.json"], overwrite)
    from dermlens.segment.evaluation import evaluate_dataset

    metrics = evaluate_dataset(data, model, split=split, tta=tta, progress=not quiet)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "per_image"}, indent=2))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
