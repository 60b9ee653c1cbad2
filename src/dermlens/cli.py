"""The ``dermlens`` command: parses arguments, calls one function per subcommand, prints. No logic of its own."""
from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Skin-lesion classification over a disease taxonomy (research tool, not a medical device).")
taxonomy_app = typer.Typer(no_args_is_help=True, help="Show the disease taxonomy and how a dataset partitions it.")
app.add_typer(taxonomy_app, name="taxonomy")


@app.command()
def demo(
    data: Optional[Path] = typer.Option(None, help="A dataset (any supported layout); default: the embedded synthetic set."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    epochs: int = typer.Option(4, help="Training epochs."),
    image_size: int = typer.Option(128, help="Input size in pixels."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Main job: train a small model, evaluate it on a held-out split, write a report."""
    from dataclasses import replace

    from dermlens.pipeline import DEMO_TRAIN_CONFIG, run_main_job

    cfg = replace(DEMO_TRAIN_CONFIG, epochs=epochs, image_size=image_size)
    report = run_main_job(data, out, cfg, progress=not quiet)
    typer.echo(report.read_text())
    typer.echo(f"Report: {report} (and {report.with_suffix('.html')}); all outputs under {out}/")


@app.command("train")
def train_command(
    data: Path = typer.Option(..., help="Dataset folder or CSV (HAM10000, ISIC, PH2, generic CSV, class folders)."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoint/, metrics.jsonl."),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone: efficientnet_lite0, inception_v3 or timm:<name>."),
    weights: Optional[str] = typer.Option(None, help="Local ImageNet weights file (for archs without packaged weights)."),
    epochs: int = typer.Option(12),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(6e-4, help="Peak learning rate (AdamW; warm-up then cosine)."),
    image_size: Optional[int] = typer.Option(None, help="Input size; default the backbone's."),
    max_class_size: float = typer.Option(1000, help="Partitioning threshold (images per training class)."),
    balance: str = typer.Option("sqrt", help="Class imbalance: none, sqrt, loss or sampler."),
    augment: str = typer.Option("paper", help="Augmentation: paper or light."),
    label_smoothing: float = typer.Option(0.1),
    color_constancy: bool = typer.Option(True, help="Shades-of-Gray colour constancy before normalisation."),
    patience: int = typer.Option(4, help="Early stopping: epochs without validation improvement."),
    target_sensitivity: float = typer.Option(0.9, help="Referral threshold chosen on validation for this sensitivity."),
    val_fraction: float = typer.Option(0.15, help="Validation share when the dataset has no fixed split."),
    workers: int = typer.Option(2, help="Data-loading worker processes."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue from the run folder's last checkpoint."),
    include: Optional[list[Path]] = typer.Option(None, help="Extra datasets added to the training part only."),
):
    """Fine-tune an ImageNet backbone on a dataset over the taxonomy's training classes."""
    from dermlens.data.datasets import load_records
    from dermlens.data.splits import grouped_split
    from dermlens.train.recipe import TrainConfig, train

    records = load_records(data)
    parts = grouped_split(records, val_fraction=val_fraction, test_fraction=0.0 if records[0].split is None else 0.15, seed=seed)
    train_records = parts["train"] + [r for extra in include or [] for r in load_records(extra)]
    cfg = TrainConfig(
        arch=arch, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
        max_class_size=max_class_size, balance=balance, augment=augment, label_smoothing=label_smoothing,
        color_constancy=color_constancy, patience=patience, target_sensitivity=target_sensitivity,
        num_workers=workers, seed=seed,
    )
    result = train(train_records, parts["val"], out, cfg, resume=resume, provenance={"data": str(data), "include": [str(p) for p in include or []]})
    typer.echo(f"best epoch {result.best_epoch}: validation balanced accuracy {result.best_score:.3f}")
    typer.echo(f"model: {result.model_dir}   log: {out / 'metrics.jsonl'}   checkpoint: {out / 'checkpoint'}")


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="Labelled dataset."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    split: Optional[str] = typer.Option(None, help="Only this fixed split (train/val/test) of the dataset."),
    out: Optional[Path] = typer.Option(None, help="Write metrics.json here."),
    tta: int = typer.Option(1, help="Test-time augmentation views (1-8)."),
    workers: int = typer.Option(2),
):
    """Score a model on a labelled dataset: balanced accuracy, 3-/9-way, AUCs with bootstrap CIs."""
    from dermlens.data.datasets import load_records
    from dermlens.pipeline import evaluate_model
    from dermlens.predict import bundled_model_dir

    records = [r for r in load_records(data) if split is None or r.split == split]
    if not records:
        raise typer.BadParameter(f"no records{f' in split {split!r}' if split else ''} in {data}")
    result = evaluate_model(model or bundled_model_dir(), records, num_workers=workers, tta=tta)
    text = json.dumps(result.metrics, indent=2)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(text + "\n")
    typer.echo(text)


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    format: str = typer.Option("csv", "--format", help="csv or json."),
    out: Optional[Path] = typer.Option(None, help="Write predictions.<format> into this folder instead of stdout."),
    tta: int = typer.Option(1, help="Test-time augmentation views (1-8)."),
    batch_size: int = typer.Option(32),
):
    """Per image: probability of every taxonomy node, top-5 diseases and a refer/reassure triage call."""
    from dermlens.data.io import find_images
    from dermlens.predict import NoModelError, Predictor

    if format not in ("csv", "json"):
        raise typer.BadParameter("--format must be csv or json")
    try:
        predictor = Predictor(model, tta=tta)
    except NoModelError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    files = find_images(paths)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        stream = open(out / f"predictions.{format}", "w", newline="")
    else:
        stream = sys.stdout
    failures = 0
    writer = None
    if format == "json":
        stream.write("[")
    first = True
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        for prediction in predictor.predict([str(f) for f in chunk], names=[str(f) for f in chunk], batch_size=batch_size):
            failures += bool(prediction.error)
            if prediction.error:
                typer.echo(f"{prediction.image}: {prediction.error}", err=True)
            if format == "csv":
                if writer is None:
                    fields = ["image", "error", "triage", "top1"] + [f"p_{n}" for n in predictor.node_ids]
                    writer = csv.DictWriter(stream, fieldnames=fields)
                    writer.writeheader()
                row = {"image": prediction.image, "error": prediction.error, "triage": prediction.triage,
                       "top1": prediction.top5[0][0] if prediction.top5 else ""}
                row.update({f"p_{n}": f"{p:.6f}" for n, p in prediction.probabilities.items()})
                writer.writerow(row)
            else:
                stream.write(("\n" if first else ",\n") + json.dumps(prediction.to_dict()))
                first = False
        stream.flush()  # results so far survive a crash
    if format == "json":
        stream.write("\n]\n")
    if out:
        stream.close()
        typer.echo(f"{len(files)} images, {failures} failed; predictions in {out / f'predictions.{format}'}", err=True)
    if failures:
        raise typer.Exit(1)


@taxonomy_app.command("show")
def taxonomy_show():
    """Print the tree with node ids and display names."""
    from dermlens.taxonomy import default_taxonomy

    tax = default_taxonomy()
    typer.echo(f"taxonomy {tax.version} ({len(tax)} nodes, fingerprint {tax.fingerprint()})")
    typer.echo(tax.render())


@taxonomy_app.command("partition")
def taxonomy_partition(
    data: Path = typer.Option(..., help="Dataset whose labels are counted."),
    max_class_size: float = typer.Option(1000, help="Partitioning threshold."),
    split: Optional[str] = typer.Option(None, help="Count only this fixed split."),
):
    """Print the training classes the partitioning algorithm makes from a dataset, with image counts."""
    from dermlens.data.datasets import load_records
    from dermlens.taxonomy import default_taxonomy, partition

    tax = default_taxonomy()
    counts = Counter(r.node for r in load_records(data) if split is None or r.split == split)
    classes = partition(tax, counts, max_class_size)
    typer.echo(f"{len(classes)} training classes from {sum(counts.values())} images (max_class_size {max_class_size:g}):")
    for c in classes:
        suffix = " (images labelled at this node only)" if c.own_only else ""
        typer.echo(f"  {c.node:<45} {c.count:>6}  {tax[c.node].name}{suffix}")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m dermlens.cli
    app()
