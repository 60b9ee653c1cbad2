"""Percentile bootstrap confidence intervals, resampling images or whole groups (patients, lesions)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(metric, arrays: Sequence[np.ndarray], n: int = 1000, seed: int = 0, groups=None, alpha=0.05):
    """Percentile bootstrap CI of ``metric(*arrays)``; resampling whole groups when ``groups`` is given."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a) for a in arrays]
    if groups is None:
        units = np.arange(len(arrays[0]))
        members = None
    else:
        units, inverse = np.unique(np.asarray(groups), return_inverse=True)
        members = [np.flatnonzero(inverse == u) for u in range(len(units))]
    with warnings.catch_warnings():  # resamples that miss a class make sklearn chatty; they are expected here
        warnings.simplefilter("ignore")
        values = _resample(metric, arrays, rng, units, members, n)
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _resample(metric, arrays, rng, units, members, n) -> list[float]:
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(units), len(units))
        index = pick if members is None else np.concatenate([members[p] for p in pick])
        try:
            values.append(metric(*[a[index] for a in arrays]))
        except ValueError:  # a resample with one class only: skip it, as is usual
            continue
    return values
