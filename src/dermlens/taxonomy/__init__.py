"""The disease taxonomy that dermlens classifies over, after Esteva et al. (Nature 2017).

``tree`` holds the taxonomy (packaged in ``tree.yaml``), ``labels`` maps dataset diagnosis strings onto its
nodes, ``partition`` chooses training classes from labelled image counts and ``infer`` sums class probabilities
back up the tree (:class:`TreeSum`, the one tree sum) and ``triage`` holds the one referral rule
(:class:`OperatingPoint`). Pure Python plus PyYAML and numpy: importing it must stay cheap and torch-free so that data
tools and the CLI can use it without loading a deep-learning framework.
"""

from dermlens.taxonomy.infer import NodeProbabilities, TreeSum, node_probabilities, tree_sum_matrix
from dermlens.taxonomy.labels import LabelMapper, UnknownLabelError, UnknownLabelsError
from dermlens.taxonomy.partition import ClassAssignment, TrainingClass, partition
from dermlens.taxonomy.tree import Node, Taxonomy, default_taxonomy, normalize_label
from dermlens.taxonomy.triage import OperatingPoint, Triage, refers

__all__ = [
    "Node",
    "Taxonomy",
    "default_taxonomy",
    "LabelMapper",
    "UnknownLabelError",
    "UnknownLabelsError",
    "normalize_label",
    "TrainingClass",
    "partition",
    "ClassAssignment",
    "NodeProbabilities",
    "node_probabilities",
    "tree_sum_matrix",
    "TreeSum",
    "OperatingPoint",
    "Triage",
    "refers",
]
