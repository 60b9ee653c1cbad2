"""The fitting half of ``screen_loo.py``: lesion-head recipes and ugly-duckling scores, fitted on one set of
patients and scored on another (a held-out cell). Nothing here sees the held-out patients while fitting."""
from __future__ import annotations

import itertools

import numpy as np
from screen import hit_probability  # beside this script

from dermlens.screen.describe import head_features as descriptor_head_features
from dermlens.screen.score import cosine_distance_to_others, knn_distance, mixed_scores
from dermlens.screen.ugly_duckling import DucklingRanker

UD_COMPONENTS = ("knn_embedding", "knn_descriptors", "p_malignant")
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0)


def head_features(table: dict, index: np.ndarray, recipe: str) -> np.ndarray:
    """What a recipe's head reads: the embedding, or the embedding with the crop's descriptors, contrast and size."""
    emb = table["embedding"][index]
    if recipe == "emb":
        return emb
    if recipe == "desc-lr":  # the shipped descriptor head's features
        return descriptor_head_features(table["descriptors"][index], table["contrast"][index], table["diameter"][index])
    extra = np.column_stack([table["descriptors"][index], table["contrast"][index], np.log(table["diameter"][index])])
    return np.hstack([emb, extra]) if recipe == "emb+desc" else extra


def fit_recipe(table, fi, y, recipe: str, target_recall: float):
    """``either[-gbm]``: the embedding head OR a descriptor head (logistic, or gradient boosting) keeps a candidate;
    anything else: one head on ``head_features``."""
    if recipe.startswith("either"):
        desc = "desc" if recipe == "either-gbm" else "desc-lr"
        parts = [fit_head(head_features(table, fi, r), y[fi], table["patient"][fi], r, target_recall) for r in ("emb", desc)]
        return ("either", parts, desc)
    return fit_head(head_features(table, fi, recipe), y[fi], table["patient"][fi], recipe, target_recall)


def fit_head(x: np.ndarray, y: np.ndarray, groups: np.ndarray, recipe: str, target_recall: float, seed: int = 0):
    """A scorer ``f(features) -> P(lesion)`` and its threshold: fitted on 75 % of the photos, the threshold set on the
    other 25 % so that ``target_recall`` of their lesions pass."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit

    train, val = next(GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=seed).split(x, y, groups))
    if recipe == "desc":
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, class_weight="balanced", random_state=seed)
        clf.fit(x[train], y[train])
        scorer = lambda f: clf.predict_proba(f)[:, 1]  # noqa: E731
    else:
        mean, scale = x[train].mean(0), x[train].std(0) + 1e-6
        clf = LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000).fit((x[train] - mean) / scale, y[train])
        scorer = lambda f: clf.predict_proba((f - mean) / scale)[:, 1]  # noqa: E731
    p = scorer(x[val])
    threshold = float(np.quantile(p[y[val]], 1 - target_recall)) if y[val].any() else 0.5
    return scorer, threshold


def _ud_components(table, index, emb_stats, desc_stats, ranker=None) -> dict[str, np.ndarray]:
    emb = (table["embedding"][index] - emb_stats[0]) / emb_stats[1]
    desc = np.column_stack([table["descriptors"][index], np.log(table["diameter"][index])])
    desc = (desc - desc_stats[0]) / desc_stats[1]
    return {
        "current": cosine_distance_to_others(emb),
        "knn_embedding": knn_distance(emb, 3, "cosine"),
        "knn_descriptors": knn_distance(desc, 3, "euclidean"),
        "p_malignant": table["p_malignant"][index],
        "size": table["diameter"][index],
        **({} if ranker is None else {
            "whitened_knn": knn_distance(ranker.space.transform(table["embedding"][index]), 3, "euclidean"),
            "learned": ranker.scores(table["embedding"][index], table["descriptors"][index],
                                     table["p_malignant"][index], table["diameter"][index]),
        }),
    }


def _planted_hits(records, table, patients, kept, stats) -> list[tuple[int, dict[str, np.ndarray]]]:
    """Per planted lesion: (patient, components of its patient's kept lesions, with its own position and the
    competitors' positions)."""
    out = []
    for k in patients:
        idx = np.flatnonzero((table["patient"] == k) & kept)
        truth = records[k]["lesions"]
        comps = _ud_components(table, idx, *stats) if len(idx) else {}
        planted_truth = [t for t, x in enumerate(truth) if x["planted"]]
        t_of = table["truth"][idx]
        competitors = np.array([i for i, t in enumerate(t_of) if t < 0 or not truth[t]["planted"]], int)
        for t in planted_truth:
            where = np.flatnonzero(t_of == t)
            out.append((k, {"comps": comps, "at": int(where[0]) if len(where) else -1, "competitors": competitors}))
    return out


def _hit(entry, score: np.ndarray | None, k: int) -> float:
    if entry["at"] < 0:
        return 0.0
    if score is None:  # random order: exact expectation
        n = len(entry["competitors"]) + 1
        return min(k, n) / n
    return hit_probability(score[entry["at"]], score[entry["competitors"]], k)


def choose_weights(entries) -> dict[str, float]:
    """The mixing weights (a small grid) that maximise top-1 + top-3 on the fitting patients' planted lesions."""
    best, best_value = None, -1.0
    for combo in itertools.product(WEIGHT_GRID, repeat=len(UD_COMPONENTS)):
        if not any(combo):
            continue
        weights = dict(zip(UD_COMPONENTS, combo))
        value = 0.0
        for _, e in entries:
            if e["at"] >= 0:
                s = mixed_scores(e["comps"], weights)
                value += _hit(e, s, 1) + _hit(e, s, 3)
        if value > best_value + 1e-9:
            best, best_value = weights, value
    return best


def fit_cell(records, table, fit, recipes, target_recall) -> dict:
    """Everything fitted for one held-out cell, from the ``fit`` patients' rows only: per recipe a head and its
    threshold, the standardisation of the ugly-duckling spaces, the mixing weights."""
    fit = np.asarray(fit)
    fi = np.flatnonzero(np.isin(table["patient"], fit))
    y = table["truth"] >= 0
    heads = {}
    for recipe in recipes:
        if recipe not in ("bundled", "shipped"):
            heads[recipe] = fit_recipe(table, fi, y, recipe, target_recall)
    lesions_fit = fi[y[fi]]
    emb_stats = (table["embedding"][lesions_fit].mean(0), table["embedding"][lesions_fit].std(0) + 1e-6)
    desc_fit = np.column_stack([table["descriptors"][lesions_fit], np.log(table["diameter"][lesions_fit])])
    stats = (emb_stats, (desc_fit.mean(0), desc_fit.std(0) + 1e-6))
    kept = np.zeros(len(y), bool)
    ud_recipe = recipes[-1]
    kept[fi] = _keep(table, fi, ud_recipe, heads.get(ud_recipe))
    weights = choose_weights(_planted_hits(records, table, fit, kept, stats))
    ranker = DucklingRanker.fit(_ranker_patients(records, table, fit, kept))
    return {"heads": heads, "stats": (*stats, ranker), "weights": weights, "ud_recipe": ud_recipe}


def _ranker_patients(records, table, patients, kept) -> list[dict]:
    """The lesions kept in each photo, as the ugly-duckling ranker learns from them (a false positive counts as an
    ordinary mole: the ranker meets those too)."""
    out = []
    for k in patients:
        idx = np.flatnonzero((table["patient"] == k) & kept)
        if len(idx) < 2:
            continue
        truth = records[k]["lesions"]
        planted = np.array([t >= 0 and truth[t]["planted"] for t in table["truth"][idx]])
        out.append({"embedding": table["embedding"][idx], "descriptors": table["descriptors"][idx],
                    "p_malignant": table["p_malignant"][idx], "diameter": table["diameter"][idx], "planted": planted})
    return out


def _keep(table, rows: np.ndarray, recipe: str, head) -> np.ndarray:
    if recipe == "detector":
        return np.ones(len(rows), bool)
    if recipe in ("bundled", "shipped"):  # the head folder in the package: embedding head (shipped: OR descriptor head)
        from dermlens.screen.lesion_filter import keep_lesions, load_descriptor_head
        from dermlens.screen.lesion_head import BUNDLED_HEAD_DIR, LesionHead

        descriptor_head = load_descriptor_head(BUNDLED_HEAD_DIR) if recipe == "shipped" else None
        return keep_lesions(LesionHead.load(BUNDLED_HEAD_DIR), descriptor_head, table["embedding"][rows],
                            table["descriptors"][rows], table["contrast"][rows], table["diameter"][rows])[0]
    if head[0] == "either":
        (emb_scorer, emb_t), (desc_scorer, desc_t) = head[1]
        return ((emb_scorer(head_features(table, rows, "emb")) >= emb_t)
                | (desc_scorer(head_features(table, rows, head[2])) >= desc_t))
    scorer, threshold = head
    return scorer(head_features(table, rows, recipe)) >= threshold


def detector_rows(records, table, test) -> list[dict]:
    """Per test patient: which true lesions the detector's candidates find, and which candidates are right."""
    rows = []
    for k in test:
        record, mine = records[k], table["patient"] == k
        truth_idx = table["truth"][mine]
        n = len(record["lesions"])
        rows.append({"patient": record["patient"], "source": record["source"], "way": record["way"],
                     "skin_tone": record["skin_tone"], "found": [t in truth_idx for t in range(n)],
                     "found_by": {"detector": [bool(t in truth_idx) for t in range(n)]},
                     "right_by": {"detector": [bool(t >= 0) for t in truth_idx]}, "planted": [],
                     "missed_detector": [t for t in range(n) if t not in truth_idx]})
    return rows


def score_cell(records, table, fit, test, recipes, target_recall) -> list[dict]:
    """Fit every recipe on the ``fit`` patients, score the ``test`` patients; one row per test patient."""
    fitted = fit_cell(records, table, fit, recipes, target_recall)
    ti = np.flatnonzero(np.isin(table["patient"], test))
    kept_by = {}
    for stage in ["detector"] + list(recipes):
        keep = np.zeros(len(table["truth"]), bool)
        keep[ti] = _keep(table, ti, stage, fitted["heads"].get(stage))
        kept_by[stage] = keep
    kept, stats, weights = kept_by[fitted["ud_recipe"]], fitted["stats"], fitted["weights"]
    ud_recipe = fitted["ud_recipe"]
    rows = []
    for k in test:
        record = records[k]
        n_truth = len(record["lesions"])
        row = {"patient": record["patient"], "source": record["source"], "way": record["way"],
               "skin_tone": record["skin_tone"], "clutter": record.get("clutter"), "found": [False] * n_truth,
               "found_by": {}, "right_by": {}, "weights": weights, "planted": []}
        mine = table["patient"] == k
        for stage, keep in kept_by.items():
            truth_idx = table["truth"][mine & keep]
            row["found_by"][stage] = [bool(t in truth_idx) for t in range(n_truth)]
            row["right_by"][stage] = [bool(t >= 0) for t in truth_idx]
            row[f"missed_{stage}"] = [t for t in range(n_truth) if t not in truth_idx]
        row["found"] = row["found_by"][ud_recipe]
        for _, e in _planted_hits(records, table, [k], kept, stats):
            scores = dict(e["comps"]) if e["comps"] else {}
            if scores:
                scores["mixed"] = mixed_scores(e["comps"], weights)
            hits = {"random": {kk: _hit(e, None, kk) for kk in (1, 3)}}
            for m in ("current", "knn_embedding", "knn_descriptors", "whitened_knn", "learned", "p_malignant", "size", "mixed"):
                hits[m] = {kk: _hit(e, scores.get(m), kk) if scores else 0.0 for kk in (1, 3)}
            row["planted"].append(hits)
        rows.append(row)
    return rows
