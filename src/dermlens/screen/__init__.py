"""Wide-field screening: find every pigmented lesion in a body photo, flag the suspicious ones and rank the
patient's ugly ducklings (after Soenksen et al., Sci. Transl. Med. 2021). Knows nothing of HTTP.

- ``detect``: candidate spots (CLAHE + SimpleBlobDetector on a skin-relative darkness map)
- ``describe``: what a dermatologist compares (colour, size, border, pattern), measured on a candidate crop
- ``lesion_head``: lesion or not, a logistic head on the bundled classifier's embedding (or on descriptors)
- ``lesion_filter``: a candidate is a lesion when the embedding head OR the descriptor head accepts it
- ``score``: the ugly-duckling score and ranks; ``ugly_duckling``: a learnt ranker (measured, not shipped)
- ``screener``: the pipeline (:class:`Screener`) and its outputs (:func:`write_outputs`)
- ``visit``: the visit report, one HTML page per patient
- ``truth``: labelled wide-field photos (lesion boxes) and matching reported boxes to them
- ``train_head``: fitting the heads on the detector's candidates in labelled photos

The labelled photos themselves (patients composed from HAM10000, ISIC 2017, PH2 and DermNet, several ways) are made
by ``benchmarks/screen_compose.py`` (and the older ``screen_benchmark.py``), outside the package.
"""
from dermlens.screen.detect import Candidate, DetectorConfig, detect_candidates
from dermlens.screen.score import cosine_distance_to_others, ranks, ugly_duckling_scores

__all__ = [
    "Candidate", "DetectorConfig", "detect_candidates", "cosine_distance_to_others", "ranks", "ugly_duckling_scores",
]
