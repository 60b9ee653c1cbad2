"""`dermlens predict --backend ray` against the local path: throughput, start-up, answers and memory.

    python benchmarks/ray_predict.py [--photos 2000] [--big 20000] [--model M] [--out runs/bench-ray]

1. Throughput on ``--photos`` photos (HAM10000's images read in place when ../shared/data is there, else generated
   600x450 JPEGs): the real command, local (2 decoding workers, ONNX Runtime fp32) and on a local Ray with 1 actor
   x 2 CPUs and 2 actors x 1 CPU. Each is also run on one photo: that wall time is its start-up (process, model,
   Ray and actors), and (N - 1) / (wall - start-up) its steady rate. Ray's own summary line splits Ray's start from
   the pipeline too.
2. Answers: the local CSV against Ray's CSV cell for cell, and Ray's Parquet probabilities (float64) from 1 and from
   2 actors against each other and against an in-process Predictor on the first 200 photos.
3. Memory: a ``--big``-photo Ray run (HAM10000 listed twice through symbolic links under --out when it is short of
   photos: distinct paths, no copies), sampling every process of the run (driver, Ray's daemons, actors) each
   second: the peak of the summed RSS and PSS, and the PSS in each quarter of the run (flat = streaming).

The machine may be shared: ``uptime`` is printed before and after.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HAM = HERE.parent.parent / "shared" / "data" / "ham10000" / "images"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    return f"{os.cpu_count()} CPUs"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def photo_list(out: Path, count: int) -> list[Path]:
    """``count`` photo paths: HAM10000 in place (through links when it holds fewer), else generated JPEGs."""
    if HAM.is_dir():
        source = sorted(HAM.glob("*.jpg"))
    else:
        sys.path.insert(0, str(HERE))
        from inference import make_jpegs  # the generated photos of the inference benchmark

        source = sorted(make_jpegs(out / "jpegs-2000", 2000, (600, 450)).glob("*.jpg"))
    paths = source[:count]
    copy = 1
    while len(paths) < count:  # the same photos again under other paths (symbolic links, not copies)
        folder = out / f"links-{copy}"
        folder.mkdir(parents=True, exist_ok=True)
        for photo in source[: count - len(paths)]:
            link = folder / photo.name
            if not link.is_symlink():
                link.symlink_to(photo)
            paths.append(link)
        copy += 1
    return paths


def write_list(path: Path, photos: list[Path]) -> Path:
    path.write_text("image\n" + "".join(f"{p}\n" for p in photos))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Memory of a process tree
# ---------------------------------------------------------------------------------------------------------------


def tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB; PSS shares each shared page among the processes that map it."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Rss"].split()[0]) / 1024, int(fields["Pss"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


class MemorySampler(threading.Thread):
    """Summed RSS and PSS of a process tree every ``every`` seconds; with ``log``, each sample is also appended to
    that file with the number of Parquet part files written so far under ``parts`` (a run cut short still tells)."""

    def __init__(self, pid: int, every: float = 1.0, log: Path | None = None, parts: Path | None = None):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()
        self.log, self.parts = log, parts

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            rss = pss = 0.0
            for pid in tree(self.pid):
                r, p = memory_mb(pid)
                rss, pss = rss + r, pss + p
            self.samples.append((time.perf_counter() - start, rss, pss))
            if self.log:
                parts = len(list(self.parts.glob("*.parquet"))) if self.parts and self.parts.is_dir() else 0
                with open(self.log, "a") as f:
                    f.write(json.dumps({"s": round(self.samples[-1][0], 1), "rss_mb": round(rss), "pss_mb": round(pss),
                                        "parts": parts}) + "\n")
            self.stop.wait(self.every)

    def report(self) -> dict:
        if not self.samples:
            return {}
        end = self.samples[-1][0]
        quarters = [[s[2] for s in self.samples if k * end / 4 <= s[0] <= (k + 1) * end / 4] or [0] for k in range(4)]
        return {"peak_rss_mb": max(s[1] for s in self.samples), "peak_pss_mb": max(s[2] for s in self.samples),
                "pss_mb_by_quarter_max": [max(q) for q in quarters]}


# ---------------------------------------------------------------------------------------------------------------
# Runs of the real command
# ---------------------------------------------------------------------------------------------------------------


def run(arguments: list[str], sample_every: float | None = None, log: Path | None = None,
        env: dict[str, str] | None = None) -> dict:
    command = [sys.executable, "-m", "dermlens", "predict", *arguments, "--no-progress", "--overwrite"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    out = Path(arguments[arguments.index("--out") + 1]) / "predictions.parquet"
    sampler = MemorySampler(process.pid, sample_every, log, out) if sample_every else None
    if sampler:
        sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - started
    if sampler:
        sampler.stop.set()
        sampler.join()
    if process.returncode not in (0, 1):  # 1: some photo had an error row, which is a result
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    result = {"seconds": wall, **(sampler.report() if sampler else {})}
    summary = re.search(r"(\d+) predicted, (\d+) errors, ([\d.]+) photos/s \(([\d.]+) s on .*Ray start-up ([\d.]+) s",
                        stderr)
    if summary:
        result.update(ray_pipeline_seconds=float(summary[4]), ray_startup_seconds=float(summary[5]),
                      ray_photos_per_s=float(summary[3]))
    return result


def throughput(name: str, arguments: list[str], one: Path, many: Path, count: int, out: Path) -> dict:
    startup = run([str(one), *arguments, "--out", str(out / f"{name}-one")])
    full = run([str(many), *arguments, "--out", str(out / name)], sample_every=1.0)
    steady = (count - 1) / max(full["seconds"] - startup["seconds"], 1e-9)
    result = {"startup_seconds": startup["seconds"], "seconds": full["seconds"], "photos": count,
              "photos_per_s": count / full["seconds"], "steady_photos_per_s": steady, **{
                  k: v for k, v in full.items() if k not in ("seconds",)}}
    print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def compare_answers(out: Path, photos: list[Path], model: str | None) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from dermlens.predict import Predictor

    def rows(path: Path) -> dict[str, dict]:
        with open(path, newline="") as f:
            return {row["image"]: row for row in csv.DictReader(f)}

    local, ray_csv = rows(out / "local" / "predictions.csv"), rows(out / "ray-1x2" / "predictions.csv")
    tables = {k: {r["image"]: r for r in pq.read_table(out / k / "predictions.parquet").to_pylist()}
              for k in ("ray-1x2", "ray-2x1")}
    nodes = [c[2:] for c in next(iter(tables["ray-1x2"].values())) if c.startswith("p_")]
    matrix = {k: np.array([[t[str(p)][f"p_{n}"] or 0.0 for n in nodes] for p in photos]) for k, t in tables.items()}
    predictor = Predictor(model, engine="onnx")
    reference = predictor.predict([str(p) for p in photos[:200]])
    direct = np.array([[r.probabilities.get(n, 0.0) for n in nodes] for r in reference])
    return {"csv_rows_identical": sum(local[k] == ray_csv.get(k) for k in local), "csv_rows": len(local),
            "parquet_1_vs_2_actors_max_abs_diff": float(np.abs(matrix["ray-1x2"] - matrix["ray-2x1"]).max()),
            "parquet_vs_in_process_first_200_max_abs_diff": float(np.abs(matrix["ray-1x2"][:200] - direct).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--big", type=int, default=20000, help="photos of the memory run (0: skip)")
    parser.add_argument("--model", help="model folder; default the bundled model")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ray"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"cpu": cpu_name(), "uptime_before": uptime(), "photos_from": str(HAM) if HAM.is_dir() else "generated"}
    print(f"{report['cpu']}; {report['uptime_before']}", file=sys.stderr, flush=True)
    photos = photo_list(args.out, max(args.photos, args.big))
    one = write_list(args.out / "one.csv", photos[:1])
    many = write_list(args.out / f"photos-{args.photos}.csv", photos[: args.photos])
    model = ["--model", args.model] if args.model else []
    report["local"] = throughput("local", [*model, "--engine", "onnx", "--workers", "2"], one, many, args.photos,
                                 args.out)
    for actors, cpus in ((1, 2), (2, 1)):
        report[f"ray-{actors}x{cpus}"] = throughput(
            f"ray-{actors}x{cpus}", [*model, "--backend", "ray", "--actors", str(actors), "--actor-cpus", str(cpus),
                                     "--format", "csv"], one, many, args.photos, args.out)
    report["answers"] = compare_answers(args.out, photos[: args.photos], args.model)
    if args.big:
        big = write_list(args.out / f"photos-{args.big}.csv", photos[: args.big])
        log = args.out / "big-memory.jsonl"
        log.unlink(missing_ok=True)
        # Ray's memory monitor kills actors when the MACHINE's memory passes 95%: on a shared machine other jobs'
        # memory triggered it again and again (actors restarted, blocks redone); this run measures our own memory
        report["big"] = {"photos": args.big, **run([str(big), *model, "--backend", "ray", "--out",
                                                    str(args.out / "ray-big")], sample_every=2.0, log=log,
                                                   env={"RAY_memory_monitor_refresh_ms": "0"})}
    report["uptime_after"] = uptime()
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    local = report["local"]
    for name in ("ray-1x2", "ray-2x1"):
        r = report[name]
        print(f"{name}: steady {r['steady_photos_per_s']:.1f} photos/s = {r['steady_photos_per_s'] / local['steady_photos_per_s']:.2f}x "
              f"local's {local['steady_photos_per_s']:.1f}; whole run {r['photos_per_s']:.1f} vs {local['photos_per_s']:.1f} "
              f"photos/s; start-up {r['startup_seconds']:.1f} s vs {local['startup_seconds']:.1f} s")


if __name__ == "__main__":
    main()
