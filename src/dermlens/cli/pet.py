"""``dermlens pet simulate | train | evaluate | study``: argument parsing only; the work is in this package."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dermlens.cli.common import refuse_to_replace

pet_app = typer.Typer(no_args_is_help=True, help="Tumour tissue fractions in simulated 2-D PET (Liu, Jha et al. 2021): "
                                                 "simulate data, train the fraction and binary U-Nets, compare them "
                                                 "with a 40% threshold.")


def _simulator_config(grid, pixel_mm, fwhm_mm, dose_min, dose_max, tbr_min, tbr_max, diameter_min, diameter_max,
                      reconstruction):
    from dermlens.pet.simulator import SimulatorConfig

    try:
        return SimulatorConfig(grid=grid, pixel_mm=pixel_mm, fwhm_mm=fwhm_mm, dose_range=(dose_min, dose_max),
                               tbr_range=(tbr_min, tbr_max), diameter_mm_range=(diameter_min, diameter_max),
                               reconstruction=reconstruction)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error


@pet_app.command("simulate")
def simulate_command(
    out: Path = typer.Option(..., help="Dataset folder: images.npy, fractions.npy, meta.json, config.json."),
    n: int = typer.Option(2000, help="Number of images."),
    seed: int = typer.Option(0, help="Image i is drawn from seed (seed, i): same seed, same images."),
    grid: int = typer.Option(64, help="Reconstruction grid (pixels per side)."),
    pixel_mm: float = typer.Option(4.0, help="Pixel size in mm."),
    fwhm_mm: float = typer.Option(6.0, help="Scanner resolution: FWHM of the Gaussian PSF in mm."),
    dose_min: float = typer.Option(2e4, help="Lowest dose (detected counts per slice; log-uniform)."),
    dose_max: float = typer.Option(5e5, help="Highest dose."),
    tbr_min: float = typer.Option(2.0, help="Lowest tumour-to-background ratio."),
    tbr_max: float = typer.Option(8.0, help="Highest tumour-to-background ratio."),
    diameter_min: float = typer.Option(6.0, help="Smallest tumour equivalent diameter in mm (log-uniform)."),
    diameter_max: float = typer.Option(40.0, help="Largest tumour equivalent diameter in mm."),
    reconstruction: bool = typer.Option(True, help="Sinogram + OSEM (else Poisson counts per image pixel)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out (otherwise refused)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Simulate a PET dataset with the true tumour fraction of every pixel."""
    from dermlens.pet.dataset import simulate_dataset

    refuse_to_replace(out, ["images.npy", "fractions.npy", "meta.json"], overwrite)
    cfg = _simulator_config(grid, pixel_mm, fwhm_mm, dose_min, dose_max, tbr_min, tbr_max, diameter_min,
                            diameter_max, reconstruction)
    simulate_dataset(out, n, seed, cfg, progress=not quiet)
    typer.echo(f"{n} images in {out}/")


@pet_app.command("train")
def train_command(
    data: Path = typer.Option(..., exists=True, file_okay=False, help="A dataset from `dermlens pet simulate`."),
    out: Path = typer.Option(..., help="Run folder: model.safetensors, config.json, checkpoint/, metrics.jsonl."),
    method: str = typer.Option("fraction", help="fraction (soft-label cross-entropy) or binary (binarised masks)."),
    epochs: int = typer.Option(12, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, cosine schedule)."),
    base_channels: int = typer.Option(16, help="U-Net width (channels of its first level)."),
    val_fraction: float = typer.Option(0.1, help="Share of the dataset held out for the validation loss."),
    max_steps_per_epoch: int = typer.Option(0, help="Cap on steps per epoch (0 = all)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch CPU threads."),
    resume: bool = typer.Option(False, help="Continue from the run folder's checkpoint."),
    overwrite: bool = typer.Option(False, help="Start again in a run folder that holds a run."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Train the small U-Net on simulated PET images."""
    from dermlens.pet.training import PETTrainConfig, train_pet

    try:
        cfg = PETTrainConfig(method=method, epochs=epochs, batch_size=batch_size, lr=lr, base_channels=base_channels,
                             val_fraction=val_fraction, seed=seed, threads=threads,
                             max_steps_per_epoch=max_steps_per_epoch or None)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    model_dir = train_pet(data, out, cfg, resume=resume, overwrite=overwrite, progress=not quiet)
    typer.echo(f"model: {model_dir}/")


@pet_app.command("evaluate")
def evaluate_command(
    out: Path = typer.Option(..., help="Output folder: metrics.json and report.html (and test/, when simulated here)."),
    data: Optional[Path] = typer.Option(None, exists=True, file_okay=False,
                                        help="A test dataset from `dermlens pet simulate` (another seed than "
                                             "training). Default: simulate --n-test images into OUT/test."),
    models: Optional[list[Path]] = typer.Option(None, help="Model folders from `dermlens pet train` (repeat: one "
                                                           "fraction, one binary). Default: the networks shipped "
                                                           "with dermlens."),
    n_test: int = typer.Option(500, min=1, help="Images of the simulated test set (without --data)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the simulated test set (without --data); must differ from "
                                                  "the training images' seed. Default 1 (the shipped networks were "
                                                  "trained on seed 0)."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the confidence intervals."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an evaluation already in --out (otherwise refused)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Compare the fraction network, the 40% threshold and the binary U-Net on a test set (default: the shipped
    networks on a newly simulated one)."""
    from dermlens.pet.bundled import bundled_model_dirs, evaluate_on_fresh_test_set
    from dermlens.pet.evaluation import evaluate_pet
    from dermlens.pet.study import summary_lines

    refuse_to_replace(out, ["metrics.json", "report.html"], overwrite)
    if data is None:
        metrics = evaluate_on_fresh_test_set(out, models, n_test=n_test, seed=seed, n_boot=n_boot, progress=not quiet)
    else:
        metrics = evaluate_pet(data, models or bundled_model_dirs(), out, n_boot=n_boot, progress=not quiet)
    typer.echo("\n".join(summary_lines(metrics)))
    typer.echo(f"Report: {out / 'report.html'} (numbers in {out / 'metrics.json'})")


@pet_app.command("study")
def study_command(
    out: Path = typer.Option(Path("runs/pet-study"), help="Study folder: train/, test/, models/, evaluation/."),
    n_train: int = typer.Option(2000, help="Training images (the last 10% validate)."),
    n_test: int = typer.Option(500, help="Test images."),
    epochs: int = typer.Option(8),
    seed: int = typer.Option(0),
    n_boot: int = typer.Option(1000),
    quiet: bool = typer.Option(False, help="No progress bars."),
):
    """Simulate, train both networks and evaluate, with defaults: about half an hour on two CPU cores (issue 23's run); rerun to resume."""
    from dermlens.pet.study import run_pet_study, summary_lines

    metrics = run_pet_study(out, n_train=n_train, n_test=n_test, epochs=epochs, seed=seed, n_boot=n_boot,
                            progress=not quiet)
    typer.echo("\n".join(summary_lines(metrics)))
    typer.echo(f"Report: {out / 'evaluation' / 'report.html'}")
