"""``dermlens study | demo | report | explain``: the Esteva et al. study, its report, and saliency for one photo.
Argument parsing and printing only; the work is in ``dermlens.study`` and ``dermlens.explain``."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import (
    ArchOption, MaxClassSizeOption, ModelOption, OverwriteOption, QuietOption, WeightsOption, WorkersOption,
    refuse_to_replace,
)

app = typer.Typer()

DEMO_OUT = Path("runs/demo")
STUDY_RESULTS = ("report.html", "metrics.json", "predictions", "model")  # the frozen-feature cache/ is reused, not results


@app.command()
def study(
    data: Annotated[Optional[list[Path]], typer.Option(exists=True, help="A labelled dataset (any supported layout; repeat to pool several); default: the embedded synthetic set.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: report.html, metrics.json, predictions/, model/.")] = Path("runs/study"),
    folds: Annotated[int, typer.Option(min=2, help="Grouped k-fold cross-validation folds (9 as in Esteva et al.).")] = 9,
    mode: Annotated[str, typer.Option(help="fast: frozen backbone features once, a head per fold; full: fine-tune every fold (GPU).")] = "fast",
    max_class_size: MaxClassSizeOption = None,
    readers: Annotated[Optional[Path], typer.Option(help="CSV of readers' operating points (task, reader, sensitivity, specificity); default the shipped sample.")] = None,
    no_readers: Annotated[bool, typer.Option("--no-readers", help="Draw no reader points.")] = False,
    arch: ArchOption = "efficientnet_lite0",
    weights: WeightsOption = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input size; default the backbone's (128 for the synthetic set).")] = None,
    spaces: Annotated[str, typer.Option(help="Label spaces of the ablation (comma-separated).")] = "three_way,nine_way,training_classes",
    head_iterations: Annotated[int, typer.Option(help="Fast mode: L-BFGS iterations of each linear head per L2 value.")] = 100,
    epochs: Annotated[int, typer.Option(help="Full mode: fine-tuning epochs per fold and space.")] = 12,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs (resampled by group).")] = 1000,
    saliency_per_class: Annotated[int, typer.Option(min=0, help="Correct and incorrect saliency cases per class (0: none).")] = 2,
    workers: WorkersOption = 2,
    seed: int = 0,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
):
    """Esteva-style study: grouped k-fold, 3-/9-way/partition ablation, binary ROCs with readers, calibration, t-SNE, saliency; HTML report."""
    refuse_to_replace(out, STUDY_RESULTS, overwrite)
    from dermlens.evaluate.readers import SAMPLE_READERS
    from dermlens.study.run import StudyConfig, run_study
    from dermlens.study.summary import study_summary

    cfg = StudyConfig(
        mode=mode, folds=folds, arch=arch, weights=weights,
        image_size=image_size, max_class_size=max_class_size,
        spaces=tuple(s.strip() for s in spaces.split(",") if s.strip()), seed=seed, batch_size=batch_size,
        num_workers=workers, head_iterations=head_iterations, n_boot=n_boot, saliency_per_class=saliency_per_class,
        train={"epochs": epochs},
    )
    run_study(data, out, cfg, readers=None if no_readers else (readers or SAMPLE_READERS), progress=not quiet)
    typer.echo(study_summary(out))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEMO_OUT,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
):
    """The main job, as `make demo` runs it: the study on the embedded synthetic set (`dermlens study --out runs/demo --overwrite`)."""
    study(out=out, overwrite=overwrite, quiet=quiet)


@app.command()
def report(
    study: Annotated[Path, typer.Option("--study", exists=True, file_okay=False, help="A study's output folder (with predictions/).")] = Path("runs/study"),
    out: Annotated[Optional[Path], typer.Option(help="Where to write report.html and metrics.json; default the study folder.")] = None,
    readers: Annotated[Optional[Path], typer.Option(help="Readers CSV; default the one the study used.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    quiet: QuietOption = False,
):
    """Rebuild a study's report.html and metrics.json from its saved predictions (no training)."""
    from dermlens.study.report import build_report
    from dermlens.study.summary import readers_used

    path = build_report(study, out, readers=readers or readers_used(study), n_boot=n_boot, progress=not quiet)
    typer.echo(f"Report: {path}")


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="One photo.")],
    model: ModelOption = None,
    out: Annotated[Path, typer.Option(help="Folder for the overlays and the prediction JSON.")] = Path("runs/explain"),
    target: Annotated[Optional[str], typer.Option(help="Taxonomy node to explain (e.g. malignant); default the top class.")] = None,
    overwrite: OverwriteOption = False,
):
    """Saliency overlays for one image: the paper's input-gradient map and Grad-CAM."""
    refuse_to_replace(out, [f"{glob.escape(image.stem)}-explanation.json"], overwrite)
    from dermlens.explain.cases import explain_image

    result = explain_image(image, model, out, target=target)
    prediction = result["prediction"]
    if prediction["top5"]:
        top = prediction["top5"][0]
        typer.echo(f"{image}: top class {top['node']} ({top['probability']:.3f}), triage {prediction['triage']}")
    else:  # the photo gate stopped it: no diagnosis to show, only what to do
        typer.echo(f"{image}: triage {prediction['triage']} ({prediction['quality']}): {prediction['advice']}")
    for method, info in result["overlays"].items():
        typer.echo(f"  {method}: {info['file']} (explains {info['target']}, p={info['probability']:.3f})")
