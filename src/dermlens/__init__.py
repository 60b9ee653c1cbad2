"""dermlens: skin-lesion classification over a disease taxonomy."""
__version__ = "0.1.0"
