"""Do the probabilities mean what they say? Reliability diagrams, expected calibration error, temperature scaling.

Temperature scaling (Guo et al., ICML 2017) divides the logits by one number T fitted on validation data by
minimising the negative log-likelihood; it leaves the argmax (so accuracy) unchanged and repairs the over-confidence
that fine-tuned networks typically show. It must be fitted on validation data and only applied to test data.
Log-probabilities serve as logits (softmax(log p / T) is the same as softmax(z / T) for the logits z behind p).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax


def top_label(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    """(confidence of the predicted class, whether it is right) per row."""
    p = np.asarray(probs, dtype=float)
    return p.max(1), p.argmax(1) == np.asarray(targets)


def reliability_bins(confidence, correct, n_bins: int = 15) -> dict:
    """Equal-width confidence bins over [0, 1]: mean confidence, accuracy and count in each (empty bins: None)."""
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    # Right-closed bins, (a, b], with 0 in the first: a confidence of exactly 1 lands in the last bin.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    mean_conf, acc, count = [], [], []
    for b in range(n_bins):
        members = which == b
        count.append(int(members.sum()))
        mean_conf.append(float(conf[members].mean()) if members.any() else None)
        acc.append(float(hit[members].mean()) if members.any() else None)
    return {"edges": edges.tolist(), "confidence": mean_conf, "accuracy": acc, "count": count}


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """Sum over bins of (share of samples in the bin) x |accuracy - mean confidence|."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(bins["count"])
    if total == 0:
        raise ValueError("no samples")
    return float(sum(
        n / total * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n
    ))


def negative_log_likelihood(logits, targets, temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=float) / temperature
    t = np.asarray(targets, dtype=int)
    return float(-log_softmax(z, axis=1)[np.arange(len(t)), t].mean())


def fit_temperature(logits, targets, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising validation NLL of softmax(logits / T) (a 1-D convex problem in log T).

    When every validation sample is already classified correctly the NLL keeps falling as T -> 0, so there is no
    finite optimum and the "fit" would sharpen the model to the bound on the evidence of a lucky sample; T = 1
    (leave the model alone) is returned instead.
    """
    z = np.asarray(logits, dtype=float)
    t = np.asarray(targets, dtype=int)
    if len(t) == 0:
        raise ValueError("temperature scaling needs validation samples")
    z = np.where(np.isfinite(z), z, -1e4)  # log(0) from a class with zero probability
    if (z.argmax(1) == t).all():
        return 1.0
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z, t, float(np.exp(log_t))),
        bounds=tuple(np.log(bounds)), method="bounded", options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=float)
    z = np.where(np.isfinite(z), z, -1e4)
    return softmax(z / temperature, axis=1)


def calibration_summary(probs, targets, n_bins: int = 15) -> dict:
    conf, hit = top_label(probs, targets)
    p = np.clip(np.asarray(probs, dtype=float)[np.arange(len(targets)), np.asarray(targets, dtype=int)], 1e-12, 1)
    return {
        "n": int(len(conf)),
        "ece": expected_calibration_error(conf, hit, n_bins),
        "nll": float(-np.log(p).mean()),
        "accuracy": float(hit.mean()),
        "mean_confidence": float(conf.mean()),
        "reliability": reliability_bins(conf, hit, n_bins),
    }
