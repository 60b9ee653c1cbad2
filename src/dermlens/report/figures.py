"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def roc_figure(task: dict, title: str) -> bytes:
    """The pooled ROC curve, the operating points chosen on validation (as achieved on test) and the readers."""
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    fpr, tpr = np.asarray(task["roc"]["fpr"]), np.asarray(task["roc"]["tpr"])
    low, high = task["auc_ci95"]
    ax.plot(1 - fpr, tpr, color="tab:blue", lw=2,
            label=f"model: AUC {task['auc']:.3f} ({low:.3f}–{high:.3f})")
    ax.plot([0, 1], [1, 0], color="0.8", lw=1, ls="--")
    for op in task.get("operating_points", []):
        if op["test_sensitivity"] is None or op["test_specificity"] is None:
            continue
        ax.plot(op["test_specificity"], op["test_sensitivity"], marker="s", ms=6, ls="none", mfc="white",
                mec="tab:blue", label=f"{op['rule']} → test")
    for r in task.get("readers", []):
        colour = "tab:green" if r["below_curve"] else "tab:red"
        ax.plot(r["specificity"], r["sensitivity"], marker="o", ms=7, ls="none", color=colour,
                label=f"{r['reader'][:48]}{'…' if len(r['reader']) > 48 else ''}")
    if task.get("readers"):
        ax.text(0.03, 0.03, f"readers below the curve: {task['readers_below_curve']}/{task['readers_total']}",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6.5, loc="lower left", bbox_to_anchor=(0, 0.08))
    return to_png(fig)


def confusion_figure(matrix: dict, title: str) -> bytes:
    """Counts and row-normalised side by side (rows: truth, columns: prediction)."""
    classes = matrix["classes"]
    counts, normalised = np.asarray(matrix["counts"]), np.asarray(matrix["row_normalised"])
    n = len(classes)
    side = max(3.2, 0.55 * n + 1.8)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side))
    for ax, values, fmt, name in ((axes[0], counts, "d", "counts"), (axes[1], normalised, ".2f", "row-normalised")):
        shown = values / max(values.max(), 1e-9) if name == "counts" else values
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.6 else "black")
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_title(f"{title}: {name}", fontsize=9)
    fig.tight_layout()
    return to_png(fig)


def reliability_figure(calibration: dict) -> bytes:
    """Accuracy per confidence bin (bars) before and after temperature scaling; image counts per bin below."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    edges = np.asarray(calibration["uncalibrated"]["reliability"]["edges"])
    width = (edges[1] - edges[0]) * 0.45
    for k, (name, colour) in enumerate((("uncalibrated", "tab:red"), ("temperature_scaled", "tab:blue"))):
        summary = calibration[name]
        bins = summary["reliability"]
        left = edges[:-1] + k * width + (edges[1] - edges[0]) * 0.05
        acc = [a if a is not None else 0 for a in bins["accuracy"]]
        ax.bar(left, acc, width=width, align="edge", color=colour, alpha=0.75,
               label=f"{name.replace('_', ' ')}: ECE {summary['ece']:.3f}, NLL {summary['nll']:.3f}")
        hist.bar(left, bins["count"], width=width, align="edge", color=colour, alpha=0.75)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("reliability diagram (test images, all folds)", fontsize=9)
    hist.set_yscale("log")
    hist.set_ylabel("images")
    hist.set_xlabel("confidence of the top training class")
    fig.tight_layout()
    return to_png(fig)


def tsne_figure(embedding: np.ndarray, labels: np.ndarray) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 5))
    classes = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, c in enumerate(classes):
        pts = embedding[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.7, color=cmap(k % cmap.N), label=f"{c} ({len(pts)})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title("t-SNE of the last hidden layer", fontsize=9)
    return to_png(fig)
