"""Reading a finished study's folder back: the headline figures printed when it ends, and the readers file a
rebuilt report reuses."""
from __future__ import annotations

import json
from pathlib import Path

from dermlens.study.run import PREDICTIONS, STUDY_FILE

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def headline(metrics: dict) -> list[str]:
    """The ablation's accuracies (mean ± s.d. over folds) and each binary task's AUC with its 95% CI."""
    n_folds = metrics["config"]["folds"]
    lines = [f"Ablation (accuracy, mean ± s.d. over {n_folds} folds):"]
    for space, levels in metrics["ablation"].items():
        cells = [f"{level} {v['accuracy']['mean']:.3f} ± {v['accuracy']['sd']:.3f}"
                 for level, v in levels.items() if isinstance(v, dict) and v["accuracy"]["mean"] is not None]
        lines.append(f"  trained on {space:<17} " + ", ".join(cells))
    for key, task in metrics["binary"]["tasks"].items():
        low, high = task["auc_ci95"]
        lines.append(f"  {key}: AUC {task['auc']:.3f} (95% CI {low:.3f}-{high:.3f}), "
                     f"{task['n_positive']} vs {task['n_negative']}")
    return lines


def study_summary(study_dir: Path) -> str:
    """What ``dermlens study`` prints at the end: the headline figures and where the report and numbers are."""
    metrics = json.loads((study_dir / METRICS_FILE).read_text())
    seconds = (metrics["study"].get("timings") or {}).get("total_seconds")
    took = f"; {seconds / 60:.1f} min" if seconds is not None else ""
    where = f"Report: {study_dir / REPORT_FILE}  (numbers: {study_dir / METRICS_FILE}{took})"
    return "\n".join([*headline(metrics), where])


def readers_used(study_dir: Path) -> str | None:
    """The readers file the study at ``study_dir`` was run with (None: none, or not recorded)."""
    saved = study_dir / PREDICTIONS / STUDY_FILE
    return json.loads(saved.read_text()).get("readers") if saved.is_file() else None
