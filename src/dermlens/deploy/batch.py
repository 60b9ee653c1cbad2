"""Batch prediction over archives: folders and CSV lists of images, written as the results come.

    paths / folders / CSV lists ──► DataLoader (worker processes decode + preprocess; a bad file becomes an error
    marker, never an exception) ──► batches ──► Predictor.predict_tensors ──► rows appended and flushed per batch

A crash loses nothing already written: every batch is flushed before the next one is read. ``resume=True`` reads
the output file, drops a last row cut off mid-write, and skips every image already in it.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
from torch.utils.data import DataLoader, Dataset

from dermlens.data.io import ImageDecodeError, find_images, is_image_file, load_image

LIST_COLUMNS = ("image", "path", "file", "filename", "image_path", "filepath")


class OutputMismatchError(ValueError):
    """``--resume`` on an output file that another model or format wrote."""


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------


def read_image_list(csv_path: Path) -> list[Path]:
    """Image paths listed in a CSV: a column named image/path/file/filename/image_path/filepath, or, without such
    a header, the first column. Relative paths are taken from the CSV's folder (as dataset CSVs are)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in LIST_COLUMNS if name in header), None)
    if column is None:
        if not is_image_file(rows[0][0].strip()):
            raise ValueError(f"{csv_path}: no image column (looked for {', '.join(LIST_COLUMNS)}) and the first "
                             f"cell {rows[0][0]!r} is not an image path")
        column, body = 0, rows
    else:
        body = rows[1:]
    root = csv_path.parent
    return [root / row[column].strip() for row in body if len(row) > column and row[column].strip()]


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded into their images, ``.csv`` files read as lists of images."""
    expanded: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.suffix.lower() == ".csv" and path.is_file():
            expanded.extend(read_image_list(path))
        else:
            expanded.append(path)
    return find_images(expanded)


class DecodingDataset(Dataset):
    """(index, tensor or None, error text): decoding failures travel back from the workers as data."""

    def __init__(self, paths: Sequence[str | Path], transform: Callable):
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(load_image(self.paths[index])), ""
        except ImageDecodeError as e:
            return index, None, e.reason
        except Exception as e:  # noqa: BLE001 - one odd file must not end a batch of a million
            return index, None, f"cannot process image ({type(e).__name__}: {e})"


def collate_with_errors(items: list) -> dict:
    good = [(i, t) for i, t, _ in items if t is not None]
    return {
        "indices": [i for i, _ in good],
        "images": torch.stack([t for _, t in good]) if good else None,
        "failed": [(i, error) for i, t, error in items if t is None],
    }


# ----------------------------------------------------------------------------------------------------------------
# Outputs that survive a crash
# ----------------------------------------------------------------------------------------------------------------


def csv_fields(node_ids: Sequence[str]) -> list[str]:
    return ["image", "error", "triage", "top1"] + [f"p_{n}" for n in node_ids]


def csv_row(prediction) -> dict:
    row = {"image": prediction.image, "error": prediction.error, "triage": prediction.triage,
           "top1": prediction.top5[0][0] if prediction.top5 else ""}
    row.update({f"p_{n}": f"{p:.6f}" for n, p in prediction.probabilities.items()})
    return row


class CsvOutput:
    def __init__(self, stream: IO[str], fields: list[str], write_header: bool):
        self.stream = stream
        self.writer = csv.DictWriter(stream, fieldnames=fields)
        if write_header:
            self.writer.writeheader()

    def write(self, prediction) -> None:
        self.writer.writerow(csv_row(prediction))

    def close(self) -> None:
        pass


class JsonOutput:
    """A JSON array with one prediction per line, so a partial file can be repaired and continued."""

    def __init__(self, stream: IO[str], continuing: bool):
        self.stream = stream
        self.first = not continuing
        if not continuing:
            stream.write("[")

    def write(self, prediction) -> None:
        self.stream.write(("\n" if self.first else ",\n") + json.dumps(prediction.to_dict()))
        self.first = False

    def close(self) -> None:
        self.stream.write("\n]\n")


def _done_in_csv(path: Path, fields: list[str]) -> tuple[set[str], int]:
    """Images already in a CSV output, and the byte length of its complete rows (a cut-off last row is dropped)."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    text = complete.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return set(), 0
    if rows[0] != fields:
        raise OutputMismatchError(f"{path}: its columns are not this model's ({len(rows[0])} vs {len(fields)} "
                                  "columns); write to a new --out folder")
    return {row[0] for row in rows[1:] if row}, len(complete)


def _done_in_json(path: Path) -> tuple[set[str], int]:
    """Images already in a JSON output, and the byte length up to the end of its last complete object."""
    data = path.read_bytes()
    if not data.lstrip().startswith(b"["):
        raise OutputMismatchError(f"{path}: not a dermlens JSON prediction file; write to a new --out folder")
    done, end, offset = set(), 0, 0
    for line in data.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        body = line.rstrip()
        body = body[:-1] if body.endswith(b",") else body  # the comma belongs to the object after it
        if not body.lstrip().startswith(b"{"):
            if body.strip() in (b"[", b""):
                continue
            break  # the closing bracket, or anything else: stop here
        try:
            item = json.loads(body)
        except json.JSONDecodeError:
            break  # cut off mid-write: written again
        done.add(item["image"])
        end = start + len(body)
    return done, end


@dataclass
class BatchSummary:
    total: int = 0  # images found
    skipped: int = 0  # already in the output (resume)
    predicted: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def open_output(out_path: Path | None, format: str, node_ids: Sequence[str], resume: bool):
    """(output writer, stream, images already done)."""
    if format not in ("csv", "json"):
        raise ValueError(f"format must be csv or json; got {format!r}")
    if out_path is None:
        if resume:
            raise ValueError("--resume needs an output file (--out)")
        stream = sys.stdout
        writer = CsvOutput(stream, csv_fields(node_ids), True) if format == "csv" else JsonOutput(stream, False)
        return writer, stream, set()
    done: set[str] = set()
    keep = 0
    if resume and out_path.is_file() and out_path.stat().st_size:
        done, keep = _done_in_csv(out_path, csv_fields(node_ids)) if format == "csv" else _done_in_json(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if keep:
        stream = open(out_path, "r+", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the caller
        stream.truncate(keep)
        stream.seek(keep)
    else:
        stream = open(out_path, "w", newline="", encoding="utf-8")  # noqa: SIM115
    if format == "csv":
        writer = CsvOutput(stream, csv_fields(node_ids), write_header=not keep)
    else:
        writer = JsonOutput(stream, continuing=bool(keep))
    return writer, stream, done


def predict_files(
    predictor,
    files: Sequence[str | Path],
    out_path: Path | None = None,
    *,
    format: str = "csv",
    batch_size: int = 32,
    num_workers: int = 2,
    resume: bool = False,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> BatchSummary:
    """Predict every file, appending rows to ``out_path`` (stdout when None) batch by batch."""
    from tqdm.auto import tqdm

    names = [str(f) for f in files]
    writer, stream, done = open_output(out_path, format, predictor.node_ids, resume)
    todo = [n for n in names if n not in done]
    summary = BatchSummary(total=len(names), skipped=len(names) - len(todo))
    loader = DataLoader(
        DecodingDataset(todo, predictor.transform), batch_size=batch_size, num_workers=num_workers,
        collate_fn=collate_with_errors, persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    try:
        with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
            for batch in loader:
                rows = {}
                if batch["images"] is not None:
                    predictions = predictor.predict_tensors(batch["images"], [todo[i] for i in batch["indices"]])
                    rows.update(zip(batch["indices"], predictions))
                for index, error in batch["failed"]:
                    rows[index] = _failed(todo[index], error)
                    summary.failures.append((todo[index], error))
                    if on_error:
                        on_error(todo[index], error)
                for index in sorted(rows):  # input order, failures in their place
                    writer.write(rows[index])
                stream.flush()  # results so far survive a crash
                summary.predicted += len(rows) - len(batch["failed"])
                summary.failed += len(batch["failed"])
                bar.update(len(rows))
        writer.close()
    finally:
        stream.flush()
        if out_path is not None:
            stream.close()
    return summary


def _failed(name: str, error: str):
    from dermlens.predict import Prediction

    return Prediction(image=name, error=error)
