"""What recipe choices buy, measured on validation sets only (never test): the figures behind MODEL_CARD.md's
"Recipe" table. Every figure is given per validation source, because a choice that helps HAM10000 and hurts the
other clinics is not one this project wants.

    python benchmarks/recipe_choices.py --model src/dermlens/weights         # the fine-tuned model: TTA, input size
    python benchmarks/recipe_choices.py --frozen                              # frozen ImageNet features: sources,
                                                                              # colour constancy, input size
    python benchmarks/recipe_choices.py --speed                               # training step: fp32 vs bf16
    python benchmarks/recipe_choices.py --augment-cost                        # ms per photo of each augmentation
    python benchmarks/recipe_choices.py --ensemble runs/a/model runs/b/model  # each model, then their mean
    python benchmarks/recipe_choices.py --changes runs/a/model runs/b/model   # each model on changed photos
    python benchmarks/recipe_choices.py --ham-recall OLD_HAM_ONLY src/dermlens/weights  # HAM10000 recall per class

Validation sources: HAM10000 `val` (7-class balanced accuracy, melanoma vs nevus AUC), ISIC 2017 `val` (melanoma
AUC, seborrheic keratosis AUC), DermNet `val` (3-way accuracy, malignant vs benign AUC among neoplastic photos,
malignant vs non-neoplastic AUC: the rashes a clinical triage must not refer).
``--changes`` also scores the validation photos changed in everyday ways (JPEG quality 30, half the resolution,
Gaussian blur sigma 1.5 px; ``dermlens.data.corruptions``): the same figures, the share of refer/reassure answers
that change against the unchanged photo (at the model's operating point for the photo's modality) and the mean
change of P(malignant): what a robustness augmentation is for.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T

from dermlens.data.corruptions import everyday_change
from dermlens.data.datasets import load_pooled
from dermlens.data.splits import pooled_split
from dermlens.data.torch_dataset import RecordDataset
from dermlens.data.transforms import build_eval_transform, build_train_transform
from dermlens.data.transforms import Preprocessing
from dermlens.evaluate.operating_point import choose_operating_point
from dermlens.models import create_backbone
from dermlens.models.inference import predict_loader
from dermlens.models.saved import load_weights
from dermlens.models.features import extract_features
from dermlens.predict import Predictor
from dermlens.taxonomy import ClassAssignment, default_taxonomy, partition, tree_sum_matrix
from dermlens.taxonomy.partition import esteva_max_class_size

DATA_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SOURCES = ("ham10000", "isic2017", "dermnet")


def under(taxonomy, nodes, ancestor) -> np.ndarray:
    return np.array([n == ancestor or ancestor in taxonomy.ancestors(n) for n in nodes])


def source_figures(taxonomy, node_ids, node_probs, records) -> dict[str, float]:
    """The validation figures of each source present in ``records``."""
    out: dict[str, float] = {}
    p = lambda node, mask: node_probs[mask, node_ids.index(node)]  # noqa: E731
    for source in SOURCES:
        mask = np.array([r.source == source for r in records])
        if not mask.any():
            continue
        nodes = [r.node for r, m in zip(records, mask) if m]
        if source == "ham10000":
            classes = sorted(set(nodes))
            truth = np.array([classes.index(n) for n in nodes])
            predicted = node_probs[mask][:, [node_ids.index(c) for c in classes]].argmax(1)
            out["HAM bacc7"] = float(np.mean([np.mean(predicted[truth == c] == c) for c in range(len(classes))]))
            mel, nev = under(taxonomy, nodes, "melanoma"), under(taxonomy, nodes, "melanocytic_nevus")
            out["HAM mel/nv AUC"] = roc_auc_score(mel[mel | nev], p("melanoma", mask)[mel | nev])
        elif source == "isic2017":
            out["ISIC mel AUC"] = roc_auc_score(under(taxonomy, nodes, "melanoma"), p("melanoma", mask))
            out["ISIC SK AUC"] = roc_auc_score(under(taxonomy, nodes, "seborrheic_keratosis"), p("benign_keratosis", mask))
        else:
            roots = taxonomy.level_nodes(1)
            truth = np.array([roots.index(taxonomy.ancestor_at_level(n, 1)) for n in nodes])
            predicted = node_probs[mask][:, [node_ids.index(n) for n in roots]].argmax(1)
            out["DermNet 3-way"] = float(np.mean(predicted == truth))
            neo = ~under(taxonomy, nodes, "non_neoplastic")
            out["DermNet mal/ben AUC"] = roc_auc_score(under(taxonomy, nodes, "malignant")[neo], p("malignant", mask)[neo])
            malignant = under(taxonomy, nodes, "malignant")
            out["DermNet mal/non-neo AUC"] = roc_auc_score(malignant[malignant | ~neo], p("malignant", mask)[malignant | ~neo])
    return out


def print_row(name: str, figures: dict[str, float]) -> None:
    print(f"{name:<44}  " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


# ------------------------------------------------------------------------------------------- the fine-tuned model
def fine_tuned(model_dir: Path, parts: dict, ttas=(1, 2, 4, 8), sizes=(160, 224, 256)) -> None:
    predictor = Predictor(model_dir, engine="torch")  # other input sizes: the ONNX graph is fixed at the trained size
    taxonomy, val = predictor.taxonomy, parts["val"]
    trained_at = predictor.config.preprocessing.size
    for tta in ttas:
        predictor.tta = tta
        probs = predictor.node_probabilities(predictor.predict_records(val, progress=False))
        print_row(f"fine-tuned, {trained_at}px, TTA {tta}", source_figures(taxonomy, predictor.node_ids, probs, val))
    predictor.tta = 1
    for size in sizes:
        predictor.transform = build_eval_transform(replace(predictor.config.preprocessing, size=size))
        probs = predictor.node_probabilities(predictor.predict_records(val, progress=False))
        print_row(f"fine-tuned at {trained_at}px, evaluated at {size}px", source_figures(taxonomy, predictor.node_ids, probs, val))


def ensemble(model_dirs: list[Path], parts: dict) -> None:
    """Each model alone, then the mean of their node probabilities: does a second network pay for its cost?"""
    val, node_probs = parts["val"], []
    for model_dir in model_dirs:
        predictor = Predictor(model_dir, engine="torch")
        started = time.time()
        node_probs.append(predictor.node_probabilities(predictor.predict_records(val, progress=False)))
        seconds = time.time() - started
        size = predictor.config.preprocessing.size
        print_row(f"{model_dir} ({size}px, {1000 * seconds / len(val):.0f} ms/img)",
                  source_figures(predictor.taxonomy, predictor.node_ids, node_probs[-1], val))
    print_row(f"mean of the {len(model_dirs)}", source_figures(predictor.taxonomy, predictor.node_ids, np.mean(node_probs, 0), val))


CHANGES = ("jpeg_30", "half_resolution", "blur_1.5")  # the three changes of issue 30 that cost most


def referral_thresholds(predictor, class_probs, records, sensitivity: float = 0.9) -> np.ndarray:
    """Each photo's referral threshold: the one for its modality that keeps ``sensitivity`` of the malignant
    unchanged validation photos, chosen here as training chooses it, so that a model saved mid-run (with no
    operating points yet) is scored like a finished one."""
    assignment = ClassAssignment(predictor.taxonomy, predictor.config.classes)
    thresholds = np.zeros(len(records))
    for modality in {r.modality for r in records}:
        mask = np.array([r.modality == modality for r in records])
        point = choose_operating_point(predictor.taxonomy, assignment, class_probs[mask],
                                       [r.node for r, m in zip(records, mask) if m], sensitivity)
        thresholds[mask] = point.threshold
    return thresholds


def changed_photos(model_dirs: list[Path], parts: dict, changes=CHANGES) -> None:
    """Each model on the validation photos as they are, then changed: figures, answers changed, P(malignant) moved."""
    val = parts["val"]
    for model_dir in model_dirs:
        predictor = Predictor(model_dir, engine="torch")
        base_transform, column = predictor.transform, predictor.node_ids.index("malignant")
        reference = None
        for change in ("none", *changes):
            predictor.transform = base_transform if change == "none" else T.Compose([everyday_change(change), base_transform])
            class_probs = predictor.predict_records(val, progress=False)
            probs = predictor.node_probabilities(class_probs)
            figures = source_figures(predictor.taxonomy, predictor.node_ids, probs, val)
            malignant = probs[:, column]
            if reference is None:
                reference, thresholds = malignant, referral_thresholds(predictor, class_probs, val)
            else:
                figures["answers changed"] = float(np.mean((malignant >= thresholds) != (reference >= thresholds)))
                figures["mean |dP(mal)|"] = float(np.mean(np.abs(malignant - reference)))
            print_row(f"{model_dir}, {change}", figures)


def ham_recall(model_dirs: list[Path], parts: dict) -> None:
    """Recall of each of HAM10000's 7 diagnoses on its validation split: where a model's 7-class balanced accuracy
    goes. The weights are read directly, so a model made for an earlier taxonomy (the HAM10000-only one, whose 7
    classes are nodes of today's tree too) loads as well; a pooled model's classes are summed up to the 7 nodes."""
    taxonomy = default_taxonomy()
    val = [r for r in parts["val"] if r.source == "ham10000"]
    nodes = sorted({r.node for r in val})
    truth = np.array([nodes.index(r.node) for r in val])
    print(f"{'HAM10000 val recall':<44}  " + "  ".join(f"{n} (n={np.sum(truth == i)})" for i, n in enumerate(nodes)))
    for model_dir in model_dirs:
        weights, config = load_weights(model_dir)
        class_nodes = [c["node"] for c in config["classes"]]
        model, _ = create_backbone(config["arch"], len(class_nodes), pretrained=False)
        model.load_state_dict(weights)
        loader = DataLoader(RecordDataset(val, build_eval_transform(Preprocessing.from_dict(config["preprocessing"]))),
                            batch_size=32, num_workers=2)
        probs = predict_loader(model.eval(), loader).numpy()
        at_or_below = np.array([[c == n or n in taxonomy.ancestors(c) for c in class_nodes] for n in nodes], float)
        predicted = (probs @ at_or_below.T).argmax(1)
        recall = {n: float(np.mean(predicted[truth == i] == i)) for i, n in enumerate(nodes)}
        print_row(f"{model_dir} ({len(class_nodes)} classes)", {**recall, "bacc7": float(np.mean(list(recall.values())))})


# ------------------------------------------------------------------------------------------- frozen features
def frozen(parts: dict, per_source: int, seed: int) -> None:
    """A linear head on frozen ImageNet features, over the pooled training classes: cheap enough to vary choices."""
    taxonomy = default_taxonomy()
    rng = np.random.default_rng(seed)
    train = []
    for source in SOURCES:  # a fixed subsample of each source's training images, the same for every choice
        pool = [r for r in parts["train"] if r.source == source]
        train += [pool[i] for i in sorted(rng.choice(len(pool), min(per_source, len(pool)), replace=False))]
    val = parts["val"]
    model, pre = create_backbone("efficientnet_lite0", num_classes=2, pretrained=True)
    model = model.to(memory_format=torch.channels_last).eval()

    def features(records, size, cc):
        transform = build_eval_transform(replace(pre, size=size, color_constancy="shades_of_gray" if cc else None))
        loader = DataLoader(RecordDataset(records, transform), batch_size=64, num_workers=2)
        return extract_features(model, loader).numpy()

    def head(x_train, train_records, x_val):
        classes = partition(taxonomy, {n: sum(r.node == n for r in train_records) for n in {r.node for r in train_records}},
                            esteva_max_class_size(len(train_records)))
        assignment = ClassAssignment(taxonomy, classes)
        y = [assignment.class_index(r.node) for r in train_records]
        scaler = StandardScaler().fit(x_train)
        fit = LogisticRegression(C=0.05, max_iter=300, class_weight="balanced").fit(scaler.transform(x_train), y)
        class_probs = np.zeros((len(x_val), len(classes)))
        class_probs[:, fit.classes_] = fit.predict_proba(scaler.transform(x_val))
        return class_probs @ tree_sum_matrix(taxonomy, classes).T

    node_ids = list(taxonomy)
    for size, cc in ((192, True), (192, False), (160, True), (224, True)):
        started = time.time()
        x_train, x_val = features(train, size, cc), features(val, size, cc)
        label = f"{size}px, colour constancy {'on' if cc else 'off'}"
        print_row(f"frozen, pooled train, {label}", source_figures(taxonomy, node_ids, head(x_train, train, x_val), val))
        if (size, cc) == (192, True):  # which sources the head learns from: one dermoscopy source, or the pool
            ham = np.array([r.source == "ham10000" for r in train])
            ham_records = [r for r, m in zip(train, ham) if m]
            print_row(f"frozen, HAM10000 train only, {label}",
                      source_figures(taxonomy, node_ids, head(x_train[ham], ham_records, x_val), val))
        print(f"   ({time.time() - started:.0f} s)", flush=True)


# ------------------------------------------------------------------------------------------- training speed
def speed(size: int = 192, batch: int = 32, steps: int = 6) -> None:
    model, _ = create_backbone("efficientnet_lite0", num_classes=252, pretrained=True)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 252, (batch,))
    for precision in ("fp32", "bf16", "fp32", "bf16"):
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        print(f"training step, {precision}, {size}px, batch {batch}: {batch / np.mean(times[2:]):.1f} img/s "
              f"({torch.get_num_threads()} threads)", flush=True)


def augment_cost(parts: dict, size: int = 224, per_source: int = 100, seed: int = 0) -> None:
    """Milliseconds per training photo of each augmentation (decoding included), on the same photos of each source:
    what an augmentation adds to the loader workers' share of the cores."""
    from dermlens.data.io import load_image

    rng = np.random.default_rng(seed)
    photos = []
    for source in SOURCES:
        pool = [r for r in parts["train"] if r.source == source]
        photos += [pool[i].path for i in rng.choice(len(pool), min(per_source, len(pool)), replace=False)]
    pre = replace(create_backbone("efficientnet_lite0", num_classes=2, pretrained=False)[1], size=size)
    for strength in ("paper", "robust", "paper", "robust"):  # twice each: the second pass has warm file caches
        transform, started = build_train_transform(pre, strength), time.perf_counter()
        torch.manual_seed(seed)
        for path in photos:
            transform(load_image(path))
        print(f"augment {strength}, {size}px: {1000 * (time.perf_counter() - started) / len(photos):.1f} ms per photo "
              f"({len(photos)} training photos, one process)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--ensemble", type=Path, nargs="+", default=None, help="Model folders: each alone, then their mean.")
    parser.add_argument("--changes", type=Path, nargs="+", default=None,
                        help="Model folders: each on the validation photos unchanged, JPEG 30, half resolution, blur 1.5.")
    parser.add_argument("--ham-recall", type=Path, nargs="+", default=None,
                        help="Model folders (earlier taxonomies too): recall of each HAM10000 diagnosis on its val split.")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--augment-cost", action="store_true", help="ms per photo of the paper and robust augmentations.")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--per-source", type=int, default=2000, help="Frozen mode: training images per source.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ttas", default="1,2,4,8", help="Fine-tuned model: TTA views to compare.")
    parser.add_argument("--sizes", default="160,224,256", help="Fine-tuned model: other input sizes to evaluate at.")
    args = parser.parse_args(argv)
    if args.speed:
        speed()
    if args.model or args.frozen or args.ensemble or args.changes or args.ham_recall or args.augment_cost:
        parts = pooled_split(load_pooled([args.data_root / s for s in SOURCES]))
        if args.model:
            fine_tuned(args.model, parts, [int(t) for t in args.ttas.split(",")], [int(s) for s in args.sizes.split(",") if s])
        if args.ensemble:
            ensemble(args.ensemble, parts)
        if args.augment_cost:
            augment_cost(parts)
        if args.ham_recall:
            ham_recall(args.ham_recall, parts)
        if args.changes:
            changed_photos(args.changes, parts)
        if args.frozen:
            frozen(parts, args.per_source, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
