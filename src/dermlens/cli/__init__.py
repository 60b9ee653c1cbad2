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
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer >= 0.22 vendors click
from typer.core import TyperGroup

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


class UserError(ClickException):
    """A user's mistake, told in one line."""

    exit_code = 2


class DermlensGroup(TyperGroup):
    """The top-level command group: every error a user can fix is reported in ONE line, exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ClickException, typer.Exit, typer.Abort):
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
        except NoArgsIsHelpError as e:  # a bare group: its help, as typer shows it
            e.show()
            sys.exit(e.exit_code)
        except UsageError as e:  # one line naming the option and the problem
            path = e.ctx.command_path if e.ctx else (prog_name or "dermlens")
            typer.echo(f"{path}: error: {e.format_message()} (see {path} --help)", err=True)
            sys.exit(e.exit_code)
        except ClickException as e:
            typer.echo(e.format_message() if isinstance(e, UserError) else f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=DermlensGroup, add_completion=False, no_args_is_help=True, help="Skin-lesion classification over a disease taxonomy (research tool, not a medical device).")


@app.callback()
def top_level_options(
    debug: bool = typer.Option(False, "--debug", envvar="DERMLENS_DEBUG", help="Show the full traceback of an error (for bug reports)."),
):
    pass

taxonomy_app = typer.Typer(no_args_is_help=True, help="Show the disease taxonomy and how a dataset partitions it.")
app.add_typer(taxonomy_app, name="taxonomy")

from dermlens.cli.pet import pet_app  # noqa: E402  (its commands import their work lazily)

app.add_typer(pet_app, name="pet")


@app.command()
def demo(
    data: Optional[Path] = typer.Option(None, help="A dataset (any supported layout); default: the embedded synthetic set."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    epochs: int = typer.Option(4, help="Training epochs."),
    image_size: int = typer.Option(128, help="Input size in pixels."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Quick job: fine-tune a small model on one grouped split, test it on the held-out part, write a report."""
    from dataclasses import replace

    from dermlens.study.main_job import DEMO_TRAIN_CONFIG, run_main_job

    cfg = replace(DEMO_TRAIN_CONFIG, epochs=epochs, image_size=image_size)
    report = run_main_job(data, out, cfg, progress=not quiet)
    typer.echo(report.read_text())
    typer.echo(f"Report: {report} (and {report.with_suffix('.html')}); all outputs under {out}/")


@app.command("train")
def train_command(
    data: list[Path] = typer.Option(..., exists=True, help="Dataset folder or CSV (HAM10000, ISIC, PH2, generic CSV, class folders); repeat to pool several."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoint/, metrics.jsonl."),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone: efficientnet_lite0, inception_v3 or timm:<name>."),
    weights: Optional[str] = typer.Option(None, help="Local ImageNet weights file (for archs without packaged weights)."),
    epochs: int = typer.Option(12, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(6e-4, help="Peak learning rate (AdamW; warm-up then cosine)."),
    image_size: Optional[int] = typer.Option(None, help="Input size; default the backbone's."),
    max_class_size: Optional[float] = typer.Option(None, help="Partitioning threshold (images per training class); default the paper's 1,000 per 129,450 images, scaled to the training set."),
    balance: str = typer.Option("sqrt", help="Class imbalance: none, sqrt, tree (down the taxonomy: for pooled data with many small classes), loss or sampler."),
    augment: str = typer.Option("paper", help="Augmentation: paper, light or camera (other cameras: zoom, squash, resolution, colour, blur, JPEG)."),
    precision: str = typer.Option("fp32", help="Training step precision: fp32 or bf16 (autocast; faster on CPUs with AMX)."),
    label_smoothing: float = typer.Option(0.1),
    color_constancy: bool = typer.Option(True, help="Shades-of-Gray colour constancy before normalisation."),
    patience: int = typer.Option(4, help="Early stopping: epochs without validation improvement."),
    target_sensitivity: float = typer.Option(0.9, help="Referral threshold chosen on validation for this sensitivity."),
    val_fraction: float = typer.Option(0.15, help="Validation share when the dataset has no fixed split."),
    workers: int = typer.Option(2, min=0, help="Data-loading worker processes."),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="Continue from the run folder's last checkpoint."),
    overwrite: bool = typer.Option(False, help="Start again in a run folder that holds a checkpoint."),
    include: Optional[list[Path]] = typer.Option(None, help="Extra datasets added to the training part only."),
    init_from: Optional[Path] = typer.Option(None, help="Start from this trained model (same classes), e.g. a higher-resolution second stage."),
):
    """Fine-tune an ImageNet backbone on a dataset over the taxonomy's training classes."""
    from dermlens.data.datasets import load_pooled, load_records
    from dermlens.data.splits import pooled_split
    from dermlens.taxonomy.partition import esteva_max_class_size
    from dermlens.train.recipe import TrainConfig, train

    parts = pooled_split(load_pooled(data), val_fraction=val_fraction, seed=seed)
    train_records = parts["train"] + [r for extra in include or [] for r in load_records(extra)]
    if max_class_size is None:
        max_class_size = esteva_max_class_size(len(train_records))
    cfg = TrainConfig(
        arch=arch, weights=weights, epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size,
        max_class_size=max_class_size, balance=balance, augment=augment, label_smoothing=label_smoothing,
        color_constancy=color_constancy, patience=patience, target_sensitivity=target_sensitivity,
        num_workers=workers, seed=seed, init_from=str(init_from) if init_from else None, precision=precision,
    )
    provenance = {"data": [str(d) for d in data], "include": [str(p) for p in include or []]}
    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite contradict each other; choose one")
    try:
        result = train(train_records, parts["val"], out, cfg, resume=resume, overwrite=overwrite, provenance=provenance)
    except ValueError as e:  # a run folder in use, settings that differ, a partition into one class
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(f"best epoch {result.best_epoch}: validation balanced accuracy {result.best_score:.3f}")
    typer.echo(f"model: {result.model_dir}   log: {out / 'metrics.jsonl'}   checkpoint: {out / 'checkpoint'}")


@app.command()
def evaluate(
    data: Path = typer.Option(..., exists=True, help="Labelled dataset."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    split: Optional[str] = typer.Option(None, help="Only this fixed split (train/val/test) of the dataset."),
    out: Optional[Path] = typer.Option(None, file_okay=False, help="Write metrics.json here."),
    tta: int = typer.Option(1, min=1, max=8, help="Test-time augmentation views (1-8)."),
    workers: int = typer.Option(2, min=0),
):
    """Score a model on a labelled dataset: balanced accuracy, 3-/9-way, AUCs with bootstrap CIs."""
    from dermlens.data.datasets import load_records
    from dermlens.study.main_job import evaluate_model
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
    paths: list[Path] = typer.Argument(..., help="Image files, folders, or CSV lists of images (column image/path, or the first)."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    format: str = typer.Option("csv", "--format", help="csv or json (an array, valid after every batch and after Ctrl-C)."),
    out: Optional[Path] = typer.Option(None, file_okay=False, help="Write predictions.<format> into this folder instead of stdout."),
    tta: int = typer.Option(1, min=1, max=8, help="Test-time augmentation views (1-8): flips and right-angle rotations, averaged."),
    batch_size: int = typer.Option(32, min=1),
    engine: str = typer.Option("torch", help="torch or onnx (ONNX Runtime; the export is made and cached on first use)."),
    precision: str = typer.Option("fp32", help="fp32, bf16 (torch) or int8 (onnx; needs `dermlens export --int8` first)."),
    workers: int = typer.Option(2, min=0, help="Decoding worker processes (0: decode in this process)."),
    resume: bool = typer.Option(False, help="Skip images already in --out's predictions file and append the rest."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Resume, and predict again the images whose earlier row is an error."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing predictions file in --out (otherwise refused)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    modality: str = typer.Option("auto", help="dermoscopic, clinical, or auto (recognised per image): picks the triage operating point."),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Check each photo first (not skin, poor photo, out of distribution); --no-gate is for research and writes quality=not_checked."),
):
    """Per image: probability of every taxonomy node, top-5 diseases and a triage call (refer/reassure, or retake/cannot_assess when the photo gate stops it)."""
    from dermlens.predict.batch import collect_inputs, predict_files
    from dermlens.predict import Predictor

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
        typer.echo(f"{summary.total} images{skipped}, {summary.failed} failed{earlier}; predictions in {target}", err=True)
    if summary.failed_in_file:  # the exit code describes the whole file, earlier runs' rows too
        raise typer.Exit(1)


@app.command("export")
def export_command(
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    out: Optional[Path] = typer.Option(None, help="Folder for model.onnx (and model.int8.onnx); default the user cache the predictor reads."),
    int8: bool = typer.Option(False, "--int8", help="Also write a statically quantized int8 model."),
    calibration_data: Optional[Path] = typer.Option(None, help="Images to calibrate int8 on: a folder of images or a dataset (its train split)."),
    calibration_size: int = typer.Option(200, help="How many calibration images to use at most."),
):
    """Export the classifier (preprocessed image in, training-class probabilities out) for ONNX Runtime."""
    from dermlens.deploy.onnx_export import export_model
    from dermlens.predict import NoModelError, bundled_model_dir

    if format != "onnx":
        raise typer.BadParameter("only --format onnx is supported")
    if int8 and calibration_data is None:
        raise typer.BadParameter("--int8 needs --calibration-data (a folder of images or a dataset)")
    try:
        model_dir = model or bundled_model_dir()
    except NoModelError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    written = export_model(model_dir, out, int8=int8, calibration_data=calibration_data, calibration_size=calibration_size)
    for precision, path in written.items():
        typer.echo(f"{precision}: {path}")


@app.command()
def study(
    data: Optional[list[Path]] = typer.Option(None, exists=True, help="A labelled dataset (any supported layout; repeat to pool several); default: the embedded synthetic set."),
    out: Path = typer.Option(Path("runs/study"), help="Output folder: report.html, metrics.json, predictions/, model/."),
    folds: int = typer.Option(9, min=2, help="Grouped k-fold cross-validation folds (9 as in Esteva et al.)."),
    mode: str = typer.Option("fast", help="fast: frozen backbone features once, a head per fold; full: fine-tune every fold (GPU)."),
    max_class_size: Optional[float] = typer.Option(None, help="Partitioning threshold; default Esteva's 1000 per 129,450 images, scaled to the data."),
    readers: Optional[Path] = typer.Option(None, help="CSV of readers' operating points (task, reader, sensitivity, specificity); default the shipped sample."),
    no_readers: bool = typer.Option(False, "--no-readers", help="Draw no reader points."),
    arch: str = typer.Option("efficientnet_lite0", help="Backbone: efficientnet_lite0, inception_v3 or timm:<name>."),
    weights: Optional[str] = typer.Option(None, help="Local ImageNet weights file (for archs without packaged weights)."),
    image_size: Optional[int] = typer.Option(None, help="Input size; default the backbone's (128 for the synthetic set)."),
    spaces: str = typer.Option("three_way,nine_way,training_classes", help="Label spaces of the ablation (comma-separated)."),
    head_iterations: int = typer.Option(100, help="Fast mode: L-BFGS iterations of each linear head per L2 value."),
    epochs: int = typer.Option(12, help="Full mode: fine-tuning epochs per fold and space."),
    batch_size: int = typer.Option(64, min=1),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs (resampled by group)."),
    saliency_per_class: int = typer.Option(2, min=0, help="Correct and incorrect saliency cases per class (0: none)."),
    workers: int = typer.Option(2, min=0, help="Data-loading worker processes."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Esteva-style study: grouped k-fold, 3-/9-way/partition ablation, binary ROCs with readers, calibration, t-SNE, saliency; HTML report."""
    from dermlens.evaluate.readers import SAMPLE_READERS
    from dermlens.study.run import StudyConfig, run_study

    cfg = StudyConfig(
        mode=mode, folds=folds, arch=arch, weights=weights, image_size=image_size or (None if data else 128),
        max_class_size=max_class_size, spaces=tuple(s.strip() for s in spaces.split(",") if s.strip()), seed=seed,
        batch_size=batch_size, num_workers=workers, head_iterations=head_iterations, n_boot=n_boot,
        saliency_per_class=saliency_per_class, train={"epochs": epochs},
    )
    report = run_study(data, out, cfg, readers=None if no_readers else (readers or SAMPLE_READERS), progress=not quiet)
    metrics = json.loads((out / "metrics.json").read_text())
    typer.echo(f"Ablation (accuracy, mean ± s.d. over {folds} folds):")
    for space, levels in metrics["ablation"].items():
        cells = [f"{level} {v['accuracy']['mean']:.3f} ± {v['accuracy']['sd']:.3f}"
                 for level, v in levels.items() if isinstance(v, dict) and v["accuracy"]["mean"] is not None]
        typer.echo(f"  trained on {space:<17} " + ", ".join(cells))
    for key, task in metrics["binary"]["tasks"].items():
        low, high = task["auc_ci95"]
        typer.echo(f"  {key}: AUC {task['auc']:.3f} (95% CI {low:.3f}-{high:.3f}), {task['n_positive']} vs {task['n_negative']}")
    typer.echo(f"Report: {report}  (numbers: {out / 'metrics.json'}; {metrics['study']['timings']['total_seconds'] / 60:.1f} min)")


@app.command()
def report(
    study: Path = typer.Option(Path("runs/study"), "--study", exists=True, file_okay=False, help="A study's output folder (with predictions/)."),
    out: Optional[Path] = typer.Option(None, help="Where to write report.html and metrics.json; default the study folder."),
    readers: Optional[Path] = typer.Option(None, help="Readers CSV; default the one the study used."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Rebuild a study's report.html and metrics.json from its saved predictions (no training)."""
    from dermlens.study.report import build_report

    saved = json.loads((study / "predictions" / "study.json").read_text()) if (study / "predictions" / "study.json").is_file() else {}
    path = build_report(study, out, readers=readers or saved.get("readers"), n_boot=n_boot, progress=not quiet)
    typer.echo(f"Report: {path}")


@app.command()
def explain(
    image: Path = typer.Argument(..., help="One photo."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    out: Path = typer.Option(Path("runs/explain"), help="Folder for the overlays and the prediction JSON."),
    target: Optional[str] = typer.Option(None, help="Taxonomy node to explain (e.g. malignant); default the top class."),
):
    """Saliency overlays for one image: the paper's input-gradient map and Grad-CAM."""
    from dermlens.data.io import ImageDecodeError
    from dermlens.explain.cases import explain_image
    from dermlens.predict import NoModelError

    try:
        result = explain_image(image, model, out, target=target)
    except (NoModelError, ImageDecodeError, ValueError) as e:
        message = str(e)  # a decoding error names the file itself
        typer.echo(message if str(image) in message else f"{image}: {message}", err=True)
        raise typer.Exit(2)
    top = result["prediction"]["top5"][0]
    typer.echo(f"{image}: top class {top['node']} ({top['probability']:.3f}), triage {result['prediction']['triage']}")
    for method, info in result["overlays"].items():
        typer.echo(f"  {method}: {info['file']} (explains {info['target']}, p={info['probability']:.3f})")


@app.command("operating-point")
def operating_point(
    data: Path = typer.Option(..., exists=True, help="Labelled validation data (never the test set)."),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    split: Optional[str] = typer.Option("val", help="Use only this fixed split of the data (empty: all of it)."),
    target_sensitivity: float = typer.Option(0.9, help="Sensitivity for malignant lesions to reach."),
    out: Optional[Path] = typer.Option(None, help="Write the re-tuned model here; default: update the model in place."),
):
    """Choose the referral threshold afresh on a site's own validation data for a target sensitivity."""
    from dermlens.data.datasets import load_records
    from dermlens.study.main_job import set_operating_point
    from dermlens.predict import bundled_model_dir

    records = [r for r in load_records(data) if not split or r.split == split]
    if not records:
        raise typer.BadParameter(f"no records in {data}" + (f" with split {split!r}" if split else ""))
    op = set_operating_point(model or bundled_model_dir(), records, target_sensitivity, out)
    typer.echo(
        f"refer when P({op.node}) >= {op.threshold:.4f}: sensitivity {op.sensitivity:.3f}, "
        f"specificity {op.specificity:.3f} on {op.chosen_on}"
    )


@app.command("model-card")
def model_card(model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model.")):
    """Print the model card: intended use, training data, operating point and measured figures."""
    from dermlens.predict import NoModelError, bundled_model_dir

    try:
        folder = model or bundled_model_dir()
    except NoModelError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        typer.echo(f"{card}: this model has no model card", err=True)
        raise typer.Exit(2)
    typer.echo(card.read_text())


@taxonomy_app.command("show")
def taxonomy_show():
    """Print the tree with node ids and display names."""
    from dermlens.taxonomy import default_taxonomy

    tax = default_taxonomy()
    typer.echo(f"taxonomy {tax.version} ({len(tax)} nodes, fingerprint {tax.fingerprint()})")
    typer.echo(tax.render())


@taxonomy_app.command("partition")
def taxonomy_partition(
    data: list[Path] = typer.Option(..., exists=True, help="Dataset whose labels are counted; repeat to pool several."),
    max_class_size: Optional[float] = typer.Option(None, help="Partitioning threshold; default the paper's 1,000 per 129,450 images, scaled to the data."),
    split: Optional[str] = typer.Option(None, help="Count only this fixed split."),
):
    """Print the training classes the partitioning algorithm makes from a dataset, with image counts."""
    from dermlens.data.datasets import load_pooled
    from dermlens.taxonomy import default_taxonomy, partition
    from dermlens.taxonomy.partition import esteva_max_class_size

    tax = default_taxonomy()
    counts = Counter(r.node for r in load_pooled(data) if split is None or r.split == split)
    if max_class_size is None:
        max_class_size = esteva_max_class_size(sum(counts.values()))
    classes = partition(tax, counts, max_class_size)
    typer.echo(f"{len(classes)} training classes from {sum(counts.values())} images (max_class_size {max_class_size:g}):")
    for c in classes:
        suffix = " (images labelled at this node only)" if c.own_only else ""
        typer.echo(f"  {c.node:<45} {c.count:>6}  {tax[c.node].name}{suffix}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 to reach it from phones on the network."),
    port: int = typer.Option(8000),
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model."),
    max_upload_mb: float = typer.Option(20.0, help="Largest accepted photo (MB); bigger uploads get 413."),
    max_concurrency: int = typer.Option(1, min=1, help="Photos analysed at once (threads sharing one model)."),
    max_queue: int = typer.Option(32, min=0, help="Photos allowed to wait; beyond that 503 with Retry-After."),
    tta: int = typer.Option(1, min=1, max=8, help="Test-time augmentation views (1-8)."),
    token: Optional[str] = typer.Option(None, envvar="DERMLENS_TOKEN", help="Access token every request must carry (header 'Authorization: Bearer TOKEN', or open the page once as /?token=TOKEN); without it: 401."),
    ssl_keyfile: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="TLS private key (PEM): serve https."),
    ssl_certfile: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="TLS certificate (PEM), with --ssl-keyfile."),
    upload_timeout: float = typer.Option(30.0, min=1, help="Seconds an upload may stall (nothing received) before it gets 408 and is closed."),
    max_connections: int = typer.Option(100, min=1, help="Open connections at most; beyond that 503."),
):
    """Web page and HTTP API for clinicians: / (page), /api/v1/predict, /api/v1/model, /healthz, /docs."""
    import uvicorn

    from dermlens.serve import create_app
    from dermlens.serve.guard import bind_socket, is_loopback

    if (ssl_keyfile is None) != (ssl_certfile is None):
        raise typer.BadParameter("give both --ssl-keyfile and --ssl-certfile, or neither", param_hint="'--ssl-certfile'")
    if not is_loopback(host) and not token:
        typer.echo(f"warning: listening on {host} without an access token: anyone on the network can use this service; "
                   "set --token (or DERMLENS_TOKEN)", err=True)
    try:
        sock = bind_socket(host, port)  # first: a taken port is told before anything claims to be serving
    except OSError as e:
        typer.echo(f"dermlens serve: error: cannot listen on {host}:{port}: {e.strerror or e}", err=True)
        raise typer.Exit(3)
    try:
        application = create_app(
            model_dir=model, max_upload_bytes=int(max_upload_mb * 1_000_000), max_concurrency=max_concurrency,
            max_queue=max_queue, tta=tta, token=token, upload_timeout=upload_timeout,
        )
        config = uvicorn.Config(
            application, log_level="info", limit_concurrency=max_connections, timeout_keep_alive=5,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None, ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        )
        scheme = "https" if ssl_certfile else "http"
        typer.echo(f"dermlens serving on {scheme}://{host}:{port}/ (API docs at /docs); Ctrl-C stops", err=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


segment_app = typer.Typer(
    cls=DefaultCommandGroup, no_args_is_help=True,
    help="Lesion tissue-fraction segmentation: `dermlens segment IMAGE... --out DIR`, or train / evaluate a segmenter.",
)
app.add_typer(segment_app, name="segment")


@segment_app.command("run")
def segment_run(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(..., help="Output folder: <stem>_fraction.png, <stem>_mask.png, measurements.csv."),
    model: Optional[Path] = typer.Option(None, help="A segmenter folder; default: the bundled one."),
    tta: bool = typer.Option(True, help="Average over flips."),
    mm_per_pixel: Optional[float] = typer.Option(None, help="Scale of the photos, to add measurements in mm."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Per-pixel lesion fraction (8-bit PNG, 255 = all lesion), binary mask at 0.5, and lesion measurements."""
    from dermlens.segment.batch import segment_images
    from dermlens.segment.segmenter import Segmenter

    try:
        segmenter = Segmenter(model, tta=tta)
    except FileNotFoundError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    rows = segment_images(images, out, segmenter, mm_per_pixel=mm_per_pixel, progress=not quiet)
    failed = [r for r in rows if r["error"]]
    for row in failed:
        typer.echo(f"error: {row['error']}", err=True)
    typer.echo(f"{len(rows) - len(failed)} segmented, {len(failed)} failed; {out / 'measurements.csv'}")
    if failed or not rows:
        raise typer.Exit(1)


@segment_app.command("train")
def segment_train(
    data: Path = typer.Option(..., help="Dataset with labels.csv columns image, mask and split (e.g. ../shared/data/ham10000)."),
    out: Path = typer.Option(..., help="Run folder: model/, checkpoint/, metrics.jsonl."),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(1e-3, help="Peak learning rate of the decoder (the encoder gets a tenth)."),
    width: int = typer.Option(192, help="Model grid width."),
    height: int = typer.Option(144, help="Model grid height."),
    target: str = typer.Option("fraction", help="fraction (soft-label cross-entropy) or binary (the conventional baseline)."),
    max_steps_per_epoch: Optional[int] = typer.Option(None, help="Cap steps per epoch (quick runs)."),
    resume: bool = typer.Option(False, help="Continue from the run folder's last checkpoint."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False),
):
    """Train a tissue-fraction U-Net (EfficientNet-Lite0 encoder) on the dataset's `train` split, select on `val`."""
    from dermlens.segment.pairs import load_pairs
    from dermlens.segment.training import SegmentTrainConfig, train_segmenter

    if target not in ("fraction", "binary"):
        raise typer.BadParameter("fraction or binary", param_hint="--target")
    cfg = SegmentTrainConfig(input_size=(width, height), epochs=epochs, batch_size=batch_size, lr=lr, target=target,
                             max_steps_per_epoch=max_steps_per_epoch, seed=seed)
    try:
        train_pairs, val_pairs = load_pairs(data, "train"), load_pairs(data, "val")
        model_dir = train_segmenter(train_pairs, val_pairs, out, cfg, resume=resume, progress=not quiet,
                                    provenance={"data": str(data), "train_images": len(train_pairs), "val_images": len(val_pairs)})
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    typer.echo(f"model: {model_dir}")


@segment_app.command("evaluate")
def segment_evaluate(
    data: Path = typer.Option(..., help="Dataset with labels.csv columns image and mask."),
    model: Optional[Path] = typer.Option(None, help="A segmenter folder; default: the bundled one."),
    split: Optional[str] = typer.Option(None, help="Only this split (e.g. test); default: every row with a mask."),
    out: Optional[Path] = typer.Option(None, help="Write metrics.json (with per-image Jaccard) here."),
    tta: bool = typer.Option(True),
    quiet: bool = typer.Option(False),
):
    """Mean Jaccard and ISIC thresholded Jaccard (0 below 0.65), with 95% bootstrap intervals."""
    from dermlens.segment.evaluation import evaluate_dataset

    try:
        metrics = evaluate_dataset(data, model, split=split, tta=tta, progress=not quiet)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    summary = {k: v for k, v in metrics.items() if k != "per_image"}
    typer.echo(json.dumps(summary, indent=2))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


screen_app = typer.Typer(
    cls=DefaultCommandGroup, no_args_is_help=True,
    help="Wide-field screening: `dermlens screen PHOTO... --out DIR` finds lesions and ranks ugly ducklings; or make-benchmark / train-head.",
)
app.add_typer(screen_app, name="screen")


@screen_app.command("run")
def screen_run(
    photos: list[Path] = typer.Argument(..., help="Wide-field photos (files or folders)."),
    out: Path = typer.Option(..., help="Output folder: <stem>.json, <stem>.annotated.jpg, <stem>.crops/rank<k>.jpg."),
    model: Optional[Path] = typer.Option(None, help="Classifier folder; default the bundled model."),
    lesion_head: Optional[Path] = typer.Option(None, help="Lesion/not-lesion head folder; default the bundled one."),
    per_photo: bool = typer.Option(False, "--per-photo", help="Each photo is its own patient (default: all photos are one patient)."),
    patients: Optional[Path] = typer.Option(None, help="CSV with columns image,patient grouping the photos into patients."),
    size_weight: float = typer.Option(0.0, help="Share of relative size in the ugly-duckling score (0-1)."),
    top_crops: int = typer.Option(5, help="Crops written for this many top-ranked lesions per photo."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Find every pigmented lesion, flag the suspicious ones, rank each patient's ugly ducklings (rank 1 = most unlike)."""
    from dermlens.data.io import find_images
    from dermlens.predict import NoModelError
    from dermlens.screen.lesion_head import HeadMismatchError
    from dermlens.screen.screener import ScreenConfig, Screener, patient_ids, screen_files

    files = find_images(photos)
    try:
        groups = patient_ids(files, "photo" if per_photo else "all", patients)
        screener = Screener(model, lesion_head, ScreenConfig(size_weight=size_weight))
    except (NoModelError, HeadMismatchError, FileNotFoundError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    except ValueError as e:
        raise typer.BadParameter(str(e))
    try:
        summary = screen_files(screener, files, out, groups, top_crops=top_crops, progress=not quiet,
                               on_error=lambda name, problem: typer.echo(f"{name}: {problem}", err=True))
    except ValueError as e:
        raise typer.BadParameter(str(e))
    lesions = sum(len(r.lesions) for r in summary.results)
    suspicious = sum(l.suspicious for r in summary.results for l in r.lesions)
    typer.echo(f"{len(files)} photos ({len(summary.failed)} failed): {lesions} lesions, {suspicious} suspicious; outputs in {out}")
    if summary.failed or not files:
        raise typer.Exit(1)


@screen_app.command("make-benchmark")
def screen_make_benchmark(
    data: Path = typer.Option(..., help="HAM10000 folder with labels.csv, images/ and masks/."),
    out: Path = typer.Option(..., help="Benchmark folder: pNNN.jpg, pNNN.truth.json, benchmark.json."),
    patients: int = typer.Option(100, help="Synthetic patients (one photo each)."),
    split: str = typer.Option("test", help="Source split: test for figures, train for tuning and the lesion head."),
    seed: int = typer.Option(0),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Compose synthetic wide-field patients from real HAM10000 lesions on generated skin, with ground truth."""
    from dermlens.screen.benchmark import make_benchmark

    try:
        manifest = make_benchmark(data, out, patients=patients, seed=seed, split=split, progress=not quiet)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    typer.echo(f"{patients} patients from the {split} split: {manifest}")


@screen_app.command("train-head")
def screen_train_head(
    benchmark: Path = typer.Option(..., help="A benchmark made from the train split (`screen make-benchmark --split train`)."),
    out: Path = typer.Option(..., help="Folder for lesion_head.safetensors and lesion_head.json."),
    model: Optional[Path] = typer.Option(None, help="Classifier folder whose embedding the head reads; default the bundled model."),
    target_recall: float = typer.Option(0.98, help="Share of true lesions the head's threshold lets through (held-out photos)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Train the lesion/not-lesion head on detector candidates of a train-split benchmark."""
    from dermlens.screen.train_head import train_lesion_head

    try:
        folder = train_lesion_head(benchmark, out, model, target_recall=target_recall, progress=not quiet)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    typer.echo(f"lesion head: {folder}\n{(folder / 'lesion_head.json').read_text()}")


gate_app = typer.Typer(no_args_is_help=True, help="The photo gate: `dermlens gate fit --model DIR` fits it beside a model.")
app.add_typer(gate_app, name="gate")


@gate_app.command("fit")
def gate_fit(
    model: Optional[Path] = typer.Option(None, help="Model folder; default the bundled model. The gate is written into it."),
    data: Optional[list[Path]] = typer.Option(None, help="Dataset folders (labels.csv layout) of real skin photos, both modalities; repeat. Default: every dataset under ../shared/data."),
    per_dataset: int = typer.Option(200, min=20, help="Real skin photos per dataset (from its training split)."),
    taxonomy: Optional[Path] = typer.Option(None, help="Taxonomy tree file the model was trained with; default the packaged one."),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """Fit the skin head and the out-of-distribution model on the model's embedding, choose the quality thresholds
    on data, and save them beside the model (gate.safetensors + config.json["gate"])."""
    from dermlens.gate.fit import default_data_dirs, fit_gate
    from dermlens.predict import Predictor
    from dermlens.taxonomy.tree import Taxonomy

    folders = list(data) if data else default_data_dirs()
    if not folders:
        raise typer.BadParameter("no datasets found under ../shared/data; pass --data FOLDER", param_hint="'--data'")
    predictor = Predictor(model, taxonomy=Taxonomy.load(taxonomy) if taxonomy else None, gate=False)
    gate, info = fit_gate(predictor, folders, per_dataset=per_dataset, seed=seed, progress=progress)
    gate.save(predictor.model_dir, predictor.config)
    typer.echo(json.dumps({"thresholds": gate.thresholds.to_dict(), **info}, indent=2))
    typer.echo(f"gate saved in {predictor.model_dir} ({info['fit_seconds']} s)", err=True)


def main():  # pragma: no cover - the console-script entry point
    from dermlens.runtime import reexec_with_jemalloc

    reexec_with_jemalloc()
    app(prog_name="dermlens")


if __name__ == "__main__":  # python -m dermlens.cli
    app()
