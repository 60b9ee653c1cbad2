"""``dermlens taxonomy show | partition``: the disease tree, and the training classes it makes of a dataset."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from dermlens.cli.common import MaxClassSizeOption

app = typer.Typer(no_args_is_help=True, help="Show the disease taxonomy and how a dataset partitions it.")


@app.command("show")
def show():
    """Print the tree with node ids and display names."""
    from dermlens.taxonomy import default_taxonomy

    tax = default_taxonomy()
    typer.echo(f"taxonomy {tax.version} ({len(tax)} nodes, fingerprint {tax.fingerprint()})")
    typer.echo(tax.render())


@app.command("partition")
def partition_command(
    data: Annotated[list[Path], typer.Option(exists=True, help="Dataset whose labels are counted; repeat to pool several.")],
    max_class_size: MaxClassSizeOption = None,
    split: Annotated[Optional[str], typer.Option(help="Count only this fixed split.")] = None,
):
    """Print the training classes the partitioning algorithm makes from a dataset, with image counts."""
    from dermlens.data.datasets import load_pooled
    from dermlens.data.splits import in_split
    from dermlens.taxonomy import default_taxonomy, partition
    from dermlens.taxonomy.partition import esteva_max_class_size

    tax = default_taxonomy()
    records = in_split(load_pooled(data), split, " + ".join(map(str, data)))
    if max_class_size is None:
        max_class_size = esteva_max_class_size(len(records))
    classes = partition(tax, Counter(r.node for r in records), max_class_size)
    typer.echo(f"{len(classes)} training classes from {len(records)} images (max_class_size {max_class_size:g}):")
    for c in classes:
        suffix = " (images labelled at this node only)" if c.own_only else ""
        typer.echo(f"  {c.node:<45} {c.count:>6}  {tax[c.node].name}{suffix}")
