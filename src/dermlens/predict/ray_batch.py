"""Batch prediction on Ray: the local path's inputs and columns, analysed by an actor pool, written as Parquet.

    paths (``batch.collect_inputs``, as the local path) + the (path, content hash) keys earlier runs wrote
    ──► a Ray Data dataset of paths ──► an actor pool, one Predictor per actor, loaded once: read the file,
        SHA-256 it, skip it when (path, hash) is already written, decode and preprocess (the local path's
        ``TolerantImageDataset``, in threads), ``Predictor.predict_tensors``
    ──► OUT/predictions.parquet/*.parquet: part files written by the actors as their blocks finish (streaming: the
        driver never holds the results) ──► on request OUT/predictions.csv, the local path's CSV

Columns: the local CSV's (``batch.csv_fields``; probabilities and ``ood_score`` as float64, the rest strings) and
``content_sha256``, one row per photo; a photo that cannot be read is a row with its ``error``.

Nothing lost, nothing done twice: ``resume`` skips every photo whose (path, content hash) is in the dataset. Each
block of photos is one part file, written whole (renamed into place), so a killed run loses only its blocks in flight.
A photo whose file changed since its row was written is predicted again (both rows stay; ``content_sha256`` tells
them apart). The settings that decide the answers (model files, engine, TTA, gate, modality, columns) are saved
beside the dataset; a resume with other settings is refused, naming each one that changed.

Ray is imported only inside these functions, and this module only when ``--backend ray`` is asked for.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dermlens.data.torch_dataset import TolerantImageDataset, collate_keeping_failures
from dermlens.extras import require
from dermlens.predict.batch import OutputMismatchError, csv_fields, csv_row
from dermlens.predict.predictor import Prediction, Predictor
from dermlens.predict.run_settings import changed_settings, prediction_settings

DATASET_NAME = "predictions.parquet"
SETTINGS_NAME = "predictions.parquet.settings.json"
CSV_NAME = "predictions.csv"
KEY_COLUMN = "content_sha256"
FEATURE = "dermlens predict --backend ray"
TEXT_COLUMNS = ("image", "error", "triage", "quality", "advice", "modality", "top1_class")


def _ray():
    require("pyarrow.parquet", "ray", FEATURE)
    require("ray.data", "ray", FEATURE)
    import ray

    return ray


# ----------------------------------------------------------------------------------------------------------------
# What a row is, and what decides it
# ----------------------------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 (hex), or "" when it cannot be read (its row then carries the decoder's error)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


def run_settings(predictor: Predictor, *, modality: str | None) -> dict:
    """The settings a result depends on, as saved beside the dataset (JSON): the local path's record
    (``predict.run_settings``) and the Parquet columns."""
    return {**prediction_settings(predictor, modality), "columns": csv_fields(predictor.node_ids)}


def result_schema(node_ids: Sequence[str]):
    import pyarrow as pa

    return pa.schema([(name, pa.string() if name in TEXT_COLUMNS else pa.float64()) for name in csv_fields(node_ids)]
                     + [(KEY_COLUMN, pa.string())])


def rows_table(predictions: Sequence[Prediction], hashes: Sequence[str], schema):
    """An Arrow table of predictions: the local CSV's row (``batch.csv_row``: a stopped photo's diagnosis cells
    empty) with its numbers typed."""
    import pyarrow as pa

    columns: dict[str, list] = {name: [] for name in schema.names}
    for prediction, content_hash in zip(predictions, hashes):
        row = {**csv_row(prediction), KEY_COLUMN: content_hash}
        for name, values in columns.items():
            value = row.get(name)
            text = name in TEXT_COLUMNS or name == KEY_COLUMN  # None (a failed photo's triage) is "" as in the CSV
            values.append(str(value or "") if text else (float(value) if value else None))
    return pa.table(columns, schema=schema)


def _csv_cells(row: dict, node_ids: Sequence[str]) -> dict:
    """A Parquet row back in the local CSV's text form (``batch.csv_row``)."""
    text = {name: row.get(name) or "" for name in TEXT_COLUMNS}
    numbers = {"ood_score": "" if row.get("ood_score") is None else f"{row['ood_score']:.4f}"}
    numbers.update({f"p_{n}": "" if row.get(f"p_{n}") is None else f"{row[f'p_{n}']:.6f}" for n in node_ids})
    return {**text, **numbers}


# ----------------------------------------------------------------------------------------------------------------
# The actor
# ----------------------------------------------------------------------------------------------------------------


class PhotoAnalyser:
    """One per Ray actor: one Predictor, loaded once.

    Each call takes a block of {image, done} (``done``: the content hashes already written for that path,
    space-separated, "-" for a file that was unreadable), predicts the rest ``batch_size`` photos at a time and
    writes them as one Parquet part file, atomically, under a name fixed by the run and the block (a retried block
    replaces its own file). Reading, hashing and decoding run in ``threads`` threads; the engine runs ``threads``
    intra-op threads (the CPUs Ray reserved for the actor). Returns what it wrote: one row {photos, predicted,
    errors}."""

    def __init__(self, model_dir: str, engine: str, precision: str, tta: int, gate: bool, modality: str | None,
                 threads: int, batch_size: int, dataset: str, run_id: str):
        import torch

        torch.set_num_threads(threads)
        self.predictor = Predictor(model_dir, tta=tta, engine=engine, precision=precision, threads=threads, gate=gate)
        self.modality, self.batch_size = modality, batch_size
        self.dataset, self.run_id = Path(dataset), run_id
        self.schema = result_schema(self.predictor.node_ids)
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _map(self, function: Callable, items) -> list:
        return list(self.pool.map(function, items)) if self.pool else [function(item) for item in items]

    def predict(self, paths: list[str]) -> list[Prediction]:
        """The local path's per-batch work: decode (a bad file is a DecodeFailure), predict, failures in place."""
        photos = TolerantImageDataset(paths, self.predictor.transform)
        loaded = collate_keeping_failures(self._map(photos.__getitem__, range(len(paths))))
        results: dict[int, Prediction] = {}
        if loaded.images is not None:
            names = [paths[i] for i in loaded.indices]
            results.update(zip(loaded.indices, self.predictor.predict_tensors(loaded.images, names, self.modality,
                                                                              loaded.shorter_sides)))
        for index, failure in loaded.failures:
            results[index] = Prediction(image=paths[index], error=failure.reason)
        return [results[i] for i in range(len(paths))]

    def __call__(self, block: dict) -> dict:
        import numpy as np
        import pyarrow.parquet as pq

        paths = [str(p) for p in block["image"]]
        hashes = self._map(file_sha256, paths)
        todo = [k for k, (digest, done) in enumerate(zip(hashes, block["done"])) if (digest or "-") not in done.split()]
        predictions = [p for start in range(0, len(todo), self.batch_size)
                       for p in self.predict([paths[k] for k in todo[start:start + self.batch_size]])]
        if predictions:
            name = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:20]
            part = self.dataset / f"part-{self.run_id}-{name}.parquet"
            temporary = part.with_name(f".{part.name}.tmp")
            pq.write_table(rows_table(predictions, [hashes[k] for k in todo], self.schema), temporary)
            os.replace(temporary, part)  # a part file is whole or absent
        return {"photos": np.array([len(paths)]), "predicted": np.array([len(predictions)]),
                "errors": np.array([sum(1 for p in predictions if p.error)])}


# ----------------------------------------------------------------------------------------------------------------
# The dataset on disk: what is written, settings, CSV
# ----------------------------------------------------------------------------------------------------------------


def read_written(dataset: Path) -> dict[tuple[str, str], str]:
    """(image, content hash) -> error ("" when predicted) of every row written so far."""
    import pyarrow.parquet as pq

    written: dict[tuple[str, str], str] = {}
    for part in sorted(dataset.glob("*.parquet")) if dataset.is_dir() else []:
        try:
            table = pq.read_table(part, columns=["image", KEY_COLUMN, "error"])
        except Exception as error:  # noqa: BLE001 - pyarrow's ArrowInvalid or OSError: parts are written whole
            raise OutputMismatchError(f"{part}: not a readable dermlens result part ({error}); move it away") from None
        for image, key, error in zip(*(table.column(c).to_pylist() for c in ("image", KEY_COLUMN, "error"))):
            written[(image, key)] = error or ""
    return written


def drop_error_rows(dataset: Path) -> None:
    """Rewrite the part files without their error rows (to predict those photos again), each atomically."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for part in sorted(dataset.glob("*.parquet")):
        table = pq.read_table(part)
        kept = table.filter(pc.equal(pc.fill_null(table["error"], ""), ""))
        if kept.num_rows == table.num_rows:
            continue
        if kept.num_rows == 0:
            part.unlink()
            continue
        temporary = part.with_name(f".{part.name}.tmp")
        pq.write_table(kept, temporary)
        os.replace(temporary, part)


def prepare_output(out_dir: Path, settings: dict, resume: bool, retry_failed: bool,
                   overwrite: bool) -> dict[tuple[str, str], str]:
    """Check and ready OUT for this run; the rows already written (empty unless ``resume``).

    Refuses (FileExistsError) to add to a dataset unless ``resume``, and (OutputMismatchError) to mix results of
    other settings; ``overwrite`` deletes the earlier dataset, its settings and CSV first.
    """
    dataset, settings_file = out_dir / DATASET_NAME, out_dir / SETTINGS_NAME
    has_results = dataset.is_dir() and any(dataset.glob("*.parquet"))
    if has_results and not (resume or overwrite):
        raise FileExistsError(f"{dataset} already holds results; --resume finishes it (--retry-failed also retries "
                              "its errors), --overwrite replaces it")
    if overwrite:
        import shutil

        shutil.rmtree(dataset, ignore_errors=True)
        for stale in (settings_file, out_dir / CSV_NAME):
            stale.unlink(missing_ok=True)
        has_results = False
    if has_results:
        saved = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        changed = changed_settings(saved, settings)
        if changed:
            raise OutputMismatchError(f"{dataset} holds results made with other settings ({'; '.join(changed)}); "
                                      "write to a new --out folder, or --overwrite")
        if retry_failed:
            drop_error_rows(dataset)
    dataset.mkdir(parents=True, exist_ok=True)
    for leftover in dataset.glob(".*.tmp"):  # a part being written when an earlier run was killed
        leftover.unlink()
    temporary = settings_file.with_name(f".{settings_file.name}.tmp")
    temporary.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(temporary, settings_file)
    return read_written(dataset) if has_results else {}


def write_csv(dataset: Path, csv_path: Path, node_ids: Sequence[str]) -> None:
    """The local path's CSV of every row in the dataset, streamed part by part (rows in the dataset's order),
    replaced atomically."""
    import pyarrow.parquet as pq

    temporary = csv_path.with_name(f".{csv_path.name}.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=csv_fields(node_ids))
        writer.writeheader()
        for part in sorted(dataset.glob("*.parquet")):
            for batch in pq.ParquetFile(part).iter_batches(batch_size=1024):
                writer.writerows(_csv_cells(row, node_ids) for row in batch.to_pylist())
    os.replace(temporary, csv_path)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class RaySummary:
    engine: str = ""
    total: int = 0  # photos given
    predicted: int = 0  # rows written by this run (errors included)
    failed: int = 0  # error rows written by this run
    failed_in_file: int = 0  # error rows of these photos in the whole dataset, earlier runs' too
    seconds: float = 0.0  # the pipeline, actors' start included
    startup_seconds: float = 0.0  # starting or joining Ray
    actors: int = 0
    cpus_per_actor: int = 1
    outputs: list[Path] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.total - self.predicted

    @property
    def photos_per_second(self) -> float:
        return self.predicted / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        done = f", {self.skipped} already done" if self.skipped else ""
        return (f"{self.total} photos{done}, {self.predicted} predicted, {self.failed} errors, "
                f"{self.photos_per_second:.1f} photos/s ({self.seconds:.1f} s on {self.actors} actors x "
                f"{self.cpus_per_actor} CPU, engine {self.engine}; Ray start-up {self.startup_seconds:.1f} s apart); "
                f"results in {', '.join(map(str, self.outputs))}")


def _start_ray(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local one; False when this process already runs Ray (a test,
    a notebook: used as it is and left running)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:  # "local": a new instance even when another one runs on this machine
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    return True


def predict_on_ray(
    files: Sequence[str | Path],
    out_dir: Path,
    *,
    model_dir: str | Path | None = None,
    engine: str = "onnx",
    precision: str = "fp32",
    tta: int = 1,
    gate: bool = True,
    modality: str | None = None,
    batch_size: int = 32,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    csv: bool = False,
    progress: bool = True,
    photos_per_file: int = 256,
) -> RaySummary:
    """Predict every file on Ray and write OUT/predictions.parquet (and, with ``csv``, OUT/predictions.csv).

    ``address``: an existing cluster (``ray start --head`` prints it); None starts a local Ray for the run (shut
    down after). ``actors``: the pool size, by default as many as the cluster's CPUs hold at ``cpus_per_actor``
    each (the engine's intra-op threads). ``engine="auto"`` means ONNX Runtime here, so every node runs the same.
    """
    if batch_size < 1 or cpus_per_actor < 1 or (actors is not None and actors < 1) or photos_per_file < 1:
        raise ValueError("batch_size, cpus_per_actor, actors and photos_per_file must be at least 1")
    ray = _ray()
    engine = "onnx" if engine == "auto" and precision != "bf16" else engine
    # loaded here once: a bad model fails before any cluster work, the settings record needs it, and the ONNX export
    # is made (atomically, cached) before the actors look for it
    predictor = Predictor(model_dir, tta=tta, engine=engine, precision=precision, gate=gate)
    settings = run_settings(predictor, modality=modality)
    summary = RaySummary(engine=predictor.engine_name, total=len(files), cpus_per_actor=cpus_per_actor)
    node_ids, model_dir = predictor.node_ids, predictor.model_dir
    del predictor
    out_dir = Path(out_dir)
    dataset = out_dir / DATASET_NAME
    before = prepare_output(out_dir, settings, resume, retry_failed, overwrite)
    done: dict[str, list[str]] = {}
    for image, key in before:
        done.setdefault(image, []).append(key or "-")
    items = [{"image": str(f), "done": " ".join(done.get(str(f), []))} for f in files]  # "-": was unreadable
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"  # part names: which run, in time order

    started = time.perf_counter()
    started_here = _start_ray(address)
    summary.startup_seconds = time.perf_counter() - started
    try:
        summary.actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
        # a block is one actor call and one part file: at least one block per actor, at most photos_per_file photos
        per_block = max(1, min(photos_per_file, math.ceil(len(items) / summary.actors)))
        summary.actors = max(1, min(summary.actors, math.ceil(len(items) / per_block)))
        ray.data.DataContext.get_current().enable_progress_bars = False  # our bar counts photos, as the local path's
        started = time.perf_counter()
        blocks = (ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / per_block)))
                  .map_batches(PhotoAnalyser, batch_size=per_block, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=summary.actors), num_cpus=cpus_per_actor,
                               fn_constructor_kwargs={
                                   "model_dir": str(model_dir), "engine": engine, "precision": precision, "tta": tta,
                                   "gate": gate, "modality": modality, "threads": cpus_per_actor,
                                   "batch_size": batch_size, "dataset": str(dataset.resolve()), "run_id": run_id}))
        with tqdm(total=len(items), desc="predict on Ray", unit="img", disable=not progress, file=sys.stderr) as bar:
            for done_block in blocks.iter_batches(batch_size=None, batch_format="numpy") if items else []:
                summary.predicted += int(done_block["predicted"].sum())
                summary.failed += int(done_block["errors"].sum())
                bar.update(int(done_block["photos"].sum()))
        summary.seconds = time.perf_counter() - started
    finally:
        if started_here:
            ray.shutdown()
    given = {item["image"] for item in items}
    summary.failed_in_file = sum(1 for (image, _), error in read_written(dataset).items() if error and image in given)
    summary.outputs = [dataset]
    if csv:
        write_csv(dataset, out_dir / CSV_NAME, node_ids)
        summary.outputs.append(out_dir / CSV_NAME)
    return summary
