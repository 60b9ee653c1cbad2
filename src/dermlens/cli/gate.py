"""``dermlens gate fit``: fit the photo gate (skin, quality, out-of-distribution) beside a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="The photo gate: `dermlens gate fit --model DIR` fits it beside a model.")


@app.command("fit")
def fit(
    model: Annotated[Optional[Path], typer.Option(help="Model folder; default the bundled model. The gate is written into it.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option(help="Dataset folders (labels.csv layout) of real skin photos, both modalities; repeat. Default: every dataset under ../shared/data.")] = None,
    per_dataset: Annotated[int, typer.Option(min=20, help="Real skin photos per dataset (from its training split).")] = 200,
    taxonomy: Annotated[Optional[Path], typer.Option(help="Taxonomy tree file the model was trained with; default the packaged one.")] = None,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a gate the model already has (otherwise refused).")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
):
    """Fit the skin head and the out-of-distribution model on the model's embedding, choose the quality thresholds
    on data, and save them beside the model (gate.safetensors + config.json["gate"])."""
    from dermlens.gate import GATE_FILE
    from dermlens.gate.fit import default_data_dirs, fit_gate
    from dermlens.predict import Predictor, bundled_model_dir
    from dermlens.taxonomy.tree import Taxonomy

    model_dir = model or bundled_model_dir()
    if (model_dir / GATE_FILE).exists() and not overwrite:
        raise typer.BadParameter(f"{model_dir} already has a gate; pass --overwrite to fit it again", param_hint="'--model'")
    folders = list(data) if data else default_data_dirs()
    if not folders:
        raise typer.BadParameter("no datasets found under ../shared/data; pass --data FOLDER", param_hint="'--data'")
    predictor = Predictor(model_dir, taxonomy=Taxonomy.load(taxonomy) if taxonomy else None, gate=False)
    gate, info = fit_gate(predictor, folders, per_dataset=per_dataset, seed=seed, progress=progress)
    gate.save(predictor.model_dir, predictor.config)
    typer.echo(json.dumps({"thresholds": gate.thresholds.to_dict(), **info}, indent=2))
    typer.echo(f"gate saved in {predictor.model_dir} ({info['fit_seconds']} s)", err=True)
