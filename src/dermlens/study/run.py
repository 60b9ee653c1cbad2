"""The Esteva-style study: grouped k-fold cross-validation of the same backbone trained three ways.

    records ─► grouped, stratified k folds (groups = lesion / patient)
    per fold: the fold is the test part; a grouped validation part is carved from the rest (for model selection,
              temperature scaling and operating points: never chosen on test data); the rest trains
    label spaces (the paper's ablation): trained directly on the 3 first-level classes, on the 9 second-level
              classes, or on the training classes of the partitioning algorithm (``max_class_size``)
    modes:    "fast" — frozen ImageNet backbone, pre-logit features computed once, a linear head per fold and space
              "full" — every fold and space fine-tuned end to end with ``dermlens.train.recipe.train`` (GPU work)
    outputs:  predictions/ (per fold and space: log-probabilities of the test and validation images), the features'
              t-SNE, saliency overlays, a model (fold 0, training classes) and then metrics.json + report.html,
              which ``dermlens report`` rebuilds from predictions/ alone.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dermlens.data.datasets import load_pooled
from dermlens.data.io import ImageDecodeError, load_image
from dermlens.data.records import Record
from dermlens.data.splits import grouped_kfold
from dermlens.data.transforms import Preprocessing, build_eval_transform
from dermlens.taxonomy import ClassAssignment, Taxonomy, TrainingClass, default_taxonomy, partition
from dermlens.taxonomy.partition import esteva_max_class_size

SPACES = ("three_way", "nine_way", "training_classes")
SPACE_LEVEL = {"three_way": 1, "nine_way": 2}
SPACE_TITLES = {"three_way": "3 first-level classes", "nine_way": "9 second-level classes",
                "training_classes": "partitioned training classes"}
PREDICTIONS = "predictions"
L2_GRID = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4)  # strongest first: each fit warm-starts the next
DEFAULT_L2 = 1e-2
STUDY_FILE = "study.json"
RECORDS_FILE = "records.csv"


@dataclass
class StudyConfig:
    mode: str = "fast"  # fast | full
    folds: int = 9  # as in Esteva et al.
    arch: str = "efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None  # None: the backbone's own
    color_constancy: bool = True
    max_class_size: float | None = None  # None: Esteva et al.'s 1000 per 129,450 images, scaled to the data
    spaces: tuple[str, ...] = SPACES
    val_fraction: float = 0.15  # of each fold's training part
    seed: int = 0
    batch_size: int = 64
    num_workers: int = 2
    # fast mode: the linear head (L-BFGS iterations per L2 value on the grid)
    head_iterations: int = 100
    balance: str = "loss"  # none | loss (inverse-frequency loss weights)
    # full mode: overrides of dermlens.train.recipe.TrainConfig (epochs, lr, batch_size, ...)
    train: dict = field(default_factory=dict)
    # explanation
    tsne_points: int = 1000  # class-stratified sample for the t-SNE figure
    saliency_per_class: int = 2  # correct and as many incorrect cases per class
    n_boot: int = 1000

    def __post_init__(self):
        if self.mode not in ("fast", "full"):
            raise ValueError(f"mode must be fast or full; got {self.mode!r}")
        unknown = [s for s in self.spaces if s not in SPACES]
        if unknown or not self.spaces:
            raise ValueError(f"spaces must be a non-empty subset of {SPACES}; got {self.spaces}")
        if "training_classes" not in self.spaces:
            raise ValueError("the training_classes space is the study's main model; keep it in spaces")
        self.spaces = tuple(s for s in SPACES if s in self.spaces)


# ---------------------------------------------------------------------------------------------- label spaces
def level_node(taxonomy: Taxonomy, node: str, space: str) -> str | None:
    """The node an image labelled ``node`` trains as in a direct 3-way / 9-way space (None: labelled above it)."""
    return taxonomy.ancestor_at_level(node, SPACE_LEVEL[space])


def space_classes(space: str, taxonomy: Taxonomy, train_nodes: list[str], max_class_size: float) -> list[TrainingClass]:
    """The classes a head of ``space`` is trained on, from the nodes of its training images."""
    if space == "training_classes":
        return partition(taxonomy, Counter(train_nodes), max_class_size)
    counts = Counter(n for n in (level_node(taxonomy, m, space) for m in train_nodes) if n)
    return [TrainingClass(n, counts[n]) for n in taxonomy.level_nodes(SPACE_LEVEL[space]) if counts[n]]


def targets_for(assignment: ClassAssignment, nodes: list[str]) -> np.ndarray:
    """Class index per node, -1 where no class covers it (such images are left out of training and scoring)."""
    out = []
    for n in nodes:
        try:
            out.append(assignment.class_index(n))
        except ValueError:
            out.append(-1)
    return np.array(out, dtype=int)


# ---------------------------------------------------------------------------------------------- folds
def carve_validation(records: list[Record], indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split a fold's training indices into (train, validation), grouped and stratified."""
    pool = [records[i] for i in indices]
    k = max(2, min(round(1 / fraction), len({r.group for r in pool})))
    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": expected, harmless
        warnings.simplefilter("ignore", UserWarning)
        train_local, val_local = next(grouped_kfold(pool, k, seed=seed))
    return [indices[i] for i in train_local], [indices[i] for i in val_local]


def make_folds(records: list[Record], n_folds: int, val_fraction: float, seed: int) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(grouped_kfold(records, n_folds, seed=seed))
    folds = []
    for k, (rest, test) in enumerate(splits):
        train_idx, val_idx = carve_validation(records, rest, val_fraction, seed + 1 + k)
        folds.append({"fold": k, "train": sorted(train_idx), "val": sorted(val_idx), "test": sorted(test)})
    return folds


# ---------------------------------------------------------------------------------------------- fast mode
class _TolerantDataset(Dataset):
    """Images through a transform; an undecodable one yields a zero image and ok=False instead of killing the run."""

    def __init__(self, records, transform, size: int):
        self.records, self.transform, self.size = list(records), transform, size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        try:
            return self.transform(load_image(self.records[i].path)), True, ""
        except ImageDecodeError as e:
            return torch.zeros(3, self.size, self.size), False, str(e)


def feature_preprocessing(cfg: StudyConfig) -> Preprocessing:
    from dermlens.models import create_backbone

    _, pre = create_backbone(cfg.arch, 1, pretrained=False)
    return replace(pre, size=cfg.image_size or pre.size, color_constancy="shades_of_gray" if cfg.color_constancy else None)


def compute_features(records: list[Record], cfg: StudyConfig, cache_dir: Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """Pre-logit features of the frozen ImageNet backbone for every record (cached by content of the request).

    Returns (features (n, d) float32, ok (n,) bool, error messages of the images that failed to decode, whether
    they came from the cache).
    """
    from dermlens.models import create_backbone
    from dermlens.models.features import extract_features

    pre = feature_preprocessing(cfg)
    key = hashlib.sha256(json.dumps(
        [cfg.arch, cfg.weights, pre.to_dict(), [str(r.path) for r in records]], default=str
    ).encode()).hexdigest()[:16]
    cache = cache_dir / f"features-{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            return stored["features"], stored["ok"], [str(e) for e in stored["errors"]], True
    model, _ = create_backbone(cfg.arch, 1, pretrained=True, weights=cfg.weights)
    model = model.to(memory_format=torch.channels_last).eval()
    dataset = _TolerantDataset(records, build_eval_transform(pre), pre.size)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    feats, oks, errors = [], [], []
    with tqdm(total=len(records), desc="backbone features", unit="img", disable=not progress) as bar:
        for images, ok, error in loader:
            feats.append(extract_features(model, [images]).numpy())
            oks.append(ok.numpy())
            errors += [e for e in error if e]
            bar.update(len(images))
    features, ok = np.concatenate(feats).astype(np.float32), np.concatenate(oks).astype(bool)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=features, ok=ok, errors=np.array(errors, dtype=str))
    return features, ok, errors, False


def train_linear_head(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
    cfg: StudyConfig, seed: int,
) -> torch.nn.Linear:
    """A linear probe: L2-regularised multinomial logistic regression on the frozen features (class-balanced loss).

    Full-batch L-BFGS solves each (convex) problem; the L2 strength is chosen from ``L2_GRID`` by the class-weighted
    cross-entropy on the fold's validation images (warm-starting from the stronger penalty). Features are centred
    and scaled for the solver and that is folded back into the weights, so the returned layer reads raw features,
    exactly as the network's own classifier does.
    """
    # One thread: these are thin matrix products, and a second thread only adds synchronisation (measured on this
    # machine under load, 7,500 x 1,280 features: 11 ms per loss evaluation on one thread, 78 ms on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_linear_head(x_train, y_train, x_val, y_val, n_classes, cfg, seed)
    finally:
        torch.set_num_threads(threads)


def _train_linear_head(x_train, y_train, x_val, y_val, n_classes, cfg: StudyConfig, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    mean = x_train.mean(0).astype(np.float64)
    # One scale for all features, not one per feature: per-feature standardisation inflates the many near-silent
    # channels to the loudness of informative ones, and the L2 penalty then stops telling them apart (measured:
    # 5-class accuracy 0.53 vs 0.69 on a small synthetic set).
    std = np.full(x_train.shape[1], x_train.std(0).mean() + 1e-6, dtype=np.float64)
    xt = torch.from_numpy((x_train - mean) / std).float()
    yt = torch.from_numpy(y_train).long()
    counts = np.bincount(y_train, minlength=n_classes).astype(float)
    if cfg.balance == "loss":
        weights = torch.tensor(counts.sum() / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    elif cfg.balance == "none":
        weights = torch.ones(n_classes)
    else:
        raise ValueError(f"balance must be none or loss in the fast study; got {cfg.balance!r}")
    criterion = torch.nn.CrossEntropyLoss(weight=weights)
    has_val = len(x_val) > 0 and len(np.unique(y_val)) >= 2
    if has_val:
        xv = torch.from_numpy((x_val - mean) / std).float()
        yv = torch.from_numpy(y_val).long()
    head = torch.nn.Linear(xt.shape[1], n_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    best, best_loss, chosen, worse = None, math.inf, None, 0
    for l2 in (L2_GRID if has_val else (DEFAULT_L2,)):
        optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=cfg.head_iterations, history_size=10,
                                      tolerance_grad=1e-5, tolerance_change=1e-9, line_search_fn="strong_wolfe")

        def closure(l2=l2):
            optimizer.zero_grad()
            loss = criterion(head(xt), yt) + 0.5 * l2 * head.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        if not has_val:
            break
        with torch.no_grad():
            val_loss = float(criterion(head(xv), yv))
        if val_loss < best_loss:
            best_loss, chosen, worse = val_loss, l2, 0
            best = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            worse += 1
            if worse == 2:  # validation loss is U-shaped in the penalty: past its minimum, stop
                break
    if best is not None:
        head.load_state_dict(best)
    folded = torch.nn.Linear(xt.shape[1], n_classes)
    with torch.no_grad():
        w = head.weight / torch.from_numpy(std).float()
        folded.weight.copy_(w)
        folded.bias.copy_(head.bias - w @ torch.from_numpy(mean).float())
    folded.l2 = chosen if chosen is not None else DEFAULT_L2  # for the record
    return folded


def _log_probs(head: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.log_softmax(head(torch.from_numpy(x).float()), 1).double().numpy()


# ---------------------------------------------------------------------------------------------- full mode
def _relabel(records: list[Record], taxonomy: Taxonomy, space: str) -> list[Record]:
    if space == "training_classes":
        return list(records)
    return [replace(r, node=n) for r in records if (n := level_node(taxonomy, r.node, space))]


def _full_fold(space, train_recs, val_recs, test_recs, fold_dir, cfg: StudyConfig, taxonomy, progress):
    """Fine-tune one model with the training recipe and predict the fold's test and validation images."""
    from dermlens.predict import Predictor
    from dermlens.train.recipe import TrainConfig, train

    options = dict(arch=cfg.arch, weights=cfg.weights, image_size=cfg.image_size, color_constancy=cfg.color_constancy,
                   num_workers=cfg.num_workers, seed=cfg.seed)
    options.update(cfg.train)
    # A direct 3-/9-way model: images relabelled at their level node, and max_class_size 1 keeps one class per node.
    options["max_class_size"] = cfg.max_class_size if space == "training_classes" else 1
    result = train(_relabel(train_recs, taxonomy, space), _relabel(val_recs, taxonomy, space), fold_dir,
                   TrainConfig(**options), taxonomy=taxonomy, progress=progress)
    predictor = Predictor(result.model_dir, taxonomy=taxonomy)
    with np.errstate(divide="ignore"):
        test = np.log(predictor.predict_records(test_recs, num_workers=cfg.num_workers, progress=progress))
        val = np.log(predictor.predict_records(val_recs, num_workers=cfg.num_workers, progress=progress))
    return list(predictor.config.classes), test, val, result.model_dir


def check_images(records: list[Record], progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Decode every image once (full mode; the fast mode's feature pass does this itself)."""
    ok, errors = np.ones(len(records), dtype=bool), []
    for i, r in enumerate(tqdm(records, desc="checking images", unit="img", disable=not progress)):
        try:
            load_image(r.path)
        except ImageDecodeError as e:
            ok[i] = False
            errors.append(str(e))
    return ok, errors


# ---------------------------------------------------------------------------------------------- the study
def load_study_records(data: str | Path | Sequence[str | Path]) -> list[Record]:
    """One dataset, or several pooled (see ``dermlens.data.datasets.load_pooled``)."""
    return load_pooled(data)


def write_records(path: Path, records: list[Record], fold_of: np.ndarray, ok: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "label", "node", "group", "modality", "fold", "ok"])
        for i, r in enumerate(records):
            # Absolute paths: the report may be rebuilt from another working directory.
            writer.writerow([i, str(Path(r.path).absolute()), r.label, r.node, r.group, r.modality, int(fold_of[i]),
                             int(ok[i])])


def read_records(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["index"], row["fold"], row["ok"] = int(row["index"]), int(row["fold"]), row["ok"] == "1"
    return rows


def save_fold(pred_dir: Path, space: str, fold: int, test_idx, test_lp, val_idx, val_lp) -> None:
    np.savez_compressed(
        pred_dir / f"{space}-fold{fold}.npz",
        test_index=np.asarray(test_idx, dtype=np.int64), test_log_probs=np.asarray(test_lp, dtype=np.float32),
        val_index=np.asarray(val_idx, dtype=np.int64), val_log_probs=np.asarray(val_lp, dtype=np.float32),
    )


def load_fold(pred_dir: Path, space: str, fold: int) -> dict[str, np.ndarray]:
    with np.load(pred_dir / f"{space}-fold{fold}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def run_study(
    data: str | Path | Sequence[str | Path] | None, out: str | Path, cfg: StudyConfig = StudyConfig(), *, readers: str | Path | None = None,
    progress: bool = True, taxonomy: Taxonomy | None = None,
) -> Path:
    """Run the whole study and write ``out/report.html`` and ``out/metrics.json``; returns the report's path."""
    from dermlens.study.analysis import analyse_study
    from dermlens.study.report import write_report

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    taxonomy = taxonomy or default_taxonomy()
    timings: dict[str, float] = {}
    if data is None or (isinstance(data, (list, tuple)) and not data):
        from dermlens.data.synthetic import make_synthetic_dataset

        data = make_synthetic_dataset(out / "synthetic-data", n_per_class=80, size=128, seed=0)
        source, synthetic = "embedded SYNTHETIC dataset (generated by dermlens; not real patients)", True
    else:
        source, synthetic = (" + ".join(map(str, data)) if isinstance(data, (list, tuple)) else str(data)), False
    records = load_study_records(data)
    pred_dir = out / PREDICTIONS
    pred_dir.mkdir(parents=True, exist_ok=True)

    # 1. Decode everything once (fast mode: while computing the frozen features).
    t0 = time.time()
    features, cached = None, False
    if cfg.mode == "fast":
        features, ok, errors, cached = compute_features(records, cfg, out / "cache", progress)
        timings["features_seconds"] = time.time() - t0
    else:
        ok, errors = check_images(records, progress)
    usable = [r for r, good in zip(records, ok) if good]
    usable_index = np.flatnonzero(ok)
    if len({r.group for r in usable}) < cfg.folds:
        raise ValueError(f"{source}: {len({r.group for r in usable})} groups, fewer than --folds {cfg.folds}")

    if cfg.max_class_size is None:
        cfg = replace(cfg, max_class_size=esteva_max_class_size(len(usable)))
    synthetic = synthetic or all(r.modality == "synthetic" for r in usable)

    # 2. Folds over the usable images (indices below are into ``records``).
    local_folds = make_folds(usable, cfg.folds, cfg.val_fraction, cfg.seed)
    folds = [{k: (v if k == "fold" else [int(usable_index[i]) for i in v]) for k, v in f.items()} for f in local_folds]
    fold_of = np.full(len(records), -1)
    for f in folds:
        fold_of[f["test"]] = f["fold"]
    write_records(pred_dir / RECORDS_FILE, records, fold_of, ok)
    nodes = [r.node for r in records]

    # 3. Per fold and label space: train, then predict the fold's test and validation images.
    t0 = time.time()
    classes_per_space: dict[str, list[list[dict]]] = {s: [] for s in cfg.spaces}
    fold_seconds: dict[str, list[float]] = {s: [] for s in cfg.spaces}
    chosen_l2: dict[str, list[float | None]] = {s: [] for s in cfg.spaces}
    model_dir = None
    jobs = [(f, s) for f in folds for s in cfg.spaces]
    for f, space in tqdm(jobs, desc=f"{cfg.folds}-fold study ({cfg.mode})", unit="head" if cfg.mode == "fast" else "model", disable=not progress):
        t_job = time.time()
        train_nodes = [nodes[i] for i in f["train"]]
        if cfg.mode == "fast":
            classes = space_classes(space, taxonomy, train_nodes, cfg.max_class_size)
            assignment = ClassAssignment(taxonomy, classes)
            y_train = targets_for(assignment, train_nodes)
            y_val = targets_for(assignment, [nodes[i] for i in f["val"]])
            train_keep = y_train >= 0
            x_train = features[f["train"]][train_keep]
            x_val = features[f["val"]][y_val >= 0]
            head = train_linear_head(x_train, y_train[train_keep], x_val, y_val[y_val >= 0], len(classes), cfg,
                                     seed=cfg.seed * 100 + f["fold"])
            test_lp, val_lp = _log_probs(head, features[f["test"]]), _log_probs(head, features[f["val"]])
            chosen_l2[space].append(head.l2)
            if space == "training_classes" and f["fold"] == 0:
                model_dir = export_fast_model(out / "model", head, classes, cfg, taxonomy, val_lp,
                                              [nodes[i] for i in f["val"]], source)
        else:
            part = lambda idx: [records[i] for i in idx]  # noqa: E731
            classes, test_lp, val_lp, fold_model = _full_fold(
                space, part(f["train"]), part(f["val"]), part(f["test"]),
                out / "folds" / f"{space}-fold{f['fold']}", cfg, taxonomy, progress,
            )
            if space == "training_classes" and f["fold"] == 0:
                model_dir = fold_model
        save_fold(pred_dir, space, f["fold"], f["test"], test_lp, f["val"], val_lp)
        classes_per_space[space].append([c.to_dict() for c in classes])
        fold_seconds[space].append(time.time() - t_job)
    timings["training_seconds"] = time.time() - t0

    # 4. Explanation: t-SNE of the last hidden layer, saliency of fold 0's model on fold 0's test images.
    t0 = time.time()
    from dermlens.explain.tsne import save_tsne

    if features is None:
        features_for_tsne, tsne_index = _fold_features(model_dir, [records[i] for i in folds[0]["test"]], cfg, progress)
        tsne_index = np.asarray(folds[0]["test"])[tsne_index]
    else:
        features_for_tsne, tsne_index = features[usable_index], usable_index
    save_tsne(pred_dir / "tsne.npz", features_for_tsne, tsne_index, [nodes[i] for i in tsne_index],
              max_points=cfg.tsne_points, seed=cfg.seed)
    timings["tsne_seconds"] = time.time() - t0
    t0 = time.time()
    saliency_note = write_saliency_cases(out, model_dir, records, folds[0], pred_dir, cfg, taxonomy, progress)
    timings["saliency_seconds"] = time.time() - t0

    study = {
        "source": source, "data": source if not synthetic else str(data), "synthetic": synthetic, "config": asdict(cfg),
        "taxonomy_version": taxonomy.version, "taxonomy_fingerprint": taxonomy.fingerprint(),
        "n_records": len(records), "n_usable": int(ok.sum()), "decode_errors": errors,
        "folds": [{"fold": f["fold"], "n_train": len(f["train"]), "n_val": len(f["val"]), "n_test": len(f["test"]),
                   "seconds": {s: fold_seconds[s][f["fold"]] for s in cfg.spaces}} for f in folds],
        "spaces": list(cfg.spaces), "classes": classes_per_space, "head_l2": chosen_l2,
        "model_dir": str(model_dir) if model_dir else None, "saliency": saliency_note,
        "readers": str(readers) if readers else None,
        "fixed_split_ignored": any(r.split for r in records),
        "timings": timings, "features_cached": cached,
    }
    (pred_dir / STUDY_FILE).write_text(json.dumps(study, indent=2, default=str) + "\n")
    t0 = time.time()
    metrics = analyse_study(out, readers=readers, n_boot=cfg.n_boot, progress=progress)
    timings["analysis_seconds"] = time.time() - t0
    timings["total_seconds"] = time.time() - started  # figures and HTML (seconds) not included
    (pred_dir / STUDY_FILE).write_text(json.dumps(study, indent=2, default=str) + "\n")
    metrics["study"]["timings"] = timings
    return write_report(out, metrics)


def export_fast_model(directory: Path, head: torch.nn.Linear, classes, cfg: StudyConfig, taxonomy: Taxonomy,
                      val_log_probs: np.ndarray, val_nodes: list[str], source: str) -> Path:
    """The frozen backbone with fold 0's head as its classifier, saved as an ordinary dermlens model."""
    from dermlens.models import ModelConfig, create_backbone, save_model
    from dermlens.models.features import classifier_layer
    from dermlens.evaluate.operating_point import choose_operating_point

    model, _ = create_backbone(cfg.arch, len(classes), pretrained=True, weights=cfg.weights)
    layer = classifier_layer(model)
    with torch.no_grad():
        layer.weight.copy_(head.weight)
        layer.bias.copy_(head.bias)
    assignment = ClassAssignment(taxonomy, classes)
    covered = targets_for(assignment, val_nodes) >= 0
    config = ModelConfig(
        arch=cfg.arch, preprocessing=feature_preprocessing(cfg), classes=list(classes),
        taxonomy_version=taxonomy.version, taxonomy_fingerprint=taxonomy.fingerprint(),
        operating_point=choose_operating_point(taxonomy, assignment, np.exp(val_log_probs[covered]),
                                               [n for n, c in zip(val_nodes, covered) if c], 0.9),
        training={"study": "fast mode, fold 0: frozen ImageNet backbone + linear head", "data": source,
                  "config": asdict(cfg)},
    )
    save_model(directory, model.eval(), config)
    return directory


def _fold_features(model_dir: Path, records: list[Record], cfg: StudyConfig, progress: bool):
    from dermlens.models import load_model
    from dermlens.models.features import extract_features

    model, config = load_model(model_dir)
    dataset = _TolerantDataset(records, build_eval_transform(config.preprocessing), config.preprocessing.size)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    feats, oks = [], []
    with tqdm(total=len(records), desc="last hidden layer", unit="img", disable=not progress) as bar:
        for images, ok, _ in loader:
            feats.append(extract_features(model, [images], progress=bar).numpy())
            oks.append(ok.numpy())
    ok = np.concatenate(oks).astype(bool)
    return np.concatenate(feats)[ok], np.flatnonzero(ok)


def write_saliency_cases(out: Path, model_dir: Path | None, records: list[Record], fold: dict, pred_dir: Path,
                         cfg: StudyConfig, taxonomy: Taxonomy, progress: bool) -> dict:
    """Saliency overlays for correct and incorrect test cases of each training class of fold 0's model."""
    from dermlens.explain.cases import render_cases, select_cases

    if model_dir is None or cfg.saliency_per_class <= 0:
        return {"status": "skipped"}
    saved = load_fold(pred_dir, "training_classes", 0)
    from dermlens.models import read_config

    config = read_config(model_dir)
    assignment = ClassAssignment(taxonomy, config.classes)
    test_idx = saved["test_index"]
    truth = targets_for(assignment, [records[i].node for i in test_idx])
    predicted = saved["test_log_probs"].argmax(1)
    cases = select_cases(test_idx, truth, predicted, cfg.saliency_per_class, seed=cfg.seed)
    return render_cases(model_dir, records, cases, [c.node for c in config.classes], out / "saliency", progress)
