"""Why the model said what it said: saliency maps over the photo (input gradients and Grad-CAM)."""

from dermlens.explain.saliency import METHODS, Saliency, overlay, saliency_map, saliency_overlay

__all__ = ["METHODS", "Saliency", "overlay", "saliency_map", "saliency_overlay"]
