"""Mapping the diagnosis strings found in datasets onto taxonomy nodes.

Every dataset spells diagnoses its own way (HAM10000 ``akiec``, PH2 ``nv_atypical``, SD-198 folder names such as
``Malignant_Melanoma``, ISIC Archive free text such as ``pigmented benign keratosis``). Rather than keep one
lookup table per dataset, every node of the taxonomy carries its synonyms, and all strings are compared in a
normalised form so that case, spacing, hyphens, accents and apostrophes never cause a miss.
"""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from dermlens.taxonomy.tree import Taxonomy, normalize_label

__all__ = ["UnknownLabelError", "UnknownLabelsError", "LabelMapper"]

class UnknownLabelError(ValueError):
    """A dataset label that no taxonomy node (nor the caller's extra mapping) knows.

    Carries the label, the file it came from and near matches, so that the person fixing a dataset sees at once
    whether it is a typo (add nothing, fix the file) or a new diagnosis (add a synonym or an ``extra`` mapping).
    """

    def __init__(self, label: str, file: str | None = None, suggestions: list[str] | None = None):
        self.label = label
        self.file = file
        self.suggestions = list(suggestions or [])
        where = f" in {file}" if file else ""
        if self.suggestions:
            hint = "; closest known names: " + ", ".join(repr(s) for s in self.suggestions)
        else:
            hint = "; no known name is close"
        super().__init__(
            f"unknown diagnosis label {label!r}{where}{hint}. "
            "Add it as a synonym in the taxonomy or pass it in LabelMapper(extra={label: node_id})."
        )

    def __reduce__(self):  # keep the error picklable (it crosses DataLoader worker processes)
        return (type(self), (self.label, self.file, self.suggestions))


class UnknownLabelsError(ValueError):
    """Several dataset labels that no taxonomy node knows, reported together (see ``LabelMapper.map_all``).

    ``errors`` holds one ``UnknownLabelError`` per distinct unknown label, in first-seen order, so that whoever fixes
    the taxonomy sees every gap in one run instead of one per run.
    """

    def __init__(self, errors: list[UnknownLabelError], file: str | None = None):
        self.errors = list(errors)
        self.file = file
        self.labels = [e.label for e in self.errors]
        where = f" in {file}" if file else ""
        lines = []
        for e in self.errors:
            hint = ", ".join(repr(s) for s in e.suggestions) if e.suggestions else "no known name is close"
            lines.append(f"  {e.label!r}: closest known names: {hint}")
        super().__init__(
            f"{len(self.errors)} unknown diagnosis label(s){where}:\n" + "\n".join(lines) + "\n"
            "Add them as synonyms in the taxonomy or pass them in LabelMapper(extra={label: node_id})."
        )

    def __reduce__(self):
        return (type(self), (self.errors, self.file))


class LabelMapper:
    """Turns dataset labels into taxonomy node ids.

    ``extra`` maps dataset-specific labels to node ids and takes precedence over the taxonomy's own names, because a
    caller who states what a code means in their dataset knows better than a general synonym list (e.g. a dataset
    whose ``ak`` covers Bowen's disease too could map it to ``keratinocyte_intraepithelial_neoplasia``).
    """

    def __init__(self, taxonomy: "Taxonomy", extra: Mapping[str, str] | None = None):
        self.taxonomy = taxonomy
        # normalised text -> (node id, a human-readable spelling of that text, for suggestions)
        self._lookup: dict[str, tuple[str, str]] = {}
        for node_id in taxonomy:
            node = taxonomy[node_id]
            for text in (node.id, node.name, *node.synonyms):
                key = normalize_label(text)
                known = self._lookup.get(key)
                if known is not None and known[0] != node_id:
                    # Taxonomy.from_dict rejects such trees; this guards hand-built Taxonomy subclasses.
                    raise ValueError(f"label {text!r} names both {known[0]!r} and {node_id!r}")
                if known is None:
                    self._lookup[key] = (node_id, text)
        for label, node_id in (extra or {}).items():
            if node_id not in taxonomy:
                raise ValueError(
                    f"extra label mapping {label!r} -> {node_id!r}: no taxonomy node {node_id!r}"
                )
            key = normalize_label(label)
            if not key:
                raise ValueError(f"extra label mapping has an empty label {label!r}")
            self._lookup[key] = (node_id, label)

    def map(self, label: str, file: str | None = None) -> str:
        """Return the node id for ``label``; ``file`` only serves the error message."""
        key = normalize_label(label) if label is not None else ""
        hit = self._lookup.get(key) if key else None
        if hit is None:
            raise UnknownLabelError(str(label), file, self._suggest(key))
        return hit[0]

    def map_all(self, labels: Iterable[str], file: str | None = None) -> dict[str, str]:
        """Map every label at once: ``{label: node id}`` for each distinct label, in first-seen order.

        Unlike ``map``, which stops at the first unknown label, this raises one ``UnknownLabelsError`` listing every
        unknown label with its closest known names.
        """
        mapped: dict[str, str] = {}
        errors: dict[str, UnknownLabelError] = {}
        for label in labels:
            text = str(label)
            if text in mapped or text in errors:
                continue
            try:
                mapped[text] = self.map(label, file)
            except UnknownLabelError as error:
                errors[text] = error
        if errors:
            raise UnknownLabelsError(list(errors.values()), file)
        return mapped

    def known_names(self) -> list[str]:
        """Every accepted spelling (ids, names, synonyms, extra labels), sorted, one per normalised form."""
        return sorted({text for _, text in self._lookup.values()}, key=str.lower)

    def _suggest(self, key: str, limit: int = 5) -> list[str]:
        if not key:
            return []
        # One suggestion per node: "melanoma" and "melanomas" side by side would crowd out other candidates.
        close = difflib.get_close_matches(key, list(self._lookup), n=len(self._lookup), cutoff=0.6)
        suggestions: dict[str, str] = {}
        for k in close:
            node_id, text = self._lookup[k]
            suggestions.setdefault(node_id, text)
        return list(suggestions.values())[:limit]
