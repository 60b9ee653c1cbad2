"""The disease taxonomy: a tree whose leaves are diseases and whose inner nodes group them clinically.

Esteva et al. (Nature 2017) train on fine-grained classes chosen from such a tree and sum the predicted
probabilities back up it, so that one model answers both "which disease?" and "malignant or benign?". This module
holds the tree itself; ``partition`` chooses training classes from it and ``infer`` sums probabilities up it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import re
import unicodedata
from dataclasses import dataclass
from os import PathLike
from typing import Any, Iterator, Mapping

import yaml

__all__ = ["Node", "Taxonomy", "default_taxonomy", "normalize_label"]

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def normalize_label(text: str) -> str:
    """Reduce a label to the form in which labels are compared.

    Lower-case, accents removed ("café" -> "cafe"), apostrophes dropped ("Bowen's" -> "bowens"), and every run of
    other non-alphanumeric characters (spaces, hyphens, underscores, slashes...) turned into a single "_", with
    none at either end. So "Malignant_Melanoma", "malignant melanoma" and " Malignant-Melanoma " all compare equal.
    """
    decomposed = unicodedata.normalize("NFKD", str(text))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    ascii_text = _APOSTROPHES.sub("", ascii_text)
    return _SEPARATORS.sub("_", ascii_text).strip("_")

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_NODE_KEYS = {"id", "name", "synonyms", "children"}


@dataclass(frozen=True)
class Node:
    """One taxonomy node. Immutable so that a shared (cached) taxonomy cannot be changed behind a model's back."""

    id: str
    name: str
    synonyms: tuple[str, ...]
    parent: str | None
    children: tuple[str, ...]


class Taxonomy:
    """An immutable rooted tree of ``Node``s, addressed by node id.

    Node order everywhere (iteration, ``leaves``, ``descendants``, ``level_nodes``) is pre-order with children in
    file order, so that training classes and output columns come out in the same order on every machine.
    """

    def __init__(self, version: str, nodes: Mapping[str, Node], root: str):
        """Use ``from_dict`` or ``load``; this constructor trusts that ``nodes`` is a valid tree in pre-order."""
        self.version = version
        self.root = root
        self._nodes: dict[str, Node] = dict(nodes)
        self._depth: dict[str, int] = {}
        for node_id, node in self._nodes.items():  # pre-order: a parent's depth is known before its children's
            self._depth[node_id] = 0 if node.parent is None else self._depth[node.parent] + 1

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Taxonomy":
        """Build and validate a taxonomy from ``{"version": str, "tree": <node>}``.

        A node is ``{"id", "name", "synonyms"?, "children"?}``. Every mistake a hand-edited YAML file invites is
        rejected with the path of the offending node: a missing or non-snake_case id, a repeated id, a missing
        name, a misspelt key (which would otherwise silently drop a synonym list) and, above all, one name or
        synonym used for two nodes — that would make dataset labels map ambiguously.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"taxonomy must be a mapping with 'version' and 'tree', got {type(d).__name__}")
        unknown = set(d) - {"version", "tree"}
        if unknown:
            raise ValueError(f"taxonomy has unknown top-level keys {sorted(unknown)}; expected 'version' and 'tree'")
        version = d.get("version", "unversioned")
        if not isinstance(version, str) or not version.strip():
            raise ValueError(f"taxonomy 'version' must be a non-empty string, got {version!r}")
        if "tree" not in d:
            raise ValueError("taxonomy has no 'tree' (the root node)")

        nodes: dict[str, Node] = {}
        label_owner: dict[str, tuple[str, str]] = {}  # normalised label -> (node id, original text)

        def visit(raw: Any, parent: str | None, path: str) -> str:
            if not isinstance(raw, Mapping):
                raise ValueError(f"taxonomy node at {path} must be a mapping, got {type(raw).__name__}")
            bad_keys = set(raw) - _NODE_KEYS
            if bad_keys:
                raise ValueError(
                    f"taxonomy node at {path} has unknown keys {sorted(bad_keys)}; allowed: {sorted(_NODE_KEYS)}"
                )
            node_id = raw.get("id")
            if not isinstance(node_id, str) or not _SNAKE_CASE.match(node_id):
                raise ValueError(f"taxonomy node at {path} has id {node_id!r}; ids must be snake_case strings")
            path = f"{path} > {node_id}" if parent is not None else node_id
            if node_id in nodes:
                raise ValueError(f"taxonomy node id {node_id!r} is used twice (second time at {path})")
            name = raw.get("name")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"taxonomy node {path} needs a non-empty 'name'")
            synonyms = raw.get("synonyms") or []
            if not isinstance(synonyms, list) or not all(isinstance(s, str) and s.strip() for s in synonyms):
                raise ValueError(f"taxonomy node {path}: 'synonyms' must be a list of non-empty strings")
            children_raw = raw.get("children") or []
            if not isinstance(children_raw, list):
                raise ValueError(f"taxonomy node {path}: 'children' must be a list")

            for text in (node_id, name, *synonyms):
                key = normalize_label(text)
                if not key:
                    raise ValueError(f"taxonomy node {path}: label {text!r} has no letters or digits")
                owner = label_owner.get(key)
                if owner is not None and owner[0] != node_id:
                    raise ValueError(
                        f"taxonomy label {text!r} of node {node_id!r} collides with {owner[1]!r} of node "
                        f"{owner[0]!r} (both normalise to {key!r}); a label must name one node only"
                    )
                label_owner.setdefault(key, (node_id, text))

            # Reserve the slot now so that the dict keeps pre-order; children are filled in afterwards.
            nodes[node_id] = Node(node_id, name.strip(), tuple(synonyms), parent, ())
            child_ids = tuple(visit(child, node_id, path) for child in children_raw)
            nodes[node_id] = Node(node_id, name.strip(), tuple(synonyms), parent, child_ids)
            return node_id

        root = visit(d["tree"], None, "tree")
        return cls(version, nodes, root)

    @classmethod
    def load(cls, path: str | PathLike[str] | None = None) -> "Taxonomy":
        """Load a YAML taxonomy; ``None`` loads the one shipped with the package. Errors name the file."""
        if path is None:
            resource = importlib.resources.files("dermlens.taxonomy").joinpath("tree.yaml")
            source, text = "dermlens/taxonomy/tree.yaml", resource.read_text(encoding="utf-8")
        else:
            with open(path, encoding="utf-8") as handle:
                source, text = str(path), handle.read()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from exc

    # ------------------------------------------------------------------ lookup
    def __getitem__(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except (KeyError, TypeError):
            raise KeyError(f"no taxonomy node {node_id!r} (taxonomy {self.version})") from None

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and node_id in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        return f"Taxonomy(version={self.version!r}, nodes={len(self)}, fingerprint={self.fingerprint()!r})"

    def children(self, node_id: str) -> tuple[str, ...]:
        return self[node_id].children

    def parent(self, node_id: str) -> str | None:
        return self[node_id].parent

    def depth(self, node_id: str) -> int:
        """Edges from the root: 0 for the root, 1 for benign/malignant/non_neoplastic, 2 for the nine classes."""
        self[node_id]
        return self._depth[node_id]

    def ancestors(self, node_id: str) -> list[str]:
        """Ancestors nearest first, ending at the root; the node itself is not included."""
        result = []
        current = self[node_id].parent
        while current is not None:
            result.append(current)
            current = self._nodes[current].parent
        return result

    def descendants(self, node_id: str, include_self: bool = True) -> list[str]:
        """Subtree in pre-order."""
        result: list[str] = []
        stack = [node_id] if include_self else list(reversed(self[node_id].children))
        self[node_id]  # raise KeyError for an unknown id even when include_self is True
        while stack:
            current = stack.pop()
            result.append(current)
            stack.extend(reversed(self._nodes[current].children))
        return result

    def is_leaf(self, node_id: str) -> bool:
        return not self[node_id].children

    def leaves(self) -> list[str]:
        return [n for n, node in self._nodes.items() if not node.children]

    def level_nodes(self, level: int) -> list[str]:
        """Nodes at ``level`` edges below the root, in pre-order (empty beyond the deepest level)."""
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        return [n for n in self._nodes if self._depth[n] == level]

    def ancestor_at_level(self, node_id: str, level: int) -> str | None:
        """The node's ancestor (or itself) at ``level``; ``None`` when the node lies above that level.

        This is how a fine diagnosis is scored at Esteva's coarser levels: melanoma -> level 1 "malignant",
        level 2 "malignant_melanocytic".
        """
        if level < 0:
            raise ValueError(f"level must be >= 0, got {level}")
        depth = self.depth(node_id)
        if depth < level:
            return None
        current = node_id
        for _ in range(depth - level):
            current = self._nodes[current].parent  # type: ignore[assignment]
        return current

    # ------------------------------------------------------------------ identity and display
    def fingerprint(self) -> str:
        """Short hash of the tree's shape (ids, parents and sibling order), not of names or synonyms.

        A trained model stores this to detect that it is being used with a different tree (its output columns
        would then mean other nodes). Adding a synonym or fixing a display name does not change it, so such edits
        do not invalidate shipped weights.
        """
        structure = [[n, node.parent] for n, node in self._nodes.items()]
        digest = hashlib.sha256(json.dumps(structure, separators=(",", ":")).encode("utf-8")).hexdigest()
        return digest[:16]

    def render(self, counts: Mapping[str, int] | None = None) -> str:
        """Indented text tree of ids and display names, with image counts if given.

        With counts each line shows the subtree total and, where an inner node has images labelled exactly at it,
        how many of those ("here"), because those images are the ones partitioning may keep as a class of their own.
        """
        totals: dict[str, int] = {}
        if counts is not None:
            unknown = sorted(k for k in counts if k not in self._nodes)
            if unknown:
                raise KeyError(f"counts name nodes not in the taxonomy: {unknown}")
            for n in reversed(list(self._nodes)):  # reverse pre-order: children before parents
                totals[n] = int(counts.get(n, 0)) + sum(totals[c] for c in self._nodes[n].children)
        lines = []
        for n, node in self._nodes.items():
            line = f"{'  ' * self._depth[n]}{n}  {node.name}"
            if counts is not None:
                own = int(counts.get(n, 0))
                extra = f", {own} here" if node.children and own else ""
                line += f"  [{totals[n]}{extra}]"
            lines.append(line)
        return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The packaged taxonomy, parsed once per process (it is immutable, so sharing it is safe)."""
    return Taxonomy.load()
