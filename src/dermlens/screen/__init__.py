"""Wide-field screening: find every pigmented lesion in a body photo, flag the suspicious ones and rank the
patient's ugly ducklings (after Soenksen et al., Sci. Transl. Med. 2021). Knows nothing of HTTP.

- ``detect``: candidate spots (CLAHE + SimpleBlobDetector on a skin-relative darkness map)
- ``lesion_head``: lesion or not, a logistic head on the bundled classifier's embedding
- ``score``: the ugly-duckling score and ranks
- ``screener``: the pipeline (:class:`Screener`) and its outputs (:func:`write_outputs`)
- ``truth``: labelled wide-field photos (lesion boxes) and matching reported boxes to them
- ``train_head``: fitting the lesion head on the detector's candidates in labelled photos

The labelled photos themselves (synthetic patients composed from HAM10000) are made by
``benchmarks/screen_benchmark.py``, outside the package.
"""
from dermlens.screen.detect import Candidate, DetectorConfig, detect_candidates
from dermlens.screen.score import cosine_distance_to_others, ranks, ugly_duckling_scores

__all__ = [
    "Candidate", "DetectorConfig", "detect_candidates", "cosine_distance_to_others", "ranks", "ugly_duckling_scores",
]
