"""The taxonomy shipped in dermlens/taxonomy/tree.yaml: shape, coverage of our datasets' labels, consistency."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dermlens.taxonomy import UnknownLabelError, normalize_label, partition

NINE_CLASSES = {
    "malignant": ["malignant_melanocytic", "malignant_epidermal", "malignant_dermal", "cutaneous_lymphoma"],
    "benign": ["benign_melanocytic", "benign_epidermal", "benign_dermal"],
    "non_neoplastic": ["inflammatory", "genodermatoses"],
}

# node id -> expected parent
REQUIRED_PARENTS = {
    "melanoma": "malignant_melanocytic",
    "superficial_spreading_melanoma": "melanoma",
    "lentigo_maligna_melanoma": "melanoma",
    "nodular_melanoma": "melanoma",
    "acral_lentiginous_melanoma": "melanoma",
    "melanoma_in_situ": "melanoma",
    "melanocytic_nevus": "benign_melanocytic",
    "common_nevus": "melanocytic_nevus",
    "atypical_nevus": "melanocytic_nevus",
    "congenital_nevus": "melanocytic_nevus",
    "blue_nevus": "melanocytic_nevus",
    "spitz_nevus": "melanocytic_nevus",
    "nevus_spilus": "melanocytic_nevus",
    "benign_keratosis": "benign_epidermal",
    "seborrheic_keratosis": "benign_keratosis",
    "solar_lentigo": "benign_keratosis",
    "lichen_planus_like_keratosis": "benign_keratosis",
    "basal_cell_carcinoma": "malignant_epidermal",
    "squamous_cell_carcinoma": "malignant_epidermal",
    "keratinocyte_intraepithelial_neoplasia": "malignant_epidermal",
    "actinic_keratosis": "keratinocyte_intraepithelial_neoplasia",
    "bowen_disease": "keratinocyte_intraepithelial_neoplasia",
    "dermatofibroma": "benign_dermal",
    "vascular_lesion": "benign_dermal",
    "angioma": "vascular_lesion",
    "angiokeratoma": "vascular_lesion",
    "pyogenic_granuloma": "vascular_lesion",
    "hemorrhage": "vascular_lesion",
    "dermatofibrosarcoma_protuberans": "malignant_dermal",
    "kaposi_sarcoma": "malignant_dermal",
    "merkel_cell_carcinoma": "malignant_dermal",
    "mycosis_fungoides": "cutaneous_lymphoma",
    "ichthyosis": "genodermatoses",
    "keratosis_pilaris": "genodermatoses",
}
REQUIRED_IDS = {"keloid", "cutaneous_horn", "infections"}

# SD-198 folder name -> node (and the ancestor it must sit under)
SD198 = {
    "Acne_Vulgaris": "acne_vulgaris", "Actinic_Keratosis": "actinic_keratosis",
    "Allergic_Contact_Dermatitis": "allergic_contact_dermatitis", "Angioma": "angioma",
    "Atopic_Dermatitis": "atopic_dermatitis", "Basal_Cell_Carcinoma": "basal_cell_carcinoma",
    "Cellulitis": "cellulitis", "Cutaneous_Horn": "cutaneous_horn", "Dermatofibroma": "dermatofibroma",
    "Eczema": "eczema", "Herpes_Simplex_Virus": "herpes_simplex",
    "Hidradenitis_Suppurativa": "hidradenitis_suppurativa", "Ichthyosis": "ichthyosis", "Keloid": "keloid",
    "Keratosis_Pilaris": "keratosis_pilaris", "Lentigo_Maligna_Melanoma": "lentigo_maligna_melanoma",
    "Lichen_Planus": "lichen_planus", "Malignant_Melanoma": "melanoma", "Nevus_Spilus": "nevus_spilus",
    "Onychomycosis": "onychomycosis", "Pityriasis_Rosea": "pityriasis_rosea", "Psoriasis": "psoriasis",
    "Pyogenic_Granuloma": "pyogenic_granuloma", "Rosacea": "rosacea",
    "Seborrheic_Dermatitis": "seborrheic_dermatitis", "Tinea_Corporis": "tinea_corporis", "Xerosis": "xerosis",
}
INFECTIONS = {"cellulitis", "herpes_simplex", "tinea_corporis", "onychomycosis"}

HAM10000 = {
    "akiec": "keratinocyte_intraepithelial_neoplasia", "bkl": "benign_keratosis", "nv": "melanocytic_nevus",
    "mel": "melanoma", "bcc": "basal_cell_carcinoma", "df": "dermatofibroma", "vasc": "vascular_lesion",
}
PH2 = {"nv_common": "common_nevus", "common nevus": "common_nevus", "nv_atypical": "atypical_nevus",
       "atypical nevus": "atypical_nevus", "nv": "melanocytic_nevus", "mel": "melanoma", "melanoma": "melanoma"}
ISIC = {
    "nevus": "melanocytic_nevus", "melanoma": "melanoma", "seborrheic keratosis": "seborrheic_keratosis",
    "basal cell carcinoma": "basal_cell_carcinoma", "actinic keratosis": "actinic_keratosis",
    "squamous cell carcinoma": "squamous_cell_carcinoma", "pigmented benign keratosis": "benign_keratosis",
    "dermatofibroma": "dermatofibroma", "vascular lesion": "vascular_lesion", "solar lentigo": "solar_lentigo",
    "lentigo NOS": "benign_keratosis", "lichenoid keratosis": "lichen_planus_like_keratosis",
    "angioma": "angioma", "angiokeratoma": "angiokeratoma", "pyogenic granuloma": "pyogenic_granuloma",
    "hemorrhage": "hemorrhage", "atypical melanocytic proliferation": "atypical_melanocytic_proliferation",
    "lentigo simplex": "lentigo_simplex", "cafe-au-lait macule": "cafe_au_lait_macule",
    "melanoma metastasis": "melanoma_metastasis", "verruca": "verruca", "scar": "scar",
    "ak": "actinic_keratosis",
}


def test_top_levels(taxonomy):
    assert taxonomy.root == "root"
    assert taxonomy.version == "2026.11-2"
    assert set(taxonomy.children("root")) == set(NINE_CLASSES)
    for coarse, fine in NINE_CLASSES.items():
        assert set(taxonomy.children(coarse)) == set(fine)
    assert set(taxonomy.level_nodes(2)) == {n for fine in NINE_CLASSES.values() for n in fine}
    assert taxonomy.ancestor_at_level("melanoma", 1) == "malignant"
    assert taxonomy.ancestor_at_level("melanoma", 2) == "malignant_melanocytic"
    assert taxonomy.ancestor_at_level("benign", 2) is None


def test_required_nodes_sit_where_expected(taxonomy):
    for node_id, parent in REQUIRED_PARENTS.items():
        assert node_id in taxonomy, node_id
        assert taxonomy.parent(node_id) == parent, node_id
    assert REQUIRED_IDS <= set(taxonomy)
    assert taxonomy.parent("infections") == "inflammatory"
    for node_id in INFECTIONS:
        assert "infections" in taxonomy.ancestors(node_id), node_id
    assert 80 <= len(taxonomy) <= 600


def test_every_sd198_condition_maps(taxonomy, mapper):
    for folder, node_id in SD198.items():
        assert mapper.map(folder) == node_id, folder
        assert mapper.map(folder.lower()) == node_id  # the snake_case `diagnosis` column spelling
    assert taxonomy.ancestor_at_level(mapper.map("Ichthyosis"), 2) == "genodermatoses"
    assert taxonomy.ancestor_at_level(mapper.map("Keratosis_Pilaris"), 2) == "genodermatoses"


@pytest.mark.parametrize("table", [HAM10000, PH2, ISIC], ids=["ham10000", "ph2", "isic"])
def test_dataset_codes_map(mapper, table):
    for label, node_id in table.items():
        assert mapper.map(label) == node_id, label


def test_unknown_label_suggests_the_close_node(mapper):
    with pytest.raises(UnknownLabelError) as info:
        mapper.map("melanom", file="ham10000/labels.csv")
    message = str(info.value)
    assert "'melanom'" in message and "ham10000/labels.csv" in message
    assert info.value.suggestions[0] == "melanoma"


def test_ids_are_snake_case_and_labels_unambiguous(taxonomy):
    owner = {}
    for node_id in taxonomy:
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", node_id), node_id
        node = taxonomy[node_id]
        assert node.name.strip(), node_id
        for text in (node.id, node.name, *node.synonyms):
            key = normalize_label(text)
            assert owner.setdefault(key, node_id) == node_id, f"{text!r} names {owner[key]} and {node_id}"


def test_render_lists_every_node(taxonomy):
    text = taxonomy.render({"melanoma": 3, "nodular_melanoma": 2})
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == list(taxonomy)
    assert "  Melanoma  [5, 3 here]" in text


def test_ham10000_partition_keeps_vague_labels_apart(taxonomy, mapper):
    counts = {mapper.map(code): n for code, n in
              {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}.items()}
    classes = partition(taxonomy, counts, 1000)
    assert {(c.node, c.count) for c in classes} == {
        ("melanocytic_nevus", 6705), ("melanoma", 1113), ("benign_keratosis", 1099), ("benign_dermal", 257),
        ("malignant_epidermal", 841)}


def test_importing_the_package_does_not_import_torch():
    code = "import sys, dermlens.taxonomy; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.data
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not found at {DATA}")
def test_every_label_in_the_real_datasets_maps(mapper):
    columns = {"ham10000": ["diagnosis"], "ph2": ["diagnosis", "diagnosis_fine"],
               "sd198_clinical": ["diagnosis", "diagnosis_fine"]}
    for dataset, names in columns.items():
        path = DATA / dataset / "labels.csv"
        with open(path, newline="") as handle:
            labels = {row[name] for row in csv.DictReader(handle) for name in names}
        for label in labels:
            mapper.map(label, file=str(path))
