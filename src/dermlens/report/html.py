"""The page kit every dermlens report uses: one CSS, JSON-safe numbers, embedded PNGs, tables, and the Jinja2
environment that renders report templates with autoescaping (file names, labels and reader names reach pages).

A report is one HTML file with no external assets (figures are base64 PNG) and a ``metrics.json`` beside it. A
package's templates live in its ``templates/`` folder and extend ``page.html``; ``kit.html`` holds the table macro.
"""
from __future__ import annotations

import base64
import functools
import html
import json
import math
from pathlib import Path

import numpy as np
from markupsafe import Markup


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.warn{background:#fff3cd;border:1px solid #e0c36b;padding:.6em 1em}
.note{color:#555;font-size:.9em}.figs{display:flex;flex-wrap:wrap;gap:1em}img{max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.8em}
.case{border:1px solid #ddd;padding:.4em;font-size:.8em}.case img{width:48%;margin:1%}.ok{color:#176117}.bad{color:#9b1c1c}
"""


def json_safe(value):
    """JSON-safe: NaN/inf to None, numpy scalars to Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def img(png: bytes, alt: str) -> Markup:
    return Markup(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def file_img(path: Path, alt: str) -> Markup:
    return img(path.read_bytes(), alt) if path.is_file() else Markup(f"<p class=note>({html.escape(alt)}: file missing)</p>")


def fmt(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def mean_sd(d: dict | None, digits=3) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"


def table(header: list[str], rows: list[list[str]], left: int = 1, text_last: bool = False) -> str:
    """Numbers right-aligned; the first ``left`` columns (and the last, for ``text_last``) are text."""
    is_text = lambda i: i < left or (text_last and i == len(header) - 1)  # noqa: E731
    head = "".join(f"<th class=l>{h}</th>" if is_text(i) else f"<th>{h}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td class=l>{c}</td>" if is_text(i) else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"




@functools.lru_cache(maxsize=None)
def environment(package: str = "dermlens.report"):
    """Jinja2 over ``package``'s templates and the kit's, autoescaping everything: a value reaches the page as text
    unless it is ``Markup`` (the kit's images)."""
    import jinja2

    loaders = [jinja2.PackageLoader(p, "templates") for p in dict.fromkeys([package, "dermlens.report"])]
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, mean_sd=mean_sd)
    return env


def render_page(path: Path, template: str, package: str = "dermlens.report", **context) -> Path:
    """Render ``template`` of ``package`` (extending ``page.html``) into ``path``; the kit's CSS comes along."""
    page = environment(package).get_template(template).render(css=Markup(CSS), **context)
    path.write_text(page, encoding="utf-8")
    return path


def write_page(path: Path, title: str, body: str) -> Path:
    """One self-contained HTML page with the kit's CSS around ``body``, markup its caller has escaped."""
    return render_page(path, "page.html", title=title, body=Markup(body))


def write_metrics(path: Path, metrics: dict) -> dict:
    """``metrics.json``: every number of a report, JSON-safe; returns the cleaned dict."""
    metrics = json_safe(metrics)
    path.write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
