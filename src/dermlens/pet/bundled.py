"""The PET networks shipped with dermlens, and their evaluation on a freshly simulated test set.

``weights/pet/fraction`` (the tissue-fraction U-Net) and ``weights/pet/binary`` (the binary U-Net baseline) were
trained by ``train_pet`` at a size that takes minutes on one CPU core; ``weights/pet/README.md`` says how and what
they score. ``dermlens pet evaluate --out DIR`` with nothing else draws a new test set with the simulator settings
the networks were trained with, under a seed their training images did not use, and evaluates them on it.
"""
from __future__ import annotations

from pathlib import Path

from dermlens.pet.dataset import simulate_dataset
from dermlens.pet.evaluation import evaluate_pet
from dermlens.pet.simulator import SimulatorConfig
from dermlens.pet.training import MODEL_FILE, load_pet_model

BUNDLED_PET_DIR = Path(__file__).resolve().parent.parent / "weights" / "pet"
BUNDLED_METHODS = ("fraction", "binary")
FRESH_TEST_SEED = 1  # the shipped networks were trained on images of seed 0 (their config's provenance.data_seed)
TEST_FOLDER = "test"  # where the fresh test set is written inside the output folder


def bundled_model_dirs() -> list[Path]:
    """The shipped fraction and binary network folders."""
    folders = [BUNDLED_PET_DIR / method for method in BUNDLED_METHODS]
    for folder in folders:
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no bundled PET network in this installation; train your own with "
                                    "`dermlens pet study` and pass them with --models")
    return folders


def _configs(model_dirs: list[str | Path]) -> dict[Path, dict]:
    return {Path(folder): load_pet_model(folder)[1] for folder in model_dirs}


def _common_simulator(configs: dict[Path, dict]) -> SimulatorConfig:
    (first, first_settings), *rest = [(folder, config.get("simulator") or SimulatorConfig().to_dict())
                                      for folder, config in configs.items()]
    for folder, settings in rest:
        if settings != first_settings:
            raise ValueError(f"{folder} and {first} were trained on differently simulated images; evaluate them "
                             "on one test set with --data")
    return SimulatorConfig.from_dict(first_settings)


def training_simulator(model_dirs: list[str | Path]) -> SimulatorConfig:
    """The simulator settings the networks were trained on (they must agree: one test set serves them all)."""
    return _common_simulator(_configs(model_dirs))


def evaluate_on_fresh_test_set(out_dir: str | Path, model_dirs: list[str | Path] | None = None, n_test: int = 500,
                               seed: int | None = None, n_boot: int = 1000, progress: bool = True) -> dict:
    """Simulate ``n_test`` images (seed default ``FRESH_TEST_SEED``) into ``out_dir/test`` and evaluate the networks
    (default: the shipped ones) on them; ``metrics.json`` and ``report.html`` go into ``out_dir``."""
    model_dirs = list(model_dirs or bundled_model_dirs())
    seed = FRESH_TEST_SEED if seed is None else seed
    configs = _configs(model_dirs)
    simulator = _common_simulator(configs)
    if any(config.get("provenance", {}).get("data_seed") == seed for config in configs.values()):
        raise ValueError(f"--seed {seed} drew the networks' training images; choose another seed for the test set")
    test_dir = simulate_dataset(Path(out_dir) / TEST_FOLDER, n_test, seed, simulator, progress)
    return evaluate_pet(test_dir, model_dirs, out_dir, n_boot=n_boot, progress=progress)
