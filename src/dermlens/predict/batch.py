"""Batch prediction over archives: folders and CSV lists of images, written as the results come.

    paths / folders / CSV lists ──► DataLoader over data.TolerantImageDataset (worker processes decode and
    preprocess; a bad file becomes a DecodeFailure, never an exception) ──► Predictor.predict_tensors
    ──► rows appended and flushed per batch

A crash loses nothing already written: every batch is flushed before the next one is read, and a JSON file is a
complete, valid array after every batch (an interrupted batch is cut back off). ``resume=True`` reads the output
file, drops a last row cut off mid-write, and skips every image already in it (``retry_failed=True``: except those
whose row is an error, which are predicted again). An existing result is never replaced unless ``overwrite=True``.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from torch.utils.data import DataLoader

from dermlens.data.io import IMAGE_EXTENSIONS, find_images, is_image_file
from dermlens.data.torch_dataset import TolerantImageDataset, collate_keeping_failures
from dermlens.predict import run_settings
from dermlens.predict.predictor import Prediction

LIST_COLUMNS = ("image", "path", "file", "filename", "image_path", "filepath")
# Compressed archive files: not read (a photo archive is a folder); named so the error can say what to do instead.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".gz", ".tbz2", ".tar.bz2", ".bz2", ".txz", ".tar.xz", ".xz",
                    ".7z", ".rar")


class OutputMismatchError(ValueError):
    """``--resume`` on an output file that another model or format wrote."""


class EmptyInputError(ValueError):
    """The inputs name no image at all: an empty folder, a CSV list without rows."""


class ArchiveFileError(ValueError):
    """An input is a compressed archive file (.zip, .tar.gz...): predict reads folders, not archive files."""


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


def collect_inputs(paths: Sequence[str | Path], on_empty: Callable[[str], None] | None = None) -> list[Path]:
    """Files as given, folders expanded into their images, ``.csv`` files read as lists of images. A compressed
    archive file (.zip, .tar.gz...) is refused with what to do instead (:class:`ArchiveFileError`).

    A folder without images or a CSV list without rows is told to ``on_empty``; when nothing at all is left,
    :class:`EmptyInputError` says so (a header-only result would look like success).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    expanded: list[Path] = []
    empty: list[str] = []
    for given in paths:
        path = Path(given)
        if path.suffix.lower() == ".csv" and path.is_file():
            listed = read_image_list(path)
            if not listed:
                empty.append(f"{path}: the CSV list names no images")
            expanded.extend(listed)
        elif path.is_dir():
            found = find_images([path])
            if not found:
                empty.append(f"{path}: the folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            expanded.extend(found)
        elif path.name.lower().endswith(ARCHIVE_SUFFIXES) and path.is_file():
            raise ArchiveFileError(
                f"{path}: a compressed archive; predict reads image files, folders of them (searched recursively) "
                f"and CSV lists, not {path.suffix} files: unpack it first (e.g. `unzip x.zip -d x` or "
                "`tar -xf x.tar.gz -C x`) and give the folder")
        else:
            expanded.append(path)
    files = find_images(expanded)
    if not files:
        raise EmptyInputError("; ".join(empty) if empty else "no images given")
    for message in empty:
        if on_empty:
            on_empty(message)
    return files


# ----------------------------------------------------------------------------------------------------------------
# Outputs that survive a crash
# ----------------------------------------------------------------------------------------------------------------


def csv_fields(node_ids: Sequence[str]) -> list[str]:
    """``top1_class``: the most likely training class (the network's own output); ``p_<node>``: every taxonomy
    node's probability, the sum of the training classes at or below it. So p_melanoma can exceed the melanoma
    class's own probability: the node also holds its subtypes' classes."""
    return ["image", "error", "triage", "quality", "advice", "ood_score", "modality", "top1_class"] + [f"p_{n}" for n in node_ids]


def csv_row(prediction) -> dict:
    """One CSV row. A photo the gate stopped (retake / cannot_assess) has empty top1_class and p_ cells: it keeps its
    triage, the reason (quality) and what to do (advice), and nothing a reader could take for a diagnosis."""
    row = {"image": prediction.image, "error": prediction.error, "triage": prediction.triage,
           "quality": prediction.quality, "advice": prediction.advice,
           "ood_score": "" if prediction.ood_score is None else f"{prediction.ood_score:.4f}",
           "modality": prediction.modality,
           "top1_class": prediction.top5[0][0] if prediction.top5 and prediction.diagnosis_shown else ""}
    if prediction.diagnosis_shown:
        row.update({f"p_{n}": f"{p:.6f}" for n, p in prediction.probabilities.items()})
    return row


class CsvOutput:
    def __init__(self, stream: IO[str], fields: list[str], write_header: bool):
        self.stream = stream
        self.writer = csv.DictWriter(stream, fieldnames=fields)
        if write_header:
            self.writer.writeheader()
        self.end = stream.tell() if stream.seekable() else None  # end of the last complete batch

    def write(self, prediction) -> None:
        self.writer.writerow(csv_row(prediction))

    def end_batch(self) -> None:
        self.stream.flush()
        if self.end is not None:
            self.end = self.stream.tell()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Interrupted (Ctrl-C, an error): cut the file back to its last complete batch."""
        if self.end is not None:
            self.stream.seek(self.end)
            self.stream.truncate()


class JsonOutput:
    """A JSON array with one prediction per line, so a partial file can be repaired and continued.

    Written to a file, the array is closed after every batch (the next batch overwrites the closing bracket), so
    the file is valid JSON whenever a batch is not being written, and an interrupted batch is cut back off.
    """

    def __init__(self, stream: IO[str], continuing: bool):
        self.stream = stream
        self.first = not continuing
        self.seekable = stream.seekable()
        if not continuing:
            stream.write("[")
        self.end = stream.tell() if self.seekable else None  # where the closing bracket goes
        self.pending: list[str] = []
        if self.seekable:
            self._close_array()

    def write(self, prediction) -> None:
        item = ("\n" if self.first else ",\n") + json.dumps(prediction.to_dict())
        self.first = False
        if self.seekable:
            self.pending.append(item)
        else:
            self.stream.write(item)

    def end_batch(self) -> None:
        if self.seekable and self.pending:
            self.stream.seek(self.end)
            self.stream.write("".join(self.pending))
            self.pending = []
            self.end = self.stream.tell()
            self._close_array()

    def _close_array(self) -> None:
        self.stream.seek(self.end)
        self.stream.write("\n]\n")
        self.stream.truncate()
        self.stream.flush()

    def close(self) -> None:
        if not self.seekable:
            self.stream.write("\n]\n")

    def abort(self) -> None:
        """Interrupted: close the array after the last complete batch (stdout: after what was written)."""
        self.pending = []
        if self.seekable:
            self._close_array()
        else:
            self.stream.write("\n]\n")


def _done_in_csv(path: Path, fields: list[str]) -> tuple[dict[str, str], int]:
    """Images already in a CSV output (image -> its error, "" when predicted), and the byte length of its complete
    rows (a cut-off last row is dropped)."""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    text = complete.decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return {}, 0
    if rows[0] != fields:
        raise OutputMismatchError(f"{path}: its columns are not this model's ({len(rows[0])} vs {len(fields)} "
                                  "columns); write to a new --out folder")
    return {row[0]: row[1] for row in rows[1:] if row}, len(complete)


def _done_in_json(path: Path) -> tuple[dict[str, str], int]:
    """Images already in a JSON output (image -> its error), and the byte length up to the end of its last
    complete object."""
    data = path.read_bytes()
    if not data.lstrip().startswith(b"["):
        raise OutputMismatchError(f"{path}: not a dermlens JSON prediction file; write to a new --out folder")
    done, end, offset = {}, 0, 0
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
        done[item["image"]] = item.get("error") or ""
        end = start + len(body)
    return done, end


def _drop_rows(path: Path, format: str, images: set[str]) -> None:
    """Rewrite an output file without the rows of ``images`` (to predict them again), atomically."""
    text = path.read_text(encoding="utf-8")
    if format == "csv":
        rows = list(csv.reader(io.StringIO(text[: text.rfind("\n") + 1], newline="")))
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerows([rows[0]] + [row for row in rows[1:] if row and row[0] not in images])
        kept = buffer.getvalue()
    else:
        _, end = _done_in_json(path)
        lines = [line.rstrip().rstrip(",") for line in text[:end].splitlines() if line.lstrip().startswith("{")]
        items = [line for line in lines if json.loads(line)["image"] not in images]
        kept = "[" + "".join(("\n" if k == 0 else ",\n") + item for k, item in enumerate(items)) + "\n]\n"
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(kept, encoding="utf-8", newline="")
    os.replace(temporary, path)


@dataclass
class BatchSummary:
    engine: str = ""  # what ran the network, e.g. "onnx fp32" (Predictor.engine_name)
    total: int = 0  # images found
    skipped: int = 0  # already in the output (resume)
    predicted: int = 0
    failed: int = 0  # failed in this run
    failures: list[tuple[str, str]] = field(default_factory=list)
    earlier_failed: int = 0  # skipped images whose earlier row is an error (resume without retry_failed)
    earlier_failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed_in_file(self) -> int:
        """Error rows of these images in the whole output, this run's and earlier runs'."""
        return self.failed + self.earlier_failed


def open_output(out_path: Path | None, format: str, node_ids: Sequence[str], resume: bool,
                retry_failed: bool = False, overwrite: bool = False, settings: dict | None = None):
    """(output writer, stream, images already done -> their error).

    Refuses (FileExistsError) to replace a non-empty result unless ``resume`` continues it or ``overwrite``.
    ``settings`` (``run_settings.prediction_settings``) are recorded beside a new file, and a resume whose
    settings differ from the recorded ones is refused (``run_settings.SettingsChangedError``) before anything is
    touched. ``retry_failed`` (with ``resume``) first removes the error rows, so those images are predicted again.
    """
    if format not in ("csv", "json"):
        raise ValueError(f"format must be csv or json; got {format!r}")
    if out_path is None:
        if resume:
            raise ValueError("--resume needs an output file (--out)")
        stream = sys.stdout
        writer = CsvOutput(stream, csv_fields(node_ids), True) if format == "csv" else JsonOutput(stream, False)
        return writer, stream, {}
    done: dict[str, str] = {}
    keep = 0
    has_results = out_path.is_file() and out_path.stat().st_size > 0
    if has_results and not resume and not overwrite:
        raise FileExistsError(f"{out_path} already holds results; --resume finishes it (--retry-failed also "
                              "retries its errors), --overwrite replaces it")

    def read_done():
        return _done_in_csv(out_path, csv_fields(node_ids)) if format == "csv" else _done_in_json(out_path)

    if resume and has_results:
        done, keep = read_done()
        if settings is not None:
            run_settings.check_unchanged(out_path, settings)
        failed = {image for image, error in done.items() if error}
        if retry_failed and failed:
            _drop_rows(out_path, format, failed)
            done, keep = read_done()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None and not keep:  # a new (or replaced) file: these settings make all of its rows
        run_settings.write_settings(out_path, settings)
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
    modality: str | None = None,
    retry_failed: bool = False,
    overwrite: bool = False,
) -> BatchSummary:
    """Predict every file, appending rows to ``out_path`` (stdout when None) batch by batch.

    ``resume`` skips images already in ``out_path`` when it was made with the same settings (recorded beside it in
    ``<out_path>.settings.json``); ``retry_failed`` predicts those with an error row again.
    A non-empty ``out_path`` is only replaced with ``overwrite``. The summary counts this run's failures and, on
    resume, the earlier error rows of these images (``failed_in_file``).
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or num_workers < 0:  # checked before the output is touched
        raise ValueError(f"batch_size must be at least 1 and num_workers at least 0; got {batch_size}, {num_workers}")
    names = [str(f) for f in files]
    settings = run_settings.prediction_settings(predictor, modality) if out_path is not None else None
    writer, stream, done = open_output(out_path, format, predictor.node_ids, resume, retry_failed, overwrite, settings)
    todo = [n for n in names if n not in done]
    summary = BatchSummary(engine=predictor.engine_name, total=len(names), skipped=len(names) - len(todo))
    summary.earlier_failures = [(n, done[n]) for n in dict.fromkeys(names) if done.get(n)]
    summary.earlier_failed = len(summary.earlier_failures)
    if len(todo) <= batch_size:  # one batch: starting worker processes would cost more than decoding it here
        num_workers = 0
    loader = DataLoader(
        TolerantImageDataset(todo, predictor.transform), batch_size=batch_size, num_workers=num_workers,
        collate_fn=collate_keeping_failures, prefetch_factor=4 if num_workers > 0 else None,
    )
    try:
        with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress, file=sys.stderr) as bar:
            for batch in loader:
                rows = {}
                if batch.images is not None:
                    predictions = predictor.predict_tensors(batch.images, [todo[i] for i in batch.indices], modality,
                                                            batch.shorter_sides)
                    rows.update(zip(batch.indices, predictions))
                for index, failure in batch.failures:
                    rows[index] = Prediction(image=todo[index], error=failure.reason)
                    summary.failures.append((todo[index], failure.reason))
                    if on_error:
                        on_error(todo[index], failure.reason)
                for index in sorted(rows):  # input order, failures in their place
                    writer.write(rows[index])
                writer.end_batch()
                stream.flush()  # results so far survive a crash
                summary.predicted += len(batch.indices)
                summary.failed += len(batch.failures)
                bar.update(len(rows))
        writer.close()
    except BaseException:  # Ctrl-C or an error: leave the file as it was after the last complete batch
        writer.abort()
        raise
    finally:
        stream.flush()
        if out_path is not None:
            stream.close()
    return summary

