"""Dataset adapters: every supported layout becomes a list of :class:`Record`.

Supported layouts (``load_records`` detects them; ``layout=`` forces one):

* ``dermlens``   -- a ``labels.csv`` with ``image``/``diagnosis`` columns (and optionally ``diagnosis_fine``,
  ``lesion_id``, ``patient_id``, ``modality``, ``split``): the folders under ``../shared/data`` (HAM10000, PH2,
  SD-198) use it.
* ``ham10000``   -- the official HAM10000 release: ``HAM10000_metadata.csv`` (``lesion_id,image_id,dx,...``) with
  the images in ``HAM10000_images_part_1/2`` (or any sub-folder) as ``<image_id>.jpg``.
* ``isic``       -- what ``isic-cli image download`` writes: ``metadata.csv`` (``isic_id``, ``diagnosis`` or
  ``diagnosis_3``/``diagnosis_2``/``diagnosis_1``, ``lesion_id``, ``patient_id``, ``image_type``) beside
  ``<isic_id>.jpg`` files.
* ``csv``        -- a generic CSV file ``path,label[,group]`` (paths relative to the CSV's folder).
* ``folders``    -- one sub-folder per class, the folder name being the label.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from dermlens.data.io import find_images
from dermlens.data.records import Record
from dermlens.taxonomy import LabelMapper, default_taxonomy


class DatasetLayoutError(ValueError):
    """A dataset folder or CSV that no adapter understands, or that misses a column."""


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetLayoutError(f"{path}: no rows")
    return rows


def _require(path: Path, rows: list[dict], columns: list[str]) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DatasetLayoutError(f"{path}: missing column(s) {missing}; found {list(rows[0])}")


def _first(row: dict, *keys: str) -> str:
    for key in keys:
        value = (row.get(key) or "").strip()
        if value:
            return value
    return ""


def _modality(value: str) -> str:
    value = value.lower()
    if "dermoscop" in value:
        return "dermoscopic"
    if "clinical" in value:
        return "clinical"
    return value or "unknown"


def load_dermlens_csv(csv_path: Path, mapper: LabelMapper) -> list[Record]:
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["image", "diagnosis"])
    root = csv_path.parent
    records = []
    for row in rows:
        # The finer label, where a dataset has one, keeps more of what the dataset knows (PH2's atypical nevi).
        label = _first(row, "diagnosis_fine", "diagnosis")
        image = row["image"].strip()
        records.append(
            Record(
                path=root / image,
                label=label,
                node=mapper.map(label, file=str(csv_path)),
                group=_first(row, "patient_id", "lesion_id") or image,
                modality=_modality(row.get("modality", "")),
                split=(row.get("split") or "").strip() or None,
                metadata={k: v for k, v in row.items() if k not in ("image", "diagnosis", "diagnosis_fine")},
            )
        )
    return records


def load_ham10000_official(csv_path: Path, mapper: LabelMapper) -> list[Record]:
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["lesion_id", "image_id", "dx"])
    by_stem = {p.stem: p for p in find_images([csv_path.parent])}
    records = []
    for row in rows:
        image_id = row["image_id"].strip()
        if image_id not in by_stem:
            raise DatasetLayoutError(f"{csv_path}: image {image_id}.jpg listed but not found under {csv_path.parent}")
        records.append(
            Record(
                path=by_stem[image_id],
                label=row["dx"].strip(),
                node=mapper.map(row["dx"], file=str(csv_path)),
                group=row["lesion_id"].strip(),
                modality="dermoscopic",
                metadata={k: v for k, v in row.items() if k not in ("image_id", "dx")},
            )
        )
    return records


def load_isic_archive(csv_path: Path, mapper: LabelMapper) -> list[Record]:
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["isic_id"])
    # Newer ISIC metadata spreads the diagnosis over a hierarchy; the deepest filled level is the most specific.
    label_columns = ["diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2", "diagnosis_1", "diagnosis"]
    if not any(c in rows[0] for c in label_columns):
        raise DatasetLayoutError(f"{csv_path}: no diagnosis column (looked for {label_columns})")
    by_stem = {p.stem: p for p in find_images([csv_path.parent])}
    records = []
    for row in rows:
        isic_id = row["isic_id"].strip()
        label = _first(row, *label_columns)
        if not label:
            continue  # the archive holds many unlabelled images; they cannot train or test anything
        if isic_id not in by_stem:
            raise DatasetLayoutError(f"{csv_path}: image {isic_id} listed but not found under {csv_path.parent}")
        records.append(
            Record(
                path=by_stem[isic_id],
                label=label,
                node=mapper.map(label, file=str(csv_path)),
                group=_first(row, "patient_id", "lesion_id") or isic_id,
                modality=_modality(row.get("image_type", "")),
                metadata={k: v for k, v in row.items() if k != "isic_id"},
            )
        )
    return records


def load_generic_csv(csv_path: Path, mapper: LabelMapper) -> list[Record]:
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["path", "label"])
    root = csv_path.parent
    records = []
    for row in rows:
        path = row["path"].strip()
        label = row["label"].strip()
        records.append(
            Record(
                path=root / path,
                label=label,
                node=mapper.map(label, file=str(csv_path)),
                group=(row.get("group") or "").strip() or path,
                modality=_modality(row.get("modality", "") or ("synthetic" if row.get("synthetic") else "")),
                split=(row.get("split") or "").strip() or None,
                metadata={k: v for k, v in row.items() if k not in ("path", "label", "group")},
            )
        )
    return records


def load_class_folders(root: Path, mapper: LabelMapper) -> list[Record]:
    records = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        node = mapper.map(folder.name, file=str(folder))
        for image in find_images([folder]):
            records.append(Record(path=image, label=folder.name, node=node, group=str(image.relative_to(root))))
    if not records:
        raise DatasetLayoutError(f"{root}: no class sub-folders with images")
    return records


LAYOUTS: dict[str, Callable[[Path, LabelMapper], list[Record]]] = {
    "dermlens": load_dermlens_csv,
    "ham10000": load_ham10000_official,
    "isic": load_isic_archive,
    "csv": load_generic_csv,
    "folders": load_class_folders,
}


def detect_layout(path: Path) -> tuple[str, Path]:
    """Which adapter reads ``path`` and the file (or folder) to hand it."""
    if path.is_file():
        header = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()[:1]
        columns = set(header[0].split(",")) if header else set()
        if {"image", "diagnosis"} <= columns:
            return "dermlens", path
        if {"image_id", "dx"} <= columns:
            return "ham10000", path
        if "isic_id" in columns:
            return "isic", path
        if {"path", "label"} <= columns:
            return "csv", path
        raise DatasetLayoutError(f"{path}: unrecognised CSV columns {sorted(columns)}")
    if not path.is_dir():
        raise DatasetLayoutError(f"{path}: no such file or folder")
    for name in ("labels.csv", "HAM10000_metadata.csv", "HAM10000_metadata", "metadata.csv"):
        if (path / name).is_file():
            return detect_layout(path / name)
    return "folders", path


def load_records(path: str | Path, *, layout: str = "auto", mapper: LabelMapper | None = None) -> list[Record]:
    """Read a dataset in any supported layout; labels become taxonomy nodes (unknown labels are an error)."""
    path = Path(path)
    mapper = mapper or LabelMapper(default_taxonomy())
    if layout == "auto":
        layout, path = detect_layout(path)
    elif layout not in LAYOUTS:
        raise DatasetLayoutError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    elif layout != "folders" and path.is_dir():
        path = detect_layout(path)[1]
    return LAYOUTS[layout](path, mapper)


def source_name(path: str | Path) -> str:
    """A dataset's name: its folder's name (the folder holding the CSV when given a CSV)."""
    path = Path(path)
    return path.name if path.is_dir() else path.parent.name


def load_pooled(paths: str | Path | Sequence[str | Path], *, mapper: LabelMapper | None = None) -> list[Record]:
    """One dataset, or several pooled, as Esteva et al. pooled dermoscopic and clinical sources.

    Each record keeps its dataset's fixed split and modality and is marked with its ``source``. Pooled datasets get
    their group ids prefixed with the source's name, so that two datasets' unrelated lesion ids (or file names such
    as ``images/0001.jpg``) can never merge into one group.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    names = [source_name(p) for p in paths]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetLayoutError(f"--data: two datasets share the folder name {repeated[0]!r}; pool distinct datasets")
    mapper = mapper or LabelMapper(default_taxonomy())
    records: list[Record] = []
    for path, name in zip(paths, names):
        loaded = load_records(path, mapper=mapper)
        if len(paths) == 1:
            records += [replace(r, source=name) for r in loaded]
        else:
            records += [replace(r, source=name, group=f"{name}:{r.group}") for r in loaded]
    return records
