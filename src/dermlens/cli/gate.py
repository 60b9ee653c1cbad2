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
    data: Annotated[Optional[list[Path]], typer.Option(help="Dataset folders (labels.csv layout) of real skin photos, both modalities; repeat. Default: HAM10000, ISIC 2017, DermNet and PAD-UFES-20 under ../shared/data (PH2 and SD-198 are kept for testing).")] = None,
    non_skin: Annotated[Optional[Path], typer.Option(help="Folder of everyday photos that are not skin (photos.csv with image, imagenet_class, wnid). Default: ../shared/data/nonskin when present.")] = None,
    wide_field: Annotated[Optional[Path], typer.Option(help="Folder of wide-field skin photos (a back, an arm, several spots), e.g. made by benchmarks/screen_benchmark.py --split train; without it the gate has no wide-field check.")] = None,
    appearance: Annotated[bool, typer.Option("--appearance/--no-appearance", help="The heads also read the photo's colour and texture statistics.")] = False,
    per_dataset: Annotated[int, typer.Option(min=20, help="Real skin photos per dataset and part (training split for the heads, validation split for the thresholds).")] = 400,
    taxonomy: Annotated[Optional[Path], typer.Option(help="Taxonomy tree file the model was trained with; default the packaged one.")] = None,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a gate the model already has (otherwise refused).")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
):
    """Fit the skin head and the out-of-distribution model on the model's embedding, choose the quality thresholds
    on data, and save them beside the model (gate.safetensors + config.json["gate"])."""
    from dermlens.gate import GATE_FILE
    from dermlens.gate.fit import DEFAULT_DATA_ROOT, EVERYDAY_FOLDER, FitOptions, default_data_dirs, fit_gate
    from dermlens.predict import Predictor, bundled_model_dir
    from dermlens.taxonomy.tree import Taxonomy

    model_dir = model or bundled_model_dir()
    if (model_dir / GATE_FILE).exists() and not overwrite:
        raise typer.BadParameter(f"{model_dir} already has a gate; pass --overwrite to fit it again", param_hint="'--model'")
    folders = list(data) if data else default_data_dirs()
    if not folders:
        raise typer.BadParameter("no datasets found under ../shared/data; pass --data FOLDER", param_hint="'--data'")
    everyday = non_skin or (DEFAULT_DATA_ROOT / EVERYDAY_FOLDER)
    if non_skin is not None and not (non_skin / "photos.csv").is_file():
        raise typer.BadParameter(f"{non_skin}: no photos.csv here (image, imagenet_class, wnid)", param_hint="'--non-skin'")
    if wide_field is not None and not wide_field.is_dir():
        raise typer.BadParameter(f"{wide_field}: not a folder of photos", param_hint="'--wide-field'")
    predictor = Predictor(model_dir, taxonomy=Taxonomy.load(taxonomy) if taxonomy else None, gate=False)
    gate, info = fit_gate(predictor, folders, everyday=everyday if (everyday / "photos.csv").is_file() else None,
                          wide_field=wide_field, per_dataset=per_dataset, seed=seed,
                          options=FitOptions(appearance=appearance), progress=progress)
    gate.save(predictor.model_dir, predictor.config)
    typer.echo(json.dumps({"thresholds": gate.thresholds.to_dict(), **info}, indent=2))
    typer.echo(f"gate saved in {predictor.model_dir} ({info['fit_seconds']} s)", err=True)
