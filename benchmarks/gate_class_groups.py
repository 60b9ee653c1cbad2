"""Group the everyday photos' ImageNet classes into kinds (dogs, birds, food, vehicles, ...) for the gate's
leave-classes-out validation: ``benchmarks/gate_class_groups.csv`` (committed; this script remakes it).

    apt-get install wordnet-base      # WordNet 3.0, whose noun synsets ImageNet's wnids are
    python benchmarks/gate_class_groups.py [--photos ../shared/data/nonskin/photos.csv]

A class's group is the first of ``GROUPS`` any of whose anchor synsets is among its hypernyms (all paths up the
noun hierarchy, so a grouse is a bird although WordNet's first path calls it game). Holding out a whole group
estimates how the gate does on a kind of photo it never saw, which one photo per class held out would not.
"""
from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
OUT = Path(__file__).with_name("gate_class_groups.csv")
GROUPS = (  # (group, anchor synsets by their first lemma): the first group with an anchor among the hypernyms wins
    ("dogs", ("dog",)),
    ("other_mammals", ("mammal",)),
    ("birds", ("bird",)),
    ("reptiles_amphibians", ("reptile", "amphibian")),
    ("fish_sea_life", ("fish", "crustacean", "mollusk", "echinoderm", "coelenterate", "worm")),
    ("insects_spiders", ("insect", "arachnid", "arthropod")),
    ("food", ("food", "foodstuff", "nutriment")),
    ("plants_nature", ("plant", "plant_part", "fungus", "geological_formation", "natural_object")),
    ("vehicles", ("conveyance", "vehicle")),
    ("buildings_structures", ("structure", "establishment", "area")),
    ("textiles_coverings", ("clothing", "covering", "fabric", "cloth")),
    ("furniture_containers", ("furnishing", "container")),
    ("tools_utensils", ("implement", "utensil")),
    ("devices_equipment", ("device", "equipment", "instrumentality", "appliance", "consumer_goods")),
    ("furniture_containers", ("artifact", "entity")),  # the few left (a teddy, toilet tissue, a bubble)
)


def read_hypernyms(path: Path = WORDNET_NOUNS) -> dict[str, tuple[str, list[str]]]:
    """offset -> (first lemma, hypernym offsets) from WordNet's data.noun."""
    synsets = {}
    with open(path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            parts = line.split()
            words = int(parts[3], 16)
            k = 4 + 2 * words
            pointers = parts[k + 1: k + 1 + 4 * int(parts[k])]
            up = [pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"]
            synsets[parts[0]] = (parts[4], up)
    return synsets


def group_of(wnid: str, synsets) -> str:
    seen, todo = set(), [wnid.lstrip("n")]
    while todo:
        offset = todo.pop()
        if offset not in seen:
            seen.add(offset)
            todo += synsets[offset][1]
    names = {synsets[o][0] for o in seen}
    return next(group for group, anchors in GROUPS if names & set(anchors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/nonskin/photos.csv"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not WORDNET_NOUNS.is_file():
        raise SystemExit(f"{WORDNET_NOUNS}: WordNet is not installed (apt-get install wordnet-base)")
    synsets = read_hypernyms()
    rows = list(csv.DictReader(open(args.photos)))
    out = [{"wnid": r["wnid"], "imagenet_class": r["imagenet_class"], "group": group_of(r["wnid"], synsets)} for r in rows]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, ["wnid", "imagenet_class", "group"])
        writer.writeheader()
        writer.writerows(out)
    print(dict(Counter(r["group"] for r in out)), f"-> {args.out}")


if __name__ == "__main__":
    main()
