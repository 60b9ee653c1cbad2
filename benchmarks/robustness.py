"""One lesion, one answer? The bundled model on photos changed in everyday ways (issue 30), with 95% bootstrap CIs.

    python benchmarks/robustness.py [--tta 1] [--limit N] [--datasets ham10000_test,ph2] [--changes jpeg_30,...]
                                    [--model DIR] [--out runs/robustness] [--boot 1000] [--threads 1]
    python benchmarks/robustness.py --time-one-photo        # seconds per photo, one at a time, after start-up

Each photo of the test and external sets in ../shared/data (HAM10000 test, ISIC 2017 val, DermNet test, PAD-UFES-20
test, PH2, SD-198) is changed in each way of ``dermlens.data.corruptions.EVERYDAY_CHANGES`` (quarter turns and
mirrors, JPEG 50 and 30, half and quarter resolution, blur 1.5 and 3 px, brightness -30% and +30%, warmer and cooler
white balance, a mild and a strong phone pipeline), predicted as ``dermlens predict`` does (modality recognised,
the gate on; ``--tta`` views), and compared with the unchanged photo:

    stopped           share the gate stops (retake or cannot_assess)
    changed           share whose triage differs in any way from the unchanged photo's (refer/reassure/retake/...)
    flipped           among photos answered (not stopped) both times: share whose refer/reassure differs
    |dP(malignant)|   mean absolute change of P(malignant)
    AUC, dAUC         the issue's tasks, and the change against the unchanged photos (paired bootstrap CI)

CIs resample photos (HAM10000: lesions; PAD-UFES-20: patients). ``--limit N`` takes a fixed random N photos of
each set (the same ones for every change and every run; a smaller N takes a subset of a larger one's photos).
Each (set, change) result is cached in ``OUT/cache/tta<k>/`` per photo, so a run resumes where it stopped and a
second run with other options predicts only what is missing. Nothing here is tuned on these figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from dermlens.data.corruptions import EVERYDAY_CHANGES, everyday_change
from dermlens.data.datasets import load_records
from dermlens.evaluate.bootstrap import bootstrap_ci
from dermlens.runtime import cpu_name

DATA_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
UNCHANGED = "none"
STOPPED = ("retake", "cannot_assess")


@dataclass(frozen=True)
class Task:
    name: str
    node: str  # the probability that scores it
    positive: str  # taxonomy node whose photos are positives
    negative: str | None  # node whose photos are negatives; None: every other photo


@dataclass(frozen=True)
class TestSet:
    key: str
    folder: str
    split: str | None
    title: str
    tasks: tuple[Task, ...]


MEL_VS_NEVUS = Task("melanoma vs nevus", "melanoma", "melanoma", "melanocytic_nevus")
MEL_VS_REST = Task("melanoma vs rest", "melanoma", "melanoma", None)
MAL_VS_NONNEO = Task("malignant vs non-neoplastic", "malignant", "malignant", "non_neoplastic")
MAL_VS_BENIGN = Task("malignant vs benign", "malignant", "malignant", "benign")

TEST_SETS = {s.key: s for s in (
    TestSet("ham10000_test", "ham10000", "test", "HAM10000 test", (MEL_VS_NEVUS,)),
    TestSet("isic2017_val", "isic2017", "val", "ISIC 2017 val", (MEL_VS_REST,)),
    TestSet("ph2", "ph2", None, "PH2 (external)", (MEL_VS_NEVUS,)),
    TestSet("dermnet_test", "dermnet", "test", "DermNet test", (MAL_VS_NONNEO, MAL_VS_BENIGN)),
    TestSet("pad_ufes_test", "pad_ufes", "test", "PAD-UFES-20 test", (MAL_VS_BENIGN,)),
    TestSet("sd198", "sd198_clinical", None, "SD-198 (external)", (MAL_VS_NONNEO, MAL_VS_BENIGN)),
)}
# the targets first, so that a run stopped early has their rows
PRIORITY = ["turn_90", "mirror_lr", "jpeg_30", "half_resolution", "blur_1.5", *(
    c for c in EVERYDAY_CHANGES if c not in ("turn_90", "mirror_lr", "jpeg_30", "half_resolution", "blur_1.5"))]
GROUPED = {"ham10000_test", "pad_ufes_test"}  # their record groups are lesions / patients; elsewhere one per photo


# -- predicting ------------------------------------------------------------------------------------------------------

def select(records: list, limit: int | None, seed: int = 0) -> list:
    """A fixed random ``limit`` of the records, in their own order (a prefix of one permutation: nested subsets)."""
    if limit is None or limit >= len(records):
        return records
    keep = set(np.random.default_rng(seed).permutation(len(records))[:limit].tolist())
    return [r for i, r in enumerate(records) if i in keep]


def name_of(record) -> str:
    return str(record.path)


def predict_change(predictor, records, change: str, batch_size: int, progress) -> dict[str, dict]:
    """Per photo: P(malignant), P(melanoma), triage, quality and modality of the photo changed by ``change``."""
    from PIL import Image

    transform = None if change == UNCHANGED else everyday_change(change)
    out: dict[str, dict] = {}
    for start in range(0, len(records), batch_size):
        part = records[start:start + batch_size]
        images = []
        for r in part:
            with Image.open(r.path) as image:
                photo = image.convert("RGB")
            images.append(photo if transform is None else transform(photo))
        for r, p in zip(part, predictor.predict(images, [name_of(r) for r in part], batch_size=batch_size)):
            out[name_of(r)] = {"p_malignant": p.probabilities.get("malignant"),
                               "p_melanoma": p.probabilities.get("melanoma"), "triage": p.triage or "error",
                               "quality": p.quality, "modality": p.modality, "error": p.error}
        progress.update(len(part))
    return out


def cached_predictions(predictor, records, change: str, cache_dir: Path, batch_size: int, progress) -> dict:
    """This change's results for these photos: read from the cache, predicting (and adding) only the missing ones."""
    path = cache_dir / f"{change}.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    missing = [r for r in records if name_of(r) not in cached]
    progress.update(len(records) - len(missing))
    if missing:
        cached.update(predict_change(predictor, missing, change, batch_size, progress))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached))
        os.replace(tmp, path)  # atomic: an interrupted run never leaves half a file
    return {name_of(r): cached[name_of(r)] for r in records}


# -- figures ---------------------------------------------------------------------------------------------------------

def auc(y, s) -> float:
    return float(roc_auc_score(y, s))


def with_ci(metric, arrays, groups, n_boot: int) -> dict:
    value = float(metric(*arrays)) if len(arrays[0]) else float("nan")
    low, high = bootstrap_ci(metric, arrays, n=n_boot, groups=groups) if len(arrays[0]) else (float("nan"),) * 2
    return {"value": value, "ci95": [low, high], "n": int(len(arrays[0]))}


def task_arrays(task: Task, taxonomy, records) -> tuple[np.ndarray, np.ndarray]:
    """(photos in the task, positive) masks over the records."""
    def under(node):
        return np.array([node == r.node or node in taxonomy.ancestors(r.node) for r in records])

    positive = under(task.positive)
    negative = ~positive if task.negative is None else under(task.negative)
    return positive | negative, positive


def compare(base: dict, changed: dict, records, taxonomy, test_set: TestSet, n_boot: int) -> dict:
    names = [name_of(r) for r in records]
    groups = np.array([r.group if test_set.key in GROUPED else name_of(r) for r in records])
    b_triage = np.array([base[n]["triage"] for n in names])
    c_triage = np.array([changed[n]["triage"] for n in names])
    b_stop, c_stop = np.isin(b_triage, STOPPED), np.isin(c_triage, STOPPED)
    ok = (b_triage != "error") & (c_triage != "error")
    answered = ok & ~b_stop & ~c_stop
    dp = np.array([abs((changed[n]["p_malignant"] or 0) - (base[n]["p_malignant"] or 0)) for n in names])
    figures = {
        "photos": int(ok.sum()),
        "stopped": with_ci(np.mean, [c_stop[ok].astype(float)], groups[ok], n_boot),
        "stopped_unchanged": float(b_stop[ok].mean()) if ok.any() else float("nan"),
        "changed": with_ci(np.mean, [(b_triage != c_triage)[ok].astype(float)], groups[ok], n_boot),
        "flipped": with_ci(np.mean, [(b_triage != c_triage)[answered].astype(float)], groups[answered], n_boot),
        "dp_malignant": with_ci(np.mean, [dp[ok]], groups[ok], n_boot),
        "stopped_reasons": _counts([changed[n]["quality"] for n, s in zip(names, c_stop & ok) if s]),
        "modality_changed": float(np.mean([base[n]["modality"] != changed[n]["modality"] for n in np.array(names)[ok]])),
        "tasks": {},
    }
    for task in test_set.tasks:
        member, positive = task_arrays(task, taxonomy, records)
        member &= ok
        key = "p_" + task.node
        s_base = np.array([base[n][key] for n in names], dtype=float)
        s_changed = np.array([changed[n][key] for n in names], dtype=float)
        y, g = positive[member], groups[member]
        if y.all() or not y.any():
            continue
        figures["tasks"][task.name] = {
            "positives": int(y.sum()), "negatives": int((~y).sum()),
            "auc": with_ci(auc, [y, s_changed[member]], g, n_boot),
            "auc_change": with_ci(lambda yy, a, b: auc(yy, b) - auc(yy, a), [y, s_base[member], s_changed[member]], g, n_boot),
        }
    return figures


def _counts(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def pooled(results: dict, change: str) -> dict:
    """Photo-weighted figures over every set (no CI: the sets differ too much for one resampling unit)."""
    rows = [results[k][change] for k in results if change in results[k]]
    n = sum(r["photos"] for r in rows)
    answered = sum(r["flipped"]["n"] for r in rows)
    return {
        "photos": n,
        "stopped": sum(r["stopped"]["value"] * r["photos"] for r in rows) / max(n, 1),
        "stopped_unchanged": sum(r["stopped_unchanged"] * r["photos"] for r in rows) / max(n, 1),
        "changed": sum(r["changed"]["value"] * r["photos"] for r in rows) / max(n, 1),
        "flipped": sum(r["flipped"]["value"] * r["flipped"]["n"] for r in rows if r["flipped"]["n"]) / max(answered, 1),
        "dp_malignant": sum(r["dp_malignant"]["value"] * r["photos"] for r in rows) / max(n, 1),
    }


def verdict(p: dict) -> str:
    """What happens to the answer: it holds, the gate stops the photo (retake), or answers flip unstopped."""
    if p["flipped"] <= 0.08 and p["stopped"] - p["stopped_unchanged"] < 0.25:
        return "holds"
    if p["stopped"] - p["stopped_unchanged"] >= 0.5:
        return "stopped (retake)" + ("" if p["flipped"] <= 0.08 else f"; answered ones flip {p['flipped']:.0%}")
    return "flips" if p["stopped"] - p["stopped_unchanged"] < 0.25 else "partly stopped, answered ones flip"


# -- tables ----------------------------------------------------------------------------------------------------------

def pct(m: dict | float) -> str:
    if isinstance(m, dict):
        if m["n"] == 0 or np.isnan(m["value"]):
            return "–"
        return f"{100 * m['value']:.1f} [{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}]"
    return f"{100 * m:.1f}"


def num(m: dict, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{m['value']:{f}} [{m['ci95'][0]:{f}}, {m['ci95'][1]:{f}}]"


def markdown(results: dict, changes: list[str], tta: int, header: str) -> str:
    lines = [header, "", f"### Every set pooled (photo-weighted), tta {tta}", "",
             "| change | strength | photos | stopped % (unchanged: %) | triage changed % | flipped among answered % "
             "| mean \\|dP(malignant)\\| | what happens |", "|---|---|---|---|---|---|---|---|"]
    for change in changes:
        if change == UNCHANGED:
            continue
        p = pooled(results, change)
        family, strength, _ = EVERYDAY_CHANGES[change]
        lines.append(f"| {family} | {strength} | {p['photos']} | {pct(p['stopped'])} ({pct(p['stopped_unchanged'])}) "
                     f"| {pct(p['changed'])} | {pct(p['flipped'])} | {p['dp_malignant']:.3f} | {verdict(p)} |")
    for key, rows in results.items():
        test_set = TEST_SETS[key]
        first = next(iter(rows.values()))
        tasks = list(first["tasks"])
        lines += ["", f"### {test_set.title}, tta {tta} ({first['photos']} photos; "
                  + "; ".join(f"{t}: {first['tasks'][t]['positives']} vs {first['tasks'][t]['negatives']}" for t in tasks)
                  + ")", "",
                  "| change | stopped % | triage changed % | flipped among answered % | mean \\|dP(mal)\\| | "
                  + " | ".join(f"{t} AUC | dAUC" for t in tasks) + " |",
                  "|---|---|---|---|---|" + "---|---|" * len(tasks)]
        for change, f in rows.items():
            label = "none" if change == UNCHANGED else f"{EVERYDAY_CHANGES[change][0]}, {EVERYDAY_CHANGES[change][1]}"
            if change == UNCHANGED:
                cells = f"{pct(f['stopped'])} | – | – | – | " + " | ".join(
                    f"{num(f['tasks'][t]['auc'])} | –" if t in f["tasks"] else "– | –" for t in tasks)
            else:
                cells = (f"{pct(f['stopped'])} | {pct(f['changed'])} | {pct(f['flipped'])} | {num(f['dp_malignant'])} | "
                         + " | ".join(f"{num(f['tasks'][t]['auc'])} | {num(f['tasks'][t]['auc_change'], True)}"
                                      if t in f["tasks"] else "– | –" for t in tasks))
            lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"


# -- timing ----------------------------------------------------------------------------------------------------------

def time_one_photo(args) -> int:
    """Seconds per photo, one call per photo, after start-up (the model loaded and one photo answered)."""
    from PIL import Image

    from dermlens.predict import Predictor

    photos = {"HAM10000 200x150": next(r for r in load_records(args.data_root / "ham10000") if r.split == "test").path,
              "PH2 765x574": load_records(args.data_root / "ph2")[0].path}
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 255, (3024, 4032, 3), dtype=np.uint8))  # a 12-megapixel phone photo
    started = time.perf_counter()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, threads {args.threads}; load average "
          f"{os.getloadavg()[0]:.1f} (other work shares these cores)")
    for tta in sorted({1, args.tta, 8}):
        started = time.perf_counter()
        predictor = Predictor(args.model, tta=tta, threads=args.threads)
        predictor.predict_one(photos["HAM10000 200x150"])
        startup = time.perf_counter() - started
        for label, photo in [*photos.items(), ("12 MP phone photo (noise)", big)]:
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                predictor.predict_one(photo)
                times.append(time.perf_counter() - started)
            print(f"tta {tta} ({predictor.engine_name}): {label:<28} median {np.median(times):.3f} s, "
                  f"max {max(times):.3f} s over {args.repeats} (start-up {startup:.1f} s)")
    return 0


# -- main ------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Model folder; default the bundled model.")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--tta", type=int, default=1, choices=[1, 2, 3, 4, 5, 6, 7, 8], help="Orientation views.")
    parser.add_argument("--datasets", default=",".join(TEST_SETS), help=f"Comma-separated, of: {', '.join(TEST_SETS)}.")
    parser.add_argument("--changes", default=",".join(PRIORITY), help="Comma-separated change names (run in this order).")
    parser.add_argument("--limit", type=int, default=None, help="At most N photos of each set (a fixed random N).")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="Inference threads (others share this machine).")
    parser.add_argument("--out", type=Path, default=Path("runs/robustness"))
    parser.add_argument("--time-one-photo", action="store_true", help="Only time single photos (default settings).")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.time_one_photo:
        return time_one_photo(args)
    keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    changes = [c.strip() for c in args.changes.split(",") if c.strip() and c.strip() != UNCHANGED]
    for key in keys:
        if key not in TEST_SETS:
            parser.error(f"--datasets: unknown set {key!r}; known: {', '.join(TEST_SETS)}")
    for change in changes:
        if change not in EVERYDAY_CHANGES:
            parser.error(f"--changes: unknown change {change!r}; known: {', '.join(EVERYDAY_CHANGES)}")

    from tqdm.auto import tqdm

    from dermlens.predict import Predictor
    from dermlens.taxonomy import default_taxonomy

    predictor = Predictor(args.model, tta=args.tta, threads=args.threads)
    taxonomy = default_taxonomy()
    chosen = {}
    for key in keys:
        folder = args.data_root / TEST_SETS[key].folder
        if not folder.is_dir():
            print(f"{key}: not found at {folder}; skipped", file=sys.stderr)
            continue
        records = [r for r in load_records(folder) if TEST_SETS[key].split is None or r.split == TEST_SETS[key].split]
        chosen[key] = select(records, args.limit)
    total = sum(len(r) for r in chosen.values()) * (len(changes) + 1)
    started = time.time()
    results: dict[str, dict] = {key: {} for key in chosen}
    bases = {}
    # change-major: an interrupted run has whole rows (every set) for the changes it reached
    with tqdm(total=total, desc=f"robustness tta{args.tta}", unit="photo", mininterval=30) as progress:
        for change in [UNCHANGED, *changes]:
            for key, records in chosen.items():
                cache_dir = args.out / "cache" / f"tta{args.tta}" / key
                cache_dir.mkdir(parents=True, exist_ok=True)
                got = cached_predictions(predictor, records, change, cache_dir, args.batch_size, progress)
                bases.setdefault(key, got)
                results[key][change] = compare(bases[key], got, records, taxonomy, TEST_SETS[key], args.boot)
    header = (f"Model {args.model or 'bundled'}, engine {predictor.engine_name}, tta {args.tta}, modality recognised, "
              f"gate on; {'all photos' if args.limit is None else f'at most {args.limit} photos'} per set; "
              f"{time.time() - started:.0f} s on {cpu_name()} ({args.threads} thread(s)). "
              f"Command: python benchmarks/robustness.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    text = markdown(results, [UNCHANGED, *changes], args.tta, header)
    print(text)
    stem = f"robustness_tta{args.tta}" + (f"_limit{args.limit}" if args.limit else "")
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps({"header": header, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
