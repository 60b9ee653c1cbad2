"""``dermlens pet study``: simulate a training and a test set, train both networks, evaluate; one folder.

Each stage is skipped when its output is already there (a model folder with ``model.safetensors``, a dataset with
``images.npy``), and an interrupted training resumes from its checkpoint, so rerunning the command after a kill
continues where it stopped.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dermlens.pet.dataset import IMAGES, simulate_dataset
from dermlens.pet.evaluation import evaluate_pet
from dermlens.pet.simulator import SimulatorConfig
from dermlens.pet.training import MODEL_FILE, PETTrainConfig, train_pet

TEST_SEED_OFFSET = 1  # the test set is drawn with seed + 1: independent of the training images


def run_pet_study(out_dir: str | Path, n_train: int = 2000, n_test: int = 500, epochs: int = 8, seed: int = 0,
                  simulator: SimulatorConfig | None = None, train: PETTrainConfig | None = None,
                  n_boot: int = 1000, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    simulator = simulator or SimulatorConfig()
    train_dir, test_dir = out_dir / "train", out_dir / "test"
    if not (train_dir / IMAGES).is_file():
        simulate_dataset(train_dir, n_train, seed, simulator, progress)
    if not (test_dir / IMAGES).is_file():
        simulate_dataset(test_dir, n_test, seed + TEST_SEED_OFFSET, simulator, progress)
    base = train or PETTrainConfig(epochs=epochs, seed=seed)
    model_dirs = []
    for method in ("fraction", "binary"):
        model_dir = out_dir / "models" / method
        if not (model_dir / MODEL_FILE).is_file():
            train_pet(train_dir, model_dir, replace(base, method=method), resume=True, progress=progress)
        model_dirs.append(model_dir)
    return evaluate_pet(test_dir, model_dirs, out_dir / "evaluation", n_boot=n_boot, progress=progress)


def summary_lines(metrics: dict) -> list[str]:
    """The headline numbers, one line per method, plus the paired differences."""
    lines = []
    for method in ("fraction", "threshold40", "binary_unet"):
        if method in metrics:
            m = metrics[method]
            small = m["by_diameter"][0]
            lines.append(f"{method:12s} fuzzy Dice {m['fuzzy_dice']:.3f} ({m['fuzzy_dice_ci95'][0]:.3f}-"
                         f"{m['fuzzy_dice_ci95'][1]:.3f})  area error {m['area_error']:.3f} "
                         f"({m['area_error_ci95'][0]:.3f}-{m['area_error_ci95'][1]:.3f})  "
                         f"| diameter < {small['high']:g} FWHM (n={small['n']}): fuzzy Dice "
                         f"{_fmt(small['fuzzy_dice'])}, area error {_fmt(small['area_error'])}"
                         + (f"; fuzzy Dice of the smallest bin minus the largest {-m['partial_volume_sensitivity']['fuzzy_dice_drop']:+.3f}"
                            if m.get("partial_volume_sensitivity") else ""))
    for name, d in (metrics.get("comparisons") or {}).items():
        lines.append(f"{name}: fuzzy Dice {d['fuzzy_dice']['mean']:+.3f} ({d['fuzzy_dice']['ci95'][0]:+.3f} to "
                     f"{d['fuzzy_dice']['ci95'][1]:+.3f}), area error {d['area_error']['mean']:+.3f} "
                     f"({d['area_error']['ci95'][0]:+.3f} to {d['area_error']['ci95'][1]:+.3f})")
    return lines


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"
