"""Inference speed and int8 accuracy: torch eager fp32, torch bf16 autocast, ONNX Runtime fp32 and int8.

    python benchmarks/inference.py [--model DIR] [--data ../shared/data/ham10000] [--out runs/bench-inference]

Prints, per engine: batch-1 latency (median and p95 ms) and batch-32 throughput (images/s) at 224x224, the model's
FLOPs per image, and the achieved FLOP/s as a fraction of this machine's fp32 matrix-multiply rate (measured in the
same run); then end-to-end ``dermlens predict`` over a folder of 2,000 generated JPEGs (decoding included), with
each engine and with the default ``--engine auto``. All of
it under glibc malloc and under jemalloc (the script runs itself in a child process per allocator, with
``LD_PRELOAD`` for jemalloc). With a trained model and HAM10000 it also prints the melanoma-vs-nevus AUC on ``val``
for fp32, int8, bf16 and 8-view TTA, and draws their ROC curves (``<out>/int8_vs_fp32_roc.png``).

Without ``--model`` the bundled model is used; without that, an ImageNet-initialised EfficientNet-Lite0 with an
untrained head (speed does not depend on the head's weights; the accuracy part is then skipped).
ONNX exports go to ``<out>/cache`` (DERMLENS_CACHE), never to the user's cache.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

JEMALLOC_CANDIDATES = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"]
# "jemalloc" is what the `dermlens` command sets up (src/dermlens/runtime.py: purging off); "jemalloc-default" is
# plain LD_PRELOAD with jemalloc's default decay; "glibc" is the default allocator with its default tunables.
ALLOCATORS = {
    "glibc": {},
    "jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0"},
    "jemalloc-default": {},
}
ENGINES = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")]
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# Preparation (parent process)
# ----------------------------------------------------------------------------------------------------------------


def benchmark_model(out: Path, size: int) -> Path:
    """An EfficientNet-Lite0 with ImageNet weights and a 7-class head, saved like a trained model."""
    from collections import Counter

    from dermlens.data.transforms import Preprocessing
    from dermlens.models import ModelConfig, create_backbone, save_model
    from dermlens.taxonomy import default_taxonomy, partition

    if (out / "benchmark-model" / "config.json").is_file():
        return out / "benchmark-model"
    import torch

    torch.manual_seed(0)
    taxonomy = default_taxonomy()
    counts = Counter({"melanocytic_nevus": 6705, "melanoma": 1113, "benign_keratosis": 1099, "basal_cell_carcinoma": 514,
                      "keratinocyte_intraepithelial_neoplasia": 327, "vascular_lesion": 142, "dermatofibroma": 115})
    classes = partition(taxonomy, counts, 100)
    model, _ = create_backbone("efficientnet_lite0", len(classes), pretrained=True)
    config = ModelConfig(arch="efficientnet_lite0", preprocessing=Preprocessing(size=size), classes=list(classes),
                         taxonomy_version=taxonomy.version, taxonomy_fingerprint=taxonomy.fingerprint(),
                         training={"note": "benchmark stand-in: ImageNet backbone, untrained head"})
    return save_model(out / "benchmark-model", model.eval(), config)


def make_jpegs(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """``count`` distinct JPEGs (dermoscopy-like, ``size``), cut and varied from a few synthetic lesions."""
    from PIL import Image, ImageEnhance

    from dermlens.data.synthetic import make_synthetic_dataset

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) >= count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    labels = make_synthetic_dataset(folder.parent / "jpeg-sources", n_per_class=4, size=max(size), seed=3)
    sources = [Image.open(p).convert("RGB") for p in sorted((labels.parent / "images").rglob("*.png"))]
    rng = random.Random(0)
    for k in range(count):
        image = rng.choice(sources).rotate(rng.choice([0, 90, 180, 270]))
        left, top = rng.randint(0, max(size) // 8), rng.randint(0, max(size) // 8)
        image = image.crop((left, top, left + size[0], top + size[1])).resize(size)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
        image.save(folder / f"img{k:05d}.jpg", quality=90)
    return folder


def prepare_exports(model_dir: Path, calibration: Path | None, jpegs: Path) -> None:
    from dermlens.predict.export import export_model
    from dermlens.deploy.onnx_export import find_export

    if find_export(model_dir, "int8") is None:
        started = time.time()
        export_model(model_dir, int8=True, calibration_data=calibration or jpegs, calibration_size=200)
        print(f"exported fp32 + int8 (calibrated on {calibration or jpegs}) in {time.time() - started:.0f} s", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------
# Measurements (child process, one per allocator)
# ----------------------------------------------------------------------------------------------------------------


def matmul_rate(threads: int, n: int = 2048, repeats: int = 15) -> dict[str, float]:
    """Best fp32 GEMM rate in FLOP/s (2 n^3 per product) with ``threads`` threads, by PyTorch (MKL) and by ONNX
    Runtime (MLAS); the machine's rate is the better of the two."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    def best_of(fn) -> float:
        for _ in range(3):
            fn()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        return 2 * n**3 / best

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    rates = {"torch": best_of(lambda: a @ b)}
    spec = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", spec[:2], spec[2:])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                   options, providers=["CPUExecutionProvider"])
    feeds = {"a": a.numpy(), "b": b.numpy()}
    rates["onnxruntime"] = best_of(lambda: session.run(None, feeds))
    rates["best"] = max(rates.values())
    return rates


def flops_per_image(model, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def time_calls(fn, warmup: int, seconds: float, max_calls: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_calls and (time.perf_counter() < deadline or len(times) < 5):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def measure_engines(model_dir: Path, size: int, threads: int, quick: bool) -> dict:
    import torch

    from dermlens.predict import Predictor

    torch.set_num_threads(threads)
    results = {}
    one = torch.randn(1, 3, size, size)
    batch = torch.randn(32, 3, size, size)
    for engine, precision in ENGINES:
        predictor = Predictor(model_dir, engine=engine, precision=precision, threads=threads)
        run = predictor.engine.class_probabilities
        latency = time_calls(lambda: run(one), warmup=10 if quick else 30, seconds=2 if quick else 8,
                             max_calls=50 if quick else 400)
        batched = time_calls(lambda: run(batch), warmup=1 if quick else 3, seconds=2 if quick else 10,
                             max_calls=5 if quick else 60)
        latency_ms = sorted(t * 1000 for t in latency)
        results[f"{engine} {precision}"] = {
            "latency_median_ms": statistics.median(latency_ms),
            "latency_p95_ms": latency_ms[min(len(latency_ms) - 1, int(0.95 * len(latency_ms)))],
            "batch32_images_per_s": 32 / statistics.median(batched),
        }
    return results


def measure_end_to_end(model_dir: Path, jpegs: Path, out: Path, workers: int, quick: bool) -> dict:
    """Wall-clock time of the real command (process start, model load, decoding, writing) over the folder, and of
    the same command on one image (the fixed start-up cost), whose difference gives the steady rate."""
    results = {}
    files = sorted(jpegs.glob("*.jpg"))

    def run(inputs: list[Path], target: Path, engine: str, precision: str) -> float:
        command = [sys.executable, "-m", "dermlens", "predict", *map(str, inputs), "--model", str(model_dir),
                   "--out", str(target), "--engine", engine, "--precision", precision, "--workers", str(workers),
                   "--batch-size", "32", "--no-progress", "--overwrite"]  # a re-run replaces its own outputs
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:8])} ... failed:\n{done.stderr[-2000:]}")
        return time.perf_counter() - started

    # auto is the default (onnx fp32 when onnxruntime is installed): measured to show that the default is the fast path
    for engine, precision in [("auto", "fp32"), ("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]:
        startup = run(files[:1], out / f"e2e-{engine}-{precision}-one", engine, precision)
        wall = run([jpegs], out / f"e2e-{engine}-{precision}", engine, precision)
        results[f"{engine} {precision}"] = {"images": len(files), "seconds": wall, "images_per_s": len(files) / wall,
                                            "startup_seconds": startup,
                                            "steady_images_per_s": (len(files) - 1) / max(wall - startup, 1e-9)}
    return results


def child(args) -> None:
    import torch

    from dermlens.models import load_model, read_config

    config = read_config(args.model)
    report = {
        "allocator": args.allocator,
        "threads": args.threads,
        "load_average_before": os.getloadavg()[0],
        "matmul": matmul_rate(args.threads, n=512 if args.quick else 2048),
        "size": config.preprocessing.size,
        "engines": measure_engines(args.model, config.preprocessing.size, args.threads, args.quick),
    }
    torch.set_num_threads(args.threads)
    if args.jpegs:
        report["end_to_end"] = measure_end_to_end(args.model, args.jpegs, args.out / report["allocator"], args.workers, args.quick)
    report["load_average_after"] = os.getloadavg()[0]
    # Counted last, after the timings: FlopCounterMode intercepts every operator while it is active.
    report["flops_per_image"] = flops_per_image(load_model(args.model)[0], config.preprocessing.size)
    print(json.dumps(report))


# ----------------------------------------------------------------------------------------------------------------
# Accuracy: int8 vs fp32 (and bf16, TTA) on HAM10000 val
# ----------------------------------------------------------------------------------------------------------------


def accuracy(model_dir: Path, data: Path, out: Path, threads: int, quick: bool) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve

    from dermlens.data.datasets import load_records
    from dermlens.predict import Predictor

    torch.set_num_threads(threads)
    records = [r for r in load_records(data) if r.split == "val" and r.node in ("melanoma", "melanocytic_nevus")]
    if quick:
        records = records[:: max(1, len(records) // 120)]
    truth = np.array([r.node == "melanoma" for r in records])
    # torch fp32 is left out: ONNX fp32 gives the same probabilities within 1e-4 (tests/deploy), in a fraction of the time.
    variants = {"onnx fp32": dict(engine="onnx"), "onnx int8": dict(engine="onnx", precision="int8"),
                "torch bf16": dict(precision="bf16"), "onnx fp32 tta8": dict(engine="onnx", tta=8),
                "onnx int8 tta8": dict(engine="onnx", precision="int8", tta=8)}
    scores, results = {}, {}
    for name, kwargs in variants.items():
        predictor = Predictor(model_dir, threads=threads, **kwargs)
        started = time.time()
        node = predictor.node_probabilities(predictor.predict_records(records, num_workers=2, progress=False))
        melanoma = node[:, predictor.node_ids.index("melanoma")]
        scores[name] = melanoma
        results[name] = {"auc": float(roc_auc_score(truth, melanoma)), "seconds": time.time() - started}
    reference = scores["onnx fp32"]
    for name in results:
        results[name]["max_abs_diff_vs_fp32"] = float(np.abs(scores[name] - reference).max())
    results["_images"] = {"melanoma": int(truth.sum()), "nevus": int((~truth).sum())}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name in ("onnx fp32", "onnx int8", "torch bf16", "onnx fp32 tta8"):
        fpr, tpr, _ = roc_curve(truth, scores[name])
        ax.plot(fpr, tpr, label=f"{name}: AUC {results[name]['auc']:.4f}", lw=1.2)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity",
           title=f"Melanoma vs nevus, HAM10000 val\n({truth.sum()} melanoma, {(~truth).sum()} nevus images)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "int8_vs_fp32_roc.png", dpi=120)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def print_report(reports: list[dict], acc: dict | None) -> None:
    if reports:
        first = reports[0]
        flops = first["flops_per_image"]
        print(f"\nmodel FLOPs per image at {first['size']}x{first['size']}: {flops / 1e9:.3f} GFLOP "
              f"(torch.utils.flop_counter; 2 FLOPs per multiply-add)")
    for report in reports:
        peak = report["matmul"]["best"]
        print(f"\n== {report['allocator']} malloc, {report['threads']} threads; fp32 matmul rate measured now: "
              f"{peak / 1e9:.0f} GFLOP/s (PyTorch/MKL {report['matmul']['torch'] / 1e9:.0f}, ONNX Runtime/MLAS "
              f"{report['matmul']['onnxruntime'] / 1e9:.0f}); load average {report['load_average_before']:.1f} before, "
              f"{report['load_average_after']:.1f} after ==")
        print(f"{'engine':<12} {'b1 median ms':>13} {'b1 p95 ms':>10} {'b1 % of peak':>13} {'b32 img/s':>10} {'b32 GFLOP/s':>12} {'b32 % of peak':>14}")
        for name, r in report["engines"].items():
            b1_rate = flops / (r["latency_median_ms"] / 1000)
            b32_rate = flops * r["batch32_images_per_s"]
            print(f"{name:<12} {r['latency_median_ms']:>13.2f} {r['latency_p95_ms']:>10.2f} {100 * b1_rate / peak:>12.1f}% "
                  f"{r['batch32_images_per_s']:>10.0f} {b32_rate / 1e9:>12.1f} {100 * b32_rate / peak:>13.1f}%")
        for name, r in report.get("end_to_end", {}).items():
            print(f"end-to-end `dermlens predict` {name}: {r['images']} JPEGs in {r['seconds']:.1f} s = "
                  f"{r['images_per_s']:.0f} images/s (process start, model load, decoding and writing included; "
                  f"after the {r['startup_seconds']:.1f} s start-up: {r['steady_images_per_s']:.0f} images/s)")
    if acc:
        n = acc.pop("_images")
        print(f"\nmelanoma vs nevus on HAM10000 val ({n['melanoma']} melanoma, {n['nevus']} nevus), AUC of P(melanoma):")
        for name, r in acc.items():
            print(f"  {name:<16} AUC {r['auc']:.4f}   max |P - P_onnx_fp32| {r['max_abs_diff_vs_fp32']:.4f}   ({r['seconds']:.0f} s)")
        acc["_images"] = n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model, else an untrained-head stand-in)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ham10000",
                        help="HAM10000 (labels.csv with a val split) for the AUC figure; calibration uses its train split")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-inference")
    parser.add_argument("--size", type=int, default=224, help="input size of the stand-in model")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=2, help="decoding workers of the end-to-end run")
    parser.add_argument("--jpegs", type=int, default=2000, help="images in the end-to-end folder (0: skip)")
    parser.add_argument("--jpeg-size", default="600x450", help="WxH of the generated JPEGs")
    parser.add_argument("--allocators", default="glibc,jemalloc,jemalloc-default", help=f"from {', '.join(ALLOCATORS)}")
    parser.add_argument("--allocator", default="glibc", help=argparse.SUPPRESS)
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--quick", action="store_true", help="few repetitions (to check the script, not to measure)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jpegs-dir", dest="jpegs_dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out = args.out.resolve()
    os.environ.setdefault("DERMLENS_CACHE", str(args.out / "cache"))

    if args.child:
        args.jpegs = args.jpegs_dir
        child(args)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from dermlens.predict import NoModelError, bundled_model_dir

        try:
            args.model = bundled_model_dir()
        except NoModelError:
            args.model = benchmark_model(args.out, args.size)
            print(f"no bundled model: using an untrained-head stand-in at {args.model}", file=sys.stderr)
    from dermlens.models import read_config

    accuracy_model = args.model
    if read_config(args.model).preprocessing.size != args.size:  # speed is measured at --size (224 by default)
        args.model = benchmark_model(args.out, args.size)
        print(f"{accuracy_model} takes {read_config(accuracy_model).preprocessing.size} px: speed is measured on the same "
              f"architecture at {args.size} px ({args.model}), accuracy on {accuracy_model}", file=sys.stderr)
    width, height = (int(v) for v in args.jpeg_size.split("x"))
    jpegs = make_jpegs(args.out / f"jpegs-{args.jpegs}-{args.jpeg_size}", args.jpegs, (width, height)) if args.jpegs else None
    has_data = (args.data / "labels.csv").is_file()
    prepare_exports(args.model, args.data if has_data else None, jpegs or make_jpegs(args.out / "jpegs-calib", 200, (width, height)))

    reports = []
    jemalloc = next((p for p in JEMALLOC_CANDIDATES if Path(p).is_file()), None)
    for allocator in [a for a in args.allocators.split(",") if a not in ("", "none")]:  # "none": accuracy only
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")}
        env["DERMLENS_NO_JEMALLOC"] = "1"  # this script chooses the allocator, not dermlens.runtime
        if allocator.startswith("jemalloc"):
            if jemalloc is None:
                print("jemalloc not installed (apt-get install libjemalloc2): skipped", file=sys.stderr)
                continue
            env["LD_PRELOAD"] = jemalloc
        env.update(ALLOCATORS[allocator])
        command = [sys.executable, __file__, "--child", "--allocator", allocator, "--model", str(args.model), "--out", str(args.out),
                   "--threads", str(args.threads), "--workers", str(args.workers)]
        command += ["--jpegs-dir", str(jpegs)] if jpegs else []
        command += ["--quick"] if args.quick else []
        print(f"measuring under {allocator} malloc ...", file=sys.stderr)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))

    acc = None
    trained = "untrained head" not in json.dumps(read_config(accuracy_model).training)
    if not args.no_accuracy and has_data and trained:
        print("measuring int8 vs fp32 accuracy ...", file=sys.stderr)
        if accuracy_model != args.model:
            prepare_exports(accuracy_model, args.data, jpegs)
        acc = accuracy(accuracy_model, args.data, args.out, args.threads, args.quick)
    elif not args.no_accuracy:
        print("accuracy skipped: needs a trained model (--model or the bundled one) and HAM10000 (--data)", file=sys.stderr)
    print_report(reports, acc)
    (args.out / "results.json").write_text(json.dumps({"speed": reports, "accuracy": acc, "speed_model": str(args.model),
                                                       "accuracy_model": str(accuracy_model)}, indent=2) + "\n")
    print(f"\nresults: {args.out / 'results.json'}" + (f", ROC figure: {args.out / 'int8_vs_fp32_roc.png'}" if acc else ""))


if __name__ == "__main__":
    main()
