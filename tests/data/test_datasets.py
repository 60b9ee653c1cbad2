"""Dataset adapters: every supported layout, built tiny in tmp_path, becomes the same list of Records."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from dermlens.data.datasets import DatasetLayoutError, detect_layout, load_records
from dermlens.data.splits import grouped_split
from dermlens.taxonomy import LabelMapper, UnknownLabelError, default_taxonomy

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_image(path: Path, colour=(180, 120, 90)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def by_name(records) -> dict:
    return {r.path.name: r for r in records}


# ---------------------------------------------------------------------------------------------------------------
# HAM10000 as published: HAM10000_metadata.csv with images split over two part folders
# ---------------------------------------------------------------------------------------------------------------

HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def make_ham_official(root: Path, rows=None) -> Path:
    rows = rows or [
        ["HAM_0000118", "ISIC_0027419", "bkl", "histo", "80.0", "male", "scalp"],
        ["HAM_0000118", "ISIC_0025030", "bkl", "histo", "80.0", "male", "scalp"],
        ["HAM_0002730", "ISIC_0026769", "nv", "follow_up", "45.0", "female", "back"],
        ["HAM_0001466", "ISIC_0031633", "mel", "histo", "75.0", "male", "ear"],
        ["HAM_0000001", "ISIC_0029176", "akiec", "histo", "60.0", "male", "face"],
    ]
    for i, row in enumerate(rows):
        part = "HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2"
        write_image(root / part / f"{row[1]}.jpg")
    return write_csv(root / "HAM10000_metadata.csv", HAM_HEADER, rows)


def test_ham10000_official_layout_finds_images_in_both_part_folders(tmp_path):
    make_ham_official(tmp_path)
    records = load_records(tmp_path)  # the folder: detected by its metadata file
    assert len(records) == 5
    recs = by_name(records)
    assert recs["ISIC_0027419.jpg"].path == tmp_path / "HAM10000_images_part_1" / "ISIC_0027419.jpg"
    assert recs["ISIC_0025030.jpg"].path == tmp_path / "HAM10000_images_part_2" / "ISIC_0025030.jpg"
    assert all(r.path.is_file() for r in records)
    assert {n: r.node for n, r in recs.items()} == {
        "ISIC_0027419.jpg": "benign_keratosis",
        "ISIC_0025030.jpg": "benign_keratosis",
        "ISIC_0026769.jpg": "melanocytic_nevus",
        "ISIC_0031633.jpg": "melanoma",
        "ISIC_0029176.jpg": "keratinocyte_intraepithelial_neoplasia",
    }
    assert recs["ISIC_0031633.jpg"].label == "mel"  # the dataset's own wording is kept
    # Two images of lesion HAM_0000118 share a group, so no split can separate them.
    assert recs["ISIC_0027419.jpg"].group == recs["ISIC_0025030.jpg"].group == "HAM_0000118"
    assert {r.modality for r in records} == {"dermoscopic"}
    assert recs["ISIC_0026769.jpg"].metadata["dx_type"] == "follow_up"
    assert recs["ISIC_0026769.jpg"].metadata["localization"] == "back"
    # The CSV itself and a forced layout give the same records.
    assert load_records(tmp_path / "HAM10000_metadata.csv") == records
    assert load_records(tmp_path, layout="ham10000") == records


def test_ham10000_listed_image_missing_is_an_error_naming_it(tmp_path):
    make_ham_official(tmp_path)
    (tmp_path / "HAM10000_images_part_1" / "ISIC_0026769.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="ISIC_0026769"):
        load_records(tmp_path)


def test_ham10000_unknown_dx_names_the_metadata_file(tmp_path):
    make_ham_official(tmp_path, rows=[["HAM_1", "ISIC_1", "xyz_unknown", "histo", "1", "male", "back"]])
    with pytest.raises(UnknownLabelError) as info:
        load_records(tmp_path)
    assert "xyz_unknown" in str(info.value)
    assert "HAM10000_metadata.csv" in str(info.value)
    assert info.value.file == str(tmp_path / "HAM10000_metadata.csv")


# ---------------------------------------------------------------------------------------------------------------
# ISIC Archive, as `isic-cli image download` writes it: metadata.csv beside <isic_id>.jpg files
# ---------------------------------------------------------------------------------------------------------------

def make_isic(root: Path, header: list[str], rows: list[list[str]], images: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for isic_id in images:
        write_image(root / f"{isic_id}.jpg")
    (root / "attribution.txt").write_text("ISIC Archive attribution\n")  # isic-cli writes these too
    (root / "licenses").mkdir()
    (root / "licenses" / "CC-BY.txt").write_text("licence\n")
    return write_csv(root / "metadata.csv", header, rows)


def test_isic_archive_layout_with_a_diagnosis_column(tmp_path):
    header = ["isic_id", "attribution", "copyright_license", "diagnosis", "image_type", "lesion_id", "patient_id"]
    rows = [
        ["ISIC_0000000", "Anonymous", "CC-0", "nevus", "dermoscopic", "IL_0000001", "IP_0000001"],
        ["ISIC_0000001", "Anonymous", "CC-0", "melanoma", "dermoscopic", "IL_0000002", ""],
        ["ISIC_0000002", "Anonymous", "CC-0", "basal cell carcinoma", "clinical: close-up", "", ""],
        ["ISIC_0000003", "Anonymous", "CC-0", "", "dermoscopic", "IL_0000004", ""],  # unlabelled: skipped
        ["ISIC_0000004", "Anonymous", "CC-0", "pigmented benign keratosis", "dermoscopic", "IL_0000005", "IP_0000001"],
    ]
    make_isic(tmp_path, header, rows, [r[0] for r in rows])
    records = load_records(tmp_path)
    recs = by_name(records)
    assert sorted(recs) == ["ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000002.jpg", "ISIC_0000004.jpg"]
    assert {n: r.node for n, r in recs.items()} == {
        "ISIC_0000000.jpg": "melanocytic_nevus",
        "ISIC_0000001.jpg": "melanoma",
        "ISIC_0000002.jpg": "basal_cell_carcinoma",
        "ISIC_0000004.jpg": "benign_keratosis",
    }
    # Group: the patient when known (the stricter grouping), else the lesion, else the image itself.
    assert recs["ISIC_0000000.jpg"].group == recs["ISIC_0000004.jpg"].group == "IP_0000001"
    assert recs["ISIC_0000001.jpg"].group == "IL_0000002"
    assert recs["ISIC_0000002.jpg"].group == "ISIC_0000002"
    assert recs["ISIC_0000000.jpg"].modality == "dermoscopic"
    assert recs["ISIC_0000002.jpg"].modality == "clinical"
    assert all(r.path == tmp_path / r.path.name for r in records)
    assert load_records(tmp_path / "metadata.csv", layout="isic") == records


def test_isic_archive_diagnosis_hierarchy_takes_the_deepest_filled_level(tmp_path):
    header = ["isic_id", "diagnosis_1", "diagnosis_2", "diagnosis_3", "image_type", "lesion_id", "patient_id"]
    rows = [
        ["ISIC_1000000", "Benign", "", "Nevus", "dermoscopic", "", ""],
        ["ISIC_1000001", "Malignant", "", "Melanoma in situ", "dermoscopic", "", ""],
        ["ISIC_1000002", "Malignant", "", "", "dermoscopic", "", ""],  # only the top level is known
    ]
    make_isic(tmp_path, header, rows, [r[0] for r in rows])
    nodes = {r.path.stem: r.node for r in load_records(tmp_path)}
    assert nodes == {
        "ISIC_1000000": "melanocytic_nevus", "ISIC_1000001": "melanoma_in_situ", "ISIC_1000002": "malignant",
    }


def test_isic_archive_errors(tmp_path):
    header = ["isic_id", "diagnosis", "image_type"]
    missing = tmp_path / "missing"
    make_isic(missing, header, [["ISIC_2", "nevus", "dermoscopic"]], images=[])
    with pytest.raises(DatasetLayoutError, match="ISIC_2"):
        load_records(missing)

    unknown = tmp_path / "unknown"
    make_isic(unknown, header, [["ISIC_3", "not a disease", "dermoscopic"]], images=["ISIC_3"])
    with pytest.raises(UnknownLabelError, match="not a disease") as info:
        load_records(unknown)
    assert str(unknown / "metadata.csv") in str(info.value)

    no_label = tmp_path / "no-label"
    make_isic(no_label, ["isic_id", "image_type"], [["ISIC_4", "dermoscopic"]], images=["ISIC_4"])
    with pytest.raises(DatasetLayoutError, match="diagnosis"):
        load_records(no_label)


# ---------------------------------------------------------------------------------------------------------------
# Generic CSV: path,label[,group]
# ---------------------------------------------------------------------------------------------------------------

def test_generic_csv_with_and_without_group(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "sub" / "b.png")
    write_image(tmp_path / "c.jpg")
    grouped = write_csv(tmp_path / "grouped.csv", ["path", "label", "group"], [
        ["imgs/a.png", "Malignant Melanoma", "patient-1"],
        ["imgs/sub/b.png", "seborrheic-keratosis", "patient-1"],
        ["c.jpg", "DF", ""],
    ])
    records = load_records(grouped)
    assert [r.path for r in records] == [tmp_path / "imgs/a.png", tmp_path / "imgs/sub/b.png", tmp_path / "c.jpg"]
    assert [r.node for r in records] == ["melanoma", "seborrheic_keratosis", "dermatofibroma"]
    assert [r.label for r in records] == ["Malignant Melanoma", "seborrheic-keratosis", "DF"]
    assert [r.group for r in records] == ["patient-1", "patient-1", "c.jpg"]  # an empty group: the image itself
    assert all(r.split is None for r in records)

    ungrouped = write_csv(tmp_path / "plain.csv", ["path", "label"], [["imgs/a.png", "nv"], ["c.jpg", "nv"]])
    records = load_records(ungrouped, layout="csv")
    assert [r.group for r in records] == ["imgs/a.png", "c.jpg"]
    assert [r.node for r in records] == ["melanocytic_nevus", "melanocytic_nevus"]


def test_generic_csv_unknown_label_names_the_file_and_suggests(tmp_path):
    path = write_csv(tmp_path / "labels-x.csv", ["path", "label"], [["a.png", "nv"], ["b.png", "melanomma"]])
    with pytest.raises(UnknownLabelError) as info:
        load_records(path)
    message = str(info.value)
    assert "melanomma" in message and str(path) in message
    assert "melanoma" in info.value.suggestions


def test_csv_with_columns_no_adapter_knows(tmp_path):
    path = write_csv(tmp_path / "weird.csv", ["file", "class"], [["a.png", "nv"]])
    with pytest.raises(DatasetLayoutError, match="unrecognised CSV columns"):
        load_records(path)
    with pytest.raises(DatasetLayoutError, match=r"missing column\(s\) \['path', 'label'\]"):
        load_records(path, layout="csv")
    with pytest.raises(DatasetLayoutError, match="unknown layout"):
        load_records(path, layout="kaggle")
    with pytest.raises(DatasetLayoutError, match="no such file"):
        load_records(tmp_path / "nowhere")


def test_extra_label_mapping_is_honoured(tmp_path):
    path = write_csv(tmp_path / "l.csv", ["path", "label"], [["a.png", "clinic code 7"]])
    mapper = LabelMapper(default_taxonomy(), extra={"clinic code 7": "dermatofibroma"})
    assert [r.node for r in load_records(path, mapper=mapper)] == ["dermatofibroma"]


# ---------------------------------------------------------------------------------------------------------------
# Class-per-folder trees
# ---------------------------------------------------------------------------------------------------------------

def test_class_folders(tmp_path):
    write_image(tmp_path / "Malignant_Melanoma" / "m1.png")
    write_image(tmp_path / "Malignant_Melanoma" / "m2.jpg")
    write_image(tmp_path / "nevus" / "deeper" / "n1.png")  # nested folders belong to their top class folder
    write_image(tmp_path / "nevus" / ".hidden.png")  # hidden files are skipped
    (tmp_path / "nevus" / "notes.txt").write_text("not an image")
    records = load_records(tmp_path)
    assert sorted((r.path.relative_to(tmp_path).as_posix(), r.node) for r in records) == [
        ("Malignant_Melanoma/m1.png", "melanoma"),
        ("Malignant_Melanoma/m2.jpg", "melanoma"),
        ("nevus/deeper/n1.png", "melanocytic_nevus"),
    ]
    assert {r.label for r in records} == {"Malignant_Melanoma", "nevus"}
    assert len({r.group for r in records}) == 3  # without lesion ids each image is its own group


def test_class_folder_with_an_unknown_name_is_an_error_naming_the_folder(tmp_path):
    write_image(tmp_path / "melanoma" / "m1.png")
    write_image(tmp_path / "mystery_rash" / "x.png")
    with pytest.raises(UnknownLabelError) as info:
        load_records(tmp_path)
    assert "mystery_rash" in str(info.value)
    assert info.value.file == str(tmp_path / "mystery_rash")


def test_class_folders_without_images_is_an_error(tmp_path):
    (tmp_path / "melanoma").mkdir()
    with pytest.raises(DatasetLayoutError, match="no class sub-folders with images"):
        load_records(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# The dermlens labels.csv layout (the folders under ../shared/data)
# ---------------------------------------------------------------------------------------------------------------

def test_dermlens_labels_csv(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / "images" / name)
    write_csv(tmp_path / "labels.csv",
              ["image", "diagnosis", "diagnosis_fine", "lesion_id", "patient_id", "modality", "split", "age"], [
                  ["images/a.jpg", "nv", "nv_atypical", "L1", "P1", "dermoscopic", "train", "40"],
                  ["images/b.jpg", "nv", "", "L2", "", "dermoscopic", "val", ""],
                  ["images/c.jpg", "mel", "", "", "", "clinical", "test", ""],
                  ["images/d.jpg", "bcc", "", "L4", "P1", "", "train", ""],
              ])
    assert detect_layout(tmp_path) == ("dermlens", tmp_path / "labels.csv")
    recs = by_name(load_records(tmp_path))
    # The finer label wins where there is one (PH2's atypical nevi are not just nevi).
    assert (recs["a.jpg"].node, recs["a.jpg"].label) == ("atypical_nevus", "nv_atypical")
    assert recs["b.jpg"].node == "melanocytic_nevus"
    assert recs["c.jpg"].node == "melanoma"
    assert [recs[n].group for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")] == ["P1", "L2", "images/c.jpg", "P1"]
    assert [recs[n].split for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")] == ["train", "val", "test", "train"]
    assert [recs[n].modality for n in ("a.jpg", "c.jpg", "d.jpg")] == ["dermoscopic", "clinical", "unknown"]
    assert recs["a.jpg"].path == tmp_path / "images" / "a.jpg"
    assert recs["a.jpg"].metadata["age"] == "40"


def test_dermlens_labels_csv_unknown_label_names_the_file(tmp_path):
    path = write_csv(tmp_path / "labels.csv", ["image", "diagnosis"], [["a.jpg", "nv"], ["b.jpg", "zzz"]])
    with pytest.raises(UnknownLabelError, match="zzz") as info:
        load_records(tmp_path)
    assert str(path) in str(info.value)


def test_synthetic_dataset_loads_as_generic_csv(synthetic_labels_csv):
    records = load_records(synthetic_labels_csv.parent)
    assert len(records) == 60
    assert Counter(r.node for r in records) == {
        "melanoma": 12, "melanocytic_nevus": 12, "seborrheic_keratosis": 12, "basal_cell_carcinoma": 12,
        "dermatofibroma": 12,
    }
    assert all(r.path.is_file() for r in records)
    assert {r.modality for r in records} == {"synthetic"}


# ---------------------------------------------------------------------------------------------------------------
# The real data in ../shared/data
# ---------------------------------------------------------------------------------------------------------------

needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "ham10000" / "labels.csv").is_file(),
    reason=f"real data not found at {SHARED_DATA} (../shared/data beside the repository)",
)


@pytest.mark.data
@needs_shared_data
def test_shared_datasets_load_with_the_expected_counts():
    ham = load_records(SHARED_DATA / "ham10000")
    assert len(ham) == 10015
    assert len({r.group for r in ham}) == 7470
    assert Counter(r.label for r in ham) == {
        "nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115,
    }
    assert Counter(r.split for r in ham) == {"train": 7012, "val": 996, "test": 2007}
    assert {r.modality for r in ham} == {"dermoscopic"}
    assert all(r.path.is_file() for r in ham[::500])

    ph2 = load_records(SHARED_DATA / "ph2")
    assert len(ph2) == 200
    assert Counter(r.node for r in ph2) == {"common_nevus": 80, "atypical_nevus": 80, "melanoma": 40}
    assert all(r.split is None for r in ph2)

    sd198 = load_records(SHARED_DATA / "sd198_clinical")
    assert len(sd198) == 535
    # 25 diagnoses; the finer labels split melanoma and vascular lesions once more (27 nodes).
    assert len({r.node for r in sd198}) == 27
    tax = default_taxonomy()
    assert sum(tax.ancestor_at_level(r.node, 1) == "malignant" for r in sd198) == 41 + 20 + 21  # mel, bcc, ak
    assert {r.modality for r in sd198} == {"clinical"}
    assert all(r.path.is_file() for r in sd198[::50])


@pytest.mark.data
@needs_shared_data
def test_ham10000_fixed_split_is_kept_as_shipped():
    ham = load_records(SHARED_DATA / "ham10000")
    parts = grouped_split(ham, seed=123)  # the seed must not matter: the dataset's own split is used
    assert {name: len(part) for name, part in parts.items()} == {"train": 7012, "val": 996, "test": 2007}
    for name, part in parts.items():
        assert all(r.split == name for r in part)
    groups = {name: {r.group for r in part} for name, part in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
