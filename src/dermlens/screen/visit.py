"""The visit report: one HTML page per patient, beside the screen outputs, readable on a phone.

    visit-<patient>.html
        the count of lesions (and how many are suspicious), then every photo with its numbered boxes (the
        ``<stem>.annotated.jpg`` the screener wrote; a box's number is the lesion's ugly-duckling rank), then the
        lesions ranked, each a card with its crop (``<stem>.crops/rank<k>.jpg``, linked), ugly-duckling score,
        P(malignant) and triage.

Built with the project's page kit (:mod:`dermlens.report.html`); images are linked, not embedded, so the page stays
small on a phone. Everything that comes from outside (file names, patient ids, class names) is escaped.
"""
from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from dermlens.report.html import write_page

CARD_CSS = """<style>
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.6em}
.card{border:1px solid #ddd;border-radius:6px;padding:.4em;font-size:.85em}.card img{width:100%;display:block}
.card.refer{border:2px solid #c62828}.tag{display:inline-block;padding:0 .4em;border-radius:4px;color:#fff}
.tag.refer{background:#c62828}.tag.ok{background:#2e7d32}.photo{margin:.6em 0}.photo img{width:100%}
.summary{font-size:1.1em}
</style>"""


def page_name(patient: str) -> str:
    """A file name for a patient's page: ``visit-<id>.html`` with anything but letters, digits, ``.-_`` replaced."""
    return f"visit-{re.sub(r'[^A-Za-z0-9._-]', '_', patient or 'patient')}.html"


def _href(path: str) -> str:
    return html.escape(quote(path), quote=True)


def ensure_crops(result, stem: str, out_dir: Path, context: float, image=None) -> dict[int, str]:
    """{rank: crop path relative to ``out_dir``} for every lesion of a photo, writing the crops the screen outputs
    did not (they keep only the top few)."""
    from dermlens.data.io import load_image
    from dermlens.screen.screener import square_crop

    crops, rgb = {}, None
    for lesion in result.lesions:
        relative = f"{stem}.crops/rank{lesion.rank}.jpg"
        path = out_dir / relative
        if not path.is_file():
            if rgb is None:
                rgb = np.asarray(load_image(result.image if image is None else image, name=result.image))
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(square_crop(rgb, lesion.box, context)).save(path, quality=90)
        crops[lesion.rank] = relative
    return crops


def _lesion_card(lesion, photo: str, crop: str) -> str:
    triage = ('<span class="tag refer">suspicious: refer</span>' if lesion.suspicious
              else '<span class="tag ok">not suspicious</span>')
    label = f"lesion #{lesion.rank} in {photo}"
    return (
        f'<div class="card{" refer" if lesion.suspicious else ""}" id="lesion-{lesion.rank}">'
        f'<a href="{_href(crop)}"><img src="{_href(crop)}" alt="{html.escape(label, quote=True)}"></a>'
        f"<b>#{lesion.rank}</b> {triage}<br>"
        f"ugly duckling {lesion.ugly_duckling_score:.2f}<br>P(malignant) {lesion.p_malignant:.2f}<br>"
        f"{html.escape(lesion.top_class)} · {lesion.diameter:.0f} px<br>"
        f'<span class="note">{html.escape(photo)}</span></div>'
    )


def write_visit_report(results: Sequence, stems: Sequence[str], out_dir: str | Path, context: float = 1.6) -> list[Path]:
    """One page per patient of ``results`` (screened and ranked; outputs already written with ``stems`` into
    ``out_dir``); returns the pages written. A patient with no lesion gets a page saying so."""
    out = Path(out_dir)
    by_patient: dict[str, list[tuple]] = {}
    for result, stem in zip(results, stems):
        by_patient.setdefault(result.patient, []).append((result, stem))
    pages = []
    for patient, photos in by_patient.items():
        lesions, photo_blocks = [], []
        for result, stem in photos:
            name = Path(result.image).name
            if result.error:
                photo_blocks.append(f'<p class="warn">{html.escape(name)}: {html.escape(result.error)}</p>')
                continue
            crops = ensure_crops(result, stem, out, context)
            lesions += [(lesion, name, crops[lesion.rank]) for lesion in result.lesions]
            annotated = f"{stem}.annotated.jpg"
            count = len(result.lesions)
            photo_blocks.append(
                f'<div class="photo"><h3>{html.escape(name)}: {count} lesion{"" if count == 1 else "s"}</h3>'
                f'<a href="{_href(annotated)}"><img src="{_href(annotated)}" '
                f'alt="{html.escape(name, quote=True)} with numbered lesion boxes"></a></div>')
        lesions.sort(key=lambda item: item[0].rank)
        suspicious = sum(lesion.suspicious for lesion, _, _ in lesions)
        title = f"Screening visit: {patient}"
        body = [
            CARD_CSS, f"<h1>{html.escape(title)}</h1>",
            f'<p class="summary"><b>{len(lesions)}</b> lesion{"" if len(lesions) == 1 else "s"} in '
            f"{len(photos)} photo{'' if len(photos) == 1 else 's'}; <b>{suspicious}</b> suspicious.</p>",
            '<p class="note">Numbers on the photos are ranks: 1 is the lesion least like the patient\'s others (the '
            "ugly duckling). Red: P(malignant) at or above the model's operating point. A screening aid, not a "
            "diagnosis: any changing, bleeding or worrying lesion needs a clinician whatever its rank.</p>",
            "<h2>Lesions, most unusual first</h2>",
            '<div class="cards">' + "".join(_lesion_card(*item) for item in lesions) + "</div>"
            if lesions else "<p>No lesion found in these photos.</p>",
            "<h2>Photos</h2>", *photo_blocks,
        ]
        pages.append(write_page(out / page_name(patient), title, "\n".join(body)))
    return pages
