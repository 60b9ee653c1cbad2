"""``dermlens train | evaluate | predict | export | operating-point | model-card``: the classifier's life cycle.
Argument parsing and printing only; each command hands its work to one library call."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import (
    ArchOption, MaxClassSizeOption, ModelOption, OverwriteOption, TtaOption, WeightsOption, WorkersOption,
    refuse_to_replace,
)

app = typer.Typer()

DataOption = Annotated[Path, typer.Option(exists=True, help="Labelled dataset.")]
# predict.engines.PRECISIONS, restated so that a wrong --engine/--precision is told before torch loads (importing
# predict.engines imports torch); tests/test_cli_startup.py keeps the two equal
ENGINE_PRECISIONS = {"auto": ("fp32", "bf16", "int8"), "torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}


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
    balance: Annotated[str, typer.Option(help="Class imbalance: tree (the recipe: sampled down the taxonomy, first-level groups then classes, by square roots), sqrt, none, loss or sampler.")] = "tree",
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
    if resume and overwrite:  # options first: a mistake is told before torch loads
        raise typer.BadParameter("--resume and --overwrite contradict each other; choose one", param_hint="'--overwrite'")
    from dermlens.data.datasets import load_pooled, load_records
    from dermlens.data.splits import train_val_parts
    from dermlens.taxonomy.partition import esteva_max_class_size
    from dermlens.train.recipe import TrainConfig, train

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
    overwrite: OverwriteOption = False,
):
    """Score a model on a labelled dataset: balanced accuracy, 3-/9-way, AUCs with bootstrap CIs."""
    refuse_to_replace(out, ["metrics.json"], overwrite)
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
    format: Annotated[Optional[str], typer.Option("--format", help="csv or json (an array, valid after every batch and after Ctrl-C); --backend ray: parquet (the default) or csv (both).")] = None,
    out: Annotated[Optional[Path], typer.Option(file_okay=False, help="Write predictions.<format> into this folder instead of stdout.")] = None,
    tta: Annotated[Optional[int], typer.Option(min=1, max=8, help="Orientation views averaged (1-8: flips and right-angle turns). Default: 8 for up to 32 photos (the same answer however a photo is turned), 1 for more (a batch run; 8 costs eight times as much). --tta 1 turns it off.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    engine: Annotated[str, typer.Option(help="auto (ONNX Runtime fp32 when installed, else torch), torch or onnx; the ONNX export is made and cached on first use.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 (torch) or int8 (onnx; needs `dermlens export --int8` first).")] = "fp32",
    workers: Annotated[int, typer.Option(min=0, help="Decoding worker processes (0: decode in this process).")] = 2,
    resume: Annotated[bool, typer.Option(help="Skip images already in --out's predictions file and append the rest.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Resume, and predict again the images whose earlier row is an error.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing predictions file in --out (otherwise refused).")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
    modality: Annotated[str, typer.Option(help="dermoscopic, clinical, or auto (recognised per image): picks the triage operating point.")] = "auto",
    gate: Annotated[bool, typer.Option("--gate/--no-gate", help="Check each photo first (not skin, poor photo, a wide-field photo for `dermlens screen`, out of distribution); --no-gate is for research and writes quality=not_checked.")] = True,
    backend: Annotated[str, typer.Option(help="local (worker processes on this machine) or ray (Ray Data actor pool; Parquet in --out; docs/prediction.md).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="--backend ray: an existing cluster's address (ray start --head prints it); default a local Ray for this run.")] = None,
    actors: Annotated[Optional[int], typer.Option(min=1, help="--backend ray: actors, one model each; default as many as the cluster's CPUs hold.")] = None,
    actor_cpus: Annotated[int, typer.Option(min=1, help="--backend ray: CPUs (engine threads) per actor.")] = 1,
):
    """Per image: probability of every taxonomy node (p_<node>: the sum of the training classes at or below it), the most likely training class (top1_class; JSON: top5, the network's own outputs) and a triage call (refer/non_neoplastic/reassure, or retake/cannot_assess when the photo gate stops it: then no numbers)."""
    if backend != "local":
        return _predict_on_ray(**locals())  # every option, by name
    format = format or "csv"
    # Every option is checked before the output file is touched (a mistake never costs earlier results) and before
    # torch and the model load (a mistake is told at once).
    if format not in ("csv", "json"):
        raise typer.BadParameter(f"csv or json; got {format!r}", param_hint="'--format'")
    if modality not in ("auto", "dermoscopic", "clinical"):
        raise typer.BadParameter(f"auto, dermoscopic or clinical; got {modality!r}", param_hint="'--modality'")
    if engine not in ENGINE_PRECISIONS:
        raise typer.BadParameter(f"{', '.join(ENGINE_PRECISIONS)}; got {engine!r}", param_hint="'--engine'")
    if precision not in ENGINE_PRECISIONS[engine]:
        raise typer.BadParameter(f"engine {engine} runs {' or '.join(ENGINE_PRECISIONS[engine])}; got {precision!r}",
                                 param_hint="'--precision'")
    resume = resume or retry_failed
    if resume and out is None:
        raise typer.BadParameter("--resume and --retry-failed need --out", param_hint="'--resume'")
    if resume and overwrite:
        raise typer.BadParameter("--resume continues the file and --overwrite replaces it: give one", param_hint="'--overwrite'")
    target = out / f"predictions.{format}" if out else None
    if target is not None and not (resume or overwrite) and target.is_file() and target.stat().st_size:
        raise typer.BadParameter(f"{target} already holds results; add --resume to finish it (--retry-failed also "
                                 "retries its errors) or --overwrite to replace it", param_hint="'--out'")
    from dermlens.models.inference import default_tta
    from dermlens.predict import Predictor
    from dermlens.predict.batch import collect_inputs, predict_files

    files = collect_inputs(paths, on_empty=lambda message: typer.echo(f"warning: {message}", err=True))
    if tta is None:  # a resumed run keeps the views it started with, whatever the number of photos left
        from dermlens.predict.run_settings import read_settings

        recorded = read_settings(target) if resume else None
        tta = recorded["tta"] if recorded and "tta" in recorded else default_tta(len(files))
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
                   f"(engine: {summary.engine}, orientation views: {predictor.tta})", err=True)
    if summary.failed_in_file:  # the exit code describes the whole file, earlier runs' rows too
        raise typer.Exit(1)


def _predict_on_ray(paths, model, format, out, tta, batch_size, engine, precision, resume, retry_failed, overwrite,
                    progress, modality, gate, backend, ray_address, actors, actor_cpus, workers):
    """``predict --backend ray``: the same inputs, Parquet (and CSV) in --out; ray is imported only here."""
    from dermlens.predict.batch import collect_inputs
    from dermlens.predict.ray_batch import predict_on_ray

    if backend != "ray":
        raise typer.BadParameter(f"local or ray; got {backend!r}", param_hint="'--backend'")
    if format not in (None, "parquet", "csv"):
        raise typer.BadParameter(f"--backend ray writes parquet, or parquet and csv; got {format!r}", param_hint="'--format'")
    if modality not in ("auto", "dermoscopic", "clinical"):
        raise typer.BadParameter(f"auto, dermoscopic or clinical; got {modality!r}", param_hint="'--modality'")
    if out is None:
        raise typer.BadParameter("--backend ray writes a Parquet dataset: give --out (on a cluster, a folder every node can write)", param_hint="'--out'")
    if (resume or retry_failed) and overwrite:
        raise typer.BadParameter("--resume continues the results and --overwrite replaces them: give one", param_hint="'--overwrite'")
    files = collect_inputs(paths, on_empty=lambda message: typer.echo(f"warning: {message}", err=True))
    summary = predict_on_ray(
        files, out, model_dir=model, engine=engine, precision=precision, tta=tta or 1, gate=gate,  # a batch: 1 view unless asked
        modality=None if modality == "auto" else modality, batch_size=batch_size, address=ray_address, actors=actors,
        cpus_per_actor=actor_cpus, resume=resume or retry_failed, retry_failed=retry_failed, overwrite=overwrite,
        csv=format == "csv", progress=progress)
    typer.echo(summary.line(), err=True)
    if summary.failed_in_file:  # as the local path: the exit code describes every row of these photos
        raise typer.Exit(1)


@app.command("export")
def export_command(
    format: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    model: ModelOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for model.onnx (and model.int8.onnx); default the user cache the predictor reads.")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write a statically quantized int8 model.")] = False,
    calibration_data: Annotated[Optional[Path], typer.Option(help="Images to calibrate int8 on: a folder of images or a dataset (its train split).")] = None,
    calibration_size: Annotated[int, typer.Option(help="How many calibration images to use at most.")] = 200,
    overwrite: OverwriteOption = False,
):
    """Export the classifier (preprocessed image in, training-class probabilities out) for ONNX Runtime."""
    if format != "onnx":
        raise typer.BadParameter("only --format onnx is supported", param_hint="'--format'")
    if int8 and calibration_data is None:
        raise typer.BadParameter("--int8 needs --calibration-data (a folder of images or a dataset)", param_hint="'--int8'")
    refuse_to_replace(out, ["model.onnx", "model.int8.onnx"], overwrite)
    from dermlens.predict.export import export_model
    from dermlens.deploy.quantize import int8_triage_shift
    from dermlens.predict import bundled_model_dir

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
    data: Annotated[list[Path], typer.Option(exists=True, help="Labelled validation data (never the test set); repeat to pool several datasets.")],
    model: ModelOption = None,
    split: Annotated[Optional[str], typer.Option(help="Use only this fixed split of the data (empty: all of it).")] = "val",
    target_sensitivity: Annotated[float, typer.Option(help="Sensitivity for malignant lesions to reach.")] = 0.9,
    out: Annotated[Optional[Path], typer.Option(file_okay=False, help="Write the re-tuned model (a whole copy of the folder) here; default: update the model in place.")] = None,
    engine: Annotated[str, typer.Option(help="The engine your users run (auto, torch or onnx): the thresholds are tuned on its probabilities.")] = "auto",
    precision: Annotated[str, typer.Option(help="Its precision: fp32, bf16 (torch) or int8 (onnx; needs `dermlens export --int8` first).")] = "fp32",
    tta: TtaOption = 1,
    workers: WorkersOption = 2,
    overwrite: OverwriteOption = False,
):
    """Choose the referral thresholds afresh on a site's own validation data for a target sensitivity: the pooled
    one and each modality's the data has photos of (its modality column)."""
    if out is not None and (model is None or out.resolve() != model.resolve()):  # --out MODEL is the in-place update
        refuse_to_replace(out, ["config.json"], overwrite)
    from dermlens.data.datasets import load_records
    from dermlens.data.splits import in_split
    from dermlens.predict import bundled_model_dir
    from dermlens.study.evaluate import set_operating_point

    records = [r for folder in data for r in in_split(load_records(folder), split, folder)]
    result = set_operating_point(model or bundled_model_dir(), records, target_sensitivity, out, engine=engine,
                                 precision=precision, tta=tta, num_workers=workers)
    for name, op in result.tuned.items():
        was = result.before.get(name)
        typer.echo(f"{name}: refer when P({op.node}) >= {op.threshold:.4f}"
                   + (f" (was {was.threshold:.4f})" if was else "")
                   + f": sensitivity {op.sensitivity:.3f}, specificity {op.specificity:.3f} on {op.chosen_on}")
        if op.non_neoplastic_threshold is not None:
            typer.echo(f"{name}: else non_neoplastic when P(non_neoplastic) >= {op.non_neoplastic_threshold:.4f}: "
                       f"{op.non_neoplastic_recall:.3f} of the non-neoplastic photos not referred, "
                       f"{op.benign_called_non_neoplastic:.3f} of the benign ones")
    for name, why in result.untuned.items():
        typer.echo(f"{name}: not re-tuned ({why}); it stays as it was", err=True)
    typer.echo(f"model: {result.model_dir}", err=True)


@app.command("model-card")
def model_card(model: ModelOption = None):
    """Print the model card: intended use, training data, operating point and measured figures."""
    from dermlens.predict import bundled_model_dir

    card = (model or bundled_model_dir()) / "MODEL_CARD.md"
    if not card.is_file():
        raise FileNotFoundError(f"{card}: this model has no model card")
    typer.echo(card.read_text())
