"""The page kit every dermlens report uses (study, PET, screening): :mod:`~dermlens.report.html` for the page and
its tables, :mod:`~dermlens.report.figures` for the matplotlib figures as PNG bytes."""
