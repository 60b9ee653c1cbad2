"""The photo gate (issues 14, 28): what it stops, what it lets through, and what it costs.

    python benchmarks/gate.py [--model DIR] [--data ../shared/data] [--wide-field-test runs/wide-test] [--out runs/gate]

Measured on the *test* parts only (``dermlens.gate.data``): each dataset's test split (all of PH2 and SD-198,
which are never fitted on), everyday photos of classes left out of the fit (below), scikit-image photos the fit
never saw plus generated pictures from other seeds, generated wide-field photos from the test split's lesions, and
test-part skin photos spoiled by known amounts. Prints, with 95% Wilson intervals for shares and bootstrap
intervals for AUC:
- real skin photos wrongly stopped, per dataset and per modality (target <= 1.5% each);
- everyday non-skin photos of kinds never fitted on, stopped (target >= 97%, lower bound >= 94%): leave-classes-out.
  The ImageNet classes are grouped by WordNet (``gate_class_groups.csv``: dogs, birds, food, vehicles, ...); for
  each group the gate is fitted again exactly as the model's was (same options, same skin photos) without that
  group's photos, and decides on the group's photos. Per group, and pooled;
- the model's gate on scikit-image's test photos and generated pictures (the figure issue 14 reported);
- wide-field photos (several lesions on generated skin, from test-split lesions) told to use ``dermlens screen``;
- degraded photos stopped, per degradation and level; "clearly degraded" = Gaussian blur sigma >= 4 px at the
  model's input size, motion blur 17 px, exposure clipping over half the centre, downscaled below 0.4 of the input
  side (target >= 90%);
- melanoma-vs-nevus AUC on all real photos and on those the gate lets through;
- the gate's added time per image in ``Predictor.predict`` (decode + preprocess + network), target <= 10%.
The model must have a fitted gate (``dermlens gate fit --model DIR``).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.gate.data import (DEGRADATIONS, Photo, centre_clipped_share, degrade, everyday_photos, load_skin,
                                non_skin_photos, skin_records, wide_field_photos)
from dermlens.gate.fit import (EVERYDAY_FOLDER, EXTERNAL_DATASETS, FIT_DATASETS, FitOptions, analyse_photos,
                               default_data_dirs, embed_fit_set, fit_on)
from dermlens.predict import Predictor

CLASS_GROUPS = Path(__file__).with_name("gate_class_groups.csv")


def share(stopped) -> dict:
    stopped = np.asarray(stopped, bool)
    n, k = len(stopped), int(stopped.sum())
    if not n:
        return {"n": 0, "share": float("nan"), "ci": [float("nan")] * 2}
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return {"n": n, "stopped": k, "share": k / n, "ci": [float(ci.low), float(ci.high)]}


def line(label: str, s: dict, target: str = "") -> str:
    return f"  {label:<38} {s['share']:6.1%}  [{s['ci'][0]:6.1%}, {s['ci'][1]:6.1%}]  n={s['n']:<5} {target}"


def verdicts_for(predictor, photos, gate=None):
    a = analyse_photos(predictor, photos, progress=True)
    return (gate or predictor.gate).decide(a.measures, a.embeddings, a.appearance), a.probabilities


def _save_fit_set(fit, path: Path) -> None:
    arrays = {"datasets": fit.datasets, "other_labels": fit.other_labels, "about": np.array(json.dumps(fit.about)),
              "held": fit.held if fit.held is not None else np.zeros(0, bool)}
    for name, a in (("skin", fit.skin), ("others", fit.others), ("wide", fit.wide)):
        if a is not None:
            arrays.update({f"{name}_embeddings": a.embeddings.numpy(), f"{name}_appearance": a.appearance.numpy(),
                           f"{name}_measures": np.array([list(m.to_dict().values()) for m in a.measures], float)})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _load_fit_set(path: Path, about: dict):
    from dermlens.gate.fit import Analysis, FitSet
    from dermlens.gate.quality import QualityMeasures

    saved = np.load(path, allow_pickle=False)
    if json.loads(str(saved["about"])) != about:
        return None
    def analysis(name):
        if f"{name}_embeddings" not in saved:
            return None
        m = [QualityMeasures(*row) for row in saved[f"{name}_measures"].tolist()]
        return Analysis(torch.from_numpy(saved[f"{name}_embeddings"]), torch.from_numpy(saved[f"{name}_appearance"]), m,
                        np.zeros((len(m), 0)))
    held = saved["held"] if len(saved["held"]) else None
    return FitSet(analysis("skin"), saved["datasets"], analysis("others"), saved["other_labels"], analysis("wide"), about, held)


def leave_classes_out(predictor, args) -> dict:
    """Each group of ImageNet classes left out of the fit in turn; the refitted gate decides on its photos."""
    import csv

    gate = predictor.gate
    about = gate.info.get("fitted_on", {})
    options = FitOptions(**gate.info["options"]) if "options" in gate.info else FitOptions()
    everyday = args.data / EVERYDAY_FOLDER
    wanted = {"data": [str(d) for d in default_data_dirs(args.data)], "everyday": str(everyday),
              "wide_field": str(about.get("wide_field") or ""), "per_dataset": int(about.get("per_dataset", 500)),
              "seed": int(about.get("seed", 0))}
    weights = predictor.model_dir / "model.safetensors"
    key = {**wanted, "weights": f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}"}
    cached = args.cache / "fit_set.npz" if args.cache else None
    fit = _load_fit_set(cached, key) if cached and cached.is_file() else None
    if fit is None:  # the same photos the model's gate was fitted on, analysed again (or read from --cache)
        fit = embed_fit_set(predictor, default_data_dirs(args.data), everyday=everyday,
                            wide_field=wanted["wide_field"] or None, per_dataset=wanted["per_dataset"], seed=wanted["seed"])
        if cached:
            _save_fit_set(replace(fit, about=key), cached)
    groups = {r["wnid"]: r["group"] for r in csv.DictReader(open(args.class_groups))}
    photos = everyday_photos(everyday, variants_per_photo=1)
    analysed = analyse_photos(predictor, photos, desc="everyday photos")
    names = np.array([groups.get(p.label, "ungrouped") for p in photos])
    stopped, verdicts = np.zeros(len(photos), bool), [None] * len(photos)
    for group in sorted(set(names)):
        mine = names == group
        held_gate = fit_on(fit.without({p.label for p, m in zip(photos, mine) if m}), options)
        part = analysed.subset(mine)
        for i, v in zip(np.flatnonzero(mine), held_gate.decide(part.measures, part.embeddings, part.appearance)):
            stopped[i], verdicts[i] = v.stopped, v.quality
    out = {"all": share(stopped)}
    print("\nEveryday photos of kinds never fitted on, stopped (leave-classes-out; target >= 97%, lower bound >= 94%)")
    print(line("all", out["all"], str(dict(sorted({q: verdicts.count(q) for q in set(verdicts)}.items())))))
    for group in sorted(set(names)):
        out[group] = share(stopped[names == group])
        missed = [p.name.split("#")[0].split("/")[-1] for p, s, g in zip(photos, stopped, names) if g == group and not s]
        out[group]["let_through"] = missed
        print(line(group, out[group], ", ".join(missed)))
    return out


def wide_field(predictor, folder) -> dict:
    photos = wide_field_photos(folder, seed=1)
    verdicts, _ = verdicts_for(predictor, photos)
    s = share([v.verdict == "wide_field" for v in verdicts])
    s["verdicts"] = dict(sorted({q: sum(v.quality == q for v in verdicts) for q in {v.quality for v in verdicts}}.items()))
    print(f"\nWide-field photos told to use `dermlens screen` ({folder}: whole and cropped)")
    print(line("wide_field", s, str(s["verdicts"])))
    return s


def melanoma_vs_nevus(predictor, photos, probs, keep):
    tax = predictor.taxonomy
    mel = set(tax.descendants("melanoma")) if "melanoma" in tax else set()
    nev = set(tax.descendants("melanocytic_nevus")) if "melanocytic_nevus" in tax else set()
    y = np.array([1 if p.label in mel else 0 if p.label in nev else -1 for p in photos])
    p_mel = predictor.node_probabilities(probs)[:, predictor.node_ids.index("melanoma")]
    out = {}
    for name, mask in (("all real photos", y >= 0), ("let through by the gate", (y >= 0) & keep)):
        yy, ss = y[mask], p_mel[mask]
        auc = float(roc_auc_score(yy, ss)) if len(set(yy)) == 2 else float("nan")
        out[name] = {"n": int(mask.sum()), "melanomas": int(yy.sum()), "auc": auc,
                     "ci": list(bootstrap_ci(roc_auc_score, [yy, ss], n=1000))}
    return out


def timing(model, taxonomy, files, repeats: int = 3) -> dict:
    """Seconds per image of Predictor.predict with and without the gate (same model, same files, alternated)."""
    with_gate = Predictor(model, taxonomy=taxonomy)
    without = Predictor(model, taxonomy=taxonomy, gate=False)
    with_gate.predict(files[:8]), without.predict(files[:8])  # warm-up
    runs = defaultdict(list)
    for _ in range(repeats):
        for name, p in (("gate", with_gate), ("no_gate", without)):
            t = time.perf_counter()
            p.predict(files, batch_size=16)
            runs[name].append((time.perf_counter() - t) / len(files))
    g, n = float(np.median(runs["gate"])), float(np.median(runs["no_gate"]))
    return {"seconds_per_image_gate": g, "seconds_per_image_no_gate": n, "added": g / n - 1, "images": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--taxonomy", type=Path, default=None, help="the tree the model was trained with")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-dataset", type=int, default=400, help="real test photos per dataset (at most)")
    parser.add_argument("--class-groups", type=Path, default=CLASS_GROUPS, help="wnid -> group of ImageNet classes")
    parser.add_argument("--wide-field-test", type=Path, default=None,
                        help="folder of wide-field test photos (benchmarks/screen_benchmark.py --split test)")
    parser.add_argument("--skip-leave-out", action="store_true", help="skip the leave-classes-out refits")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder to keep the fit photos' analysis in (leave-classes-out reuses it; same model only)")
    parser.add_argument("--degraded", type=int, default=25, help="test photos spoiled at each degradation level")
    parser.add_argument("--timing-images", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write figures.json here")
    args = parser.parse_args()
    torch.manual_seed(0)

    from dermlens.taxonomy.tree import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy) if args.taxonomy else None
    predictor = Predictor(args.model, taxonomy=taxonomy)
    if not predictor.gate.fitted:
        raise SystemExit(f"{predictor.model_dir}: no fitted gate; run `dermlens gate fit --model {predictor.model_dir}` first")
    size = predictor.config.preprocessing.size
    figures: dict = {"model": str(predictor.model_dir), "thresholds": predictor.gate.thresholds.to_dict()}

    chosen = skin_records(default_data_dirs(args.data, FIT_DATASETS + EXTERNAL_DATASETS), "test", args.per_dataset)
    skin = load_skin(chosen)
    skin_verdicts, skin_probs = verdicts_for(predictor, skin)
    stopped = np.array([v.stopped for v in skin_verdicts])
    print(f"\nReal skin photos wrongly stopped (test parts; target <= 1.5% on every dataset)")
    figures["skin_wrongly_stopped"] = {}
    for key, groups in (("dataset", [p.kind for p in skin]), ("modality", [p.modality for p in skin])):
        groups = np.array(groups)
        for g in sorted(set(groups)):
            s = share(stopped[groups == g])
            reasons = defaultdict(int)
            for v, gg in zip(skin_verdicts, groups):
                if gg == g and v.stopped:
                    reasons[v.quality] += 1
            s["why"] = dict(reasons)
            figures["skin_wrongly_stopped"][f"{key}:{g}"] = s
            print(line(f"{key} {g}", s, str(dict(reasons)) if reasons else ""))

    if not args.skip_leave_out and (args.data / EVERYDAY_FOLDER / "photos.csv").is_file():
        figures["everyday_leave_classes_out"] = leave_classes_out(predictor, args)
    if args.wide_field_test:
        figures["wide_field_told_to_screen"] = wide_field(predictor, args.wide_field_test)

    others = non_skin_photos("test")
    other_verdicts, _ = verdicts_for(predictor, others)
    print(f"\nscikit-image and generated non-skin photos stopped (sources never fitted on)")
    kinds = np.array([o.kind.split(":")[0] for o in others])
    o_stopped = np.array([v.stopped for v in other_verdicts])
    figures["non_skin_stopped"] = {"all": share(o_stopped)}
    print(line("all", figures["non_skin_stopped"]["all"]))
    for k in sorted(set(kinds)):
        figures["non_skin_stopped"][k] = share(o_stopped[kinds == k])
        print(line(k, figures["non_skin_stopped"][k]))
    sources = sorted({o.kind for o in others})
    missed = {s: int(sum(1 for o, v in zip(others, other_verdicts) if o.kind == s and not v.stopped)) for s in sources}
    print("  let through, by source:", {s: m for s, m in missed.items() if m} or "none")
    figures["non_skin_let_through_by_source"] = missed

    rng = np.random.default_rng(0)
    base = [skin[i] for i in rng.choice(len(skin), min(args.degraded, len(skin)), replace=False)]
    print(f"\nDegraded skin photos stopped ({len(base)} test photos per level; clearly degraded: target >= 90%)")
    figures["degraded_stopped"] = {}
    clearly = []
    for kind, level, clear in DEGRADATIONS:
        spoiled = [Photo(p.name, degrade(p.image, kind, level, size), kind=kind, level=str(level)) for p in base]
        verdicts, _ = verdicts_for(predictor, spoiled)
        s = share([v.stopped for v in verdicts])
        if kind in ("overexposed", "underexposed"):
            s["mean_centre_clipped"] = float(np.mean([centre_clipped_share(p.image)[kind == "underexposed"] for p in spoiled]))
        s["verdicts"] = dict(sorted({q: sum(v.quality == q for v in verdicts) for q in {v.quality for v in verdicts}}.items()))
        figures["degraded_stopped"][f"{kind}={level}"] = s
        if clear:
            clearly += [v.stopped for v in verdicts]
        extra = f"clipped centre {s['mean_centre_clipped']:.0%}" if "mean_centre_clipped" in s else ""
        print(line(f"{kind} {level}{' (clear)' if clear else ''}", s, f"{extra} {s['verdicts']}"))
    figures["degraded_stopped"]["clearly degraded, pooled"] = share(clearly)
    print(line("clearly degraded, pooled", figures["degraded_stopped"]["clearly degraded, pooled"]))

    print("\nMelanoma vs nevus AUC (real test photos)")
    figures["melanoma_vs_nevus_auc"] = melanoma_vs_nevus(predictor, skin, skin_probs, ~stopped)
    for name, a in figures["melanoma_vs_nevus_auc"].items():
        print(f"  {name:<38} {a['auc']:.3f}  [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]  n={a['n']} ({a['melanomas']} melanomas)")

    files = [str(r.path) for _, r in chosen[: args.timing_images]]
    figures["timing"] = timing(args.model, taxonomy, files)
    t = figures["timing"]
    print(f"\nTime per image in Predictor.predict ({t['images']} files, median of 3): {1000 * t['seconds_per_image_no_gate']:.1f} ms "
          f"without the gate, {1000 * t['seconds_per_image_gate']:.1f} ms with it: +{t['added']:.1%} (target <= 10%)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
