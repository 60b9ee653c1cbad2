"""``dermlens train | evaluate | predict | export | operating-point | model-card``: the classifier's life cycle.
Argument parsing and printing only; each command hands its work to one library call."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import ArchOption, MaxClassSizeOption, ModelOption, TtaOption, WeightsOption, WorkersOption

app = typer.Typer()

DataOption = Annotated[Path, typer.Option(exists=True, help="Labelled dataset.")]


@app.command("train")
def train_command(
    data: Annotated[list[Path], typer.Option(exists=True, help="Dataset folder or CSV (HAM10000, ISIC, PH2, generic CSV, class folders); repeat to pool several.")],
    out: Annotated[Path, typer.Option(help="Run folder: model/, checkpoint/, metrics.jsonl.")],
    arch: ArchOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    epochs: Annotated[int, typer.Option(min=1)] = 12,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW; warm-up then cosine).")] = 6e-4,
    image_size: Annotated[Optional[int], typer.Option(help="Input size; default the backbone's.")] = None,
    max_class_size: MaxClassSizeOption = None,
    balance: Annotated[str, typer.Option(help="Class imbalance: none, sqrt, tree (down the taxonomy: for pooled data with many small classes), loss or sampler.")] = "sqrt",
    augment: Annotated[str, typer.Option(help="Augmentation: paper, light, robust (paper plus JPEG, resolution loss, blur, noise, white balance) or camera (other cameras: zoom, squash, resolution, colour, blur, JPEG).")] = "paper",
    precision: Annotated[str, typer.Option(help="Training step precision: fp32 or bf16 (autocast; faster on CPUs with AMX).")] = "fp32",
    label_smoothing: float = 0.1,
    tree_loss_weight: Annotated[float, typer.Option(min=0, help="Also train on the tree's sums: this weight times the NLL of the true 3-way and 9-way nodes (0: cross-entropy over the training classes only).")] = 0.0,
    color_constancy: Annotated[bool, typer.Option(help="Shades-of-Gray colour constancy before normalisation.")] = True,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without validation improvement.")] = 4,
    target_sensitivity: Annotated[float, typer.Option(help="Referral threshold chosen on validation for this sensitivity.")] = 0.9,
    val_fraction: Annotated[float, typer.Option(help="Validation share when the dataset has no fixed split.")] = 0.15,
    workers: WorkersOption = 2,
    seed: int = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Start again in a run folder that holds a checkpoint.")] = False,
    include: Annotated[Optional[list[Path]], typer.Option(help="Extra datasets added to the training part only.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(help="Start from this trained model (same classes), e.g. a higher-resolution second stage.")] = None,
):
    """Fine-tune an ImageNet backbone on a dataset over the taxonomy's training classes."""
    from dermlens.data.datasets import load_pooled, load_records
    from dermlens.data.splits import train_val_parts
    from dermlens.taxonomy.partition import esteva_max_class_size
    from dermlens.train.recipe import TrainConfig, train

    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite contradict each other; choose one", param_hint="'--overwrite'")
    extra = [r for folder in include or [] for r in load_records(folder)]
    train_records, val_records = train_val_parts(load_pooled(data), val_fraction=val_fraction, seed=seed, extra_train=extra)
    cfg = TrainConfig(
        arch=arch, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
        max_class_size=esteva_max_class_size(len(train_records)) if max_class_size is None else max_class_size,
        balance=balance, augment=augment, label_smoothing=label_smoothing, color_constancy=color_constancy,
        patience=patience, target_sensitivity=target_sensitivity, num_workers=workers, seed=seed,
        init_from=str(init_from) if init_from else None, precision=precision,
        tree_loss_weight=tree_loss_weight,
    )
    provenance = {"data": [str(d) for d in data], "include": [str(p) for p in include or []]}
    result = train(train_records, val_records, out, cfg, resume=resume, overwrite=overwrite, provenance=provenance)
    typer.echo(f"best epoch {result.best_epoch}: validation balanced accuracy {result.best_score:.3f}")
    typer.echo(f"model: {result.model_dir}   log: {out / 'metrics.jsonl'}   checkpoint: {out / 'checkpoint'}")


@app.command()
def evaluate(
    data: DataOption,
    model: ModelOption = None,
    split: Annotated[Optional[str], typer.Option(help="Only this fixed split (train/val/test) of the dataset.")] = None,
    out: Annotated[Optional[Path], typer.Option(file_okay=False, help="Write metrics.json here.")] = None,
    tta: TtaOption = 1,
    workers: Annotated[int, typer.Option(min=0)] = 2,
):
    """Score a model on a labelled dataset: balanced accuracy, 3-/9-way, AUCs with bootstrap CIs."""
    from dermlens.data.datasets import load_records
    from dermlens.data.splits import in_split
    from dermlens.predict import bundled_model_dir
    from dermlens.study.evaluate import evaluate_model

    records = in_split(load_records(data), split, data)
    result = evaluate_model(model or bundled_model_dir(), records, num_workers=workers, tta=tta)
    text = json.dumps(result.metrics, indent=2)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(text + "\n")
    typer.echo(text)


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders, or CSV lists of images (column image/path, or the first).")],
    model: ModelOption = None,
    format: Annotated[str, typer.Option("--format", help="csv or json (an array, valid after every batch and after Ctrl-C).")] = "csv",
    out: Annotated[Optional[Path], typer.Option(file_okay=False, help="Write predictions.<format> into this folder instead of stdout.")] = None,
    tta: Annotated[int, typer.Option(min=1, max=8, help="Test-time augmentation views (1-8): flips and right-angle rotations, averaged.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    engine: Annotated[str, typer.Option(help="auto (ONNX Runtime fp32 when installed, else torch), torch or onnx; the ONNX export is made and cached on first use.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 (torch) or int8 (onnx; needs `dermlens export --int8` first).")] = "fp32",
    workers: Annotated[int, typer.Option(min=0, help="Decoding worker processes (0: decode in this process).")] = 2,
    resume: Annotated[bool, typer.Option(help="Skip images already in --out's predictions file and append the rest.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Resume, and predict again the images whose earlier row is an error.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing predictions file in --out (otherwise refused).")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
    modality: Annotated[str, typer.Option(help="dermoscopic, clinical, or auto (recognised per image): picks the triage operating point.")] = "auto",
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="Check each photo first (not skin, poor photo, out of distribution); --no-gate is for research and writes quality=not_checked.")] = True,
):
    """Per image: probability of every taxonomy node, top-5 diseases and a triage call (refer/reassure, or retake/cannot_assess when the photo gate stops it)."""
    from dermlens.predict import Predictor
    from dermlens.predict.batch import collect_inputs, predict_files

    # Every option is checked before the output file is touched: a mistake never costs earlier results.
    if format not in ("csv", "json"):
        raise typer.BadParameter(f"csv or json; got {format!r}", param_hint="'--format'")
    if modality not in ("auto", "dermoscopic", "clinical"):
        raise typer.BadParameter(f"auto, dermoscopic or clinical; got {modality!r}", param_hint="'--modality'")
    resume = resume or retry_failed
    if resume and out is None:
        raise typer.BadParameter("--resume and --retry-failed need --out", param_hint="'--resume'")
    if resume and overwrite:
        raise typer.BadParameter("--resume continues the file and --overwrite replaces it: give one", param_hint="'--overwrite'")
    target = out / f"predictions.{format}" if out else None
    if target is not None and not (resume or overwrite) and target.is_file() and target.stat().st_size:
        raise typer.BadParameter(f"{target} already holds results; add --resume to finish it (--retry-failed also "
                                 "retries its errors) or --overwrite to replace it", param_hint="'--out'")
    files = collect_inputs(paths, on_empty=lambda message: typer.echo(f"warning: {message}", err=True))
    predictor = Predictor(model, tta=tta, engine=engine, precision=precision, gate=gate)
    summary = predict_files(
        predictor, files, target, format=format, batch_size=batch_size, num_workers=workers, resume=resume,
        retry_failed=retry_failed, overwrite=overwrite, progress=progress,
        on_error=lambda name, error: typer.echo(f"{name}: {error}", err=True),
        modality=None if modality == "auto" else modality,
    )
    if out:
        skipped = f", {summary.skipped} already done" if summary.skipped else ""
        earlier = (f" (and {summary.earlier_failed} failed in an earlier run; --retry-failed tries them again)"
                   if summary.earlier_failed else "")
        typer.echo(f"{summary.total} images{skipped}, {summary.failed} failed{earlier}; predictions in {target} "
                   f"(engine: {summary.engine})", err=True)
    if summary.failed_in_file:  # the exit code describes the whole file, earlier runs' rows too
        raise typer.Exit(1)


@app.command("export")
def export_command(
    format: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    model: ModelOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for model.onnx (and model.int8.onnx); default the user cache the predictor reads.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write a statically quantized int8 model.")] = False,
    calibration_data: Annotated[Optional[Path], typer.Option(help="Images to calibrate int8 on: a folder of images or a dataset (its train split).")] = None,
    calibration_size: Annotated[int, typer.Option(help="How many calibration images to use at most.")] = 200,
):
    """Export the classifier (preprocessed image in, training-class probabilities out) for ONNX Runtime."""
    from dermlens.deploy.export import export_model
    from dermlens.deploy.quantize import int8_triage_shift
    from dermlens.predict import bundled_model_dir

    if format != "onnx":
        raise typer.BadParameter("only --format onnx is supported", param_hint="'--format'")
    if int8 and calibration_data is None:
        raise typer.BadParameter("--int8 needs --calibration-data (a folder of images or a dataset)", param_hint="'--int8'")
    written = export_model(model or bundled_model_dir(), out, int8=int8, calibration_data=calibration_data,
                           calibration_size=calibration_size, progress=True)
    for precision, path in written.items():
        typer.echo(f"{precision}: {path}")
    if "int8" in written:
        shift = int8_triage_shift(written["int8"]) or {}
        for name, point in shift.get("operating_points", {}).items():
            changed = point["calls_changed"]
            typer.echo(f"int8 vs fp32 on {shift['images']} calibration images, {name} operating point: {changed} "
                       f"triage call(s) changed, P(node) moved by {point['max_probability_change']:.4f} at most"
                       + (" -- WARNING: int8 reuses fp32's threshold; re-tune it on validation data with "
                          "`dermlens operating-point` or prefer fp32" if changed else ""), err=bool(changed))
    if out:
        typer.echo(f"`dermlens predict --model {out} --engine onnx` runs this folder.")


@app.command("operating-point")
def operating_point(
    data: Annotated[Path, typer.Option(exists=True, help="Labelled validation data (never the test set).")],
    model: ModelOption = None,
    split: Annotated[Optional[str], typer.Option(help="Use only this fixed split of the data (empty: all of it).")] = "val",
    target_sensitivity: Annotated[float, typer.Option(help="Sensitivity for malignant lesions to reach.")] = 0.9,
    out: Annotated[Optional[Path], typer.Option(help="Write the re-tuned model here; default: update the model in place.")] = None,
):
    """Choose the referral threshold afresh on a site's own validation data for a target sensitivity."""
    from dermlens.data.datasets import load_records
    from dermlens.data.splits import in_split
    from dermlens.predict import bundled_model_dir
    from dermlens.study.evaluate import set_operating_point

    records = in_split(load_records(data), split, data)
    op = set_operating_point(model or bundled_model_dir(), records, target_sensitivity, out)
    typer.echo(
        f"refer when P({op.node}) >= {op.threshold:.4f}: sensitivity {op.sensitivity:.3f}, "
        f"specificity {op.specificity:.3f} on {op.chosen_on}"
    )


@app.command("model-card")
def model_card(model: ModelOption = None):
    """Print the model card: intended use, training data, operating point and measured figures."""
    from dermlens.predict import bundled_model_dir

    card = (model or bundled_model_dir()) / "MODEL_CARD.md"
    if not card.is_file():
        raise FileNotFoundError(f"{card}: this model has no model card")
    typer.echo(card.read_text())
