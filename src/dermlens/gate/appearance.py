"""Cheap appearance features of a photo (colour and texture statistics), a second view beside the embedding.

Computed on the quality measures' downscaled copy of the model input (``quality.downscaled``), so they cost a few
array passes over 112 x 112 pixels. Skin has a narrow band of hue and chromaticity whatever its tone, and a
lesion photo is darker in its centre than at its border; many everyday things are neither.

    0-3   mean and std of the r and g chromaticities (colour without brightness)
    4-7   mean and std of HSV saturation and value
    8-13  hue histogram in 6 bins, weighted by saturation (sums to 1)
    14    share of pixels in the classic YCbCr skin box (Cr 133-173, Cb 77-127; Chai & Ngan 1999)
    15    centre minus border brightness (the centre half against the outer quarter)
    16    mean absolute first difference over the mean brightness (texture)
"""
from __future__ import annotations

import torch

FEATURES = 17


@torch.inference_mode()
def appearance_features(pixels: torch.Tensor) -> torch.Tensor:
    """(batch, FEATURES) float32 from [0, 1] pixels (batch, 3, H, W)."""
    x = pixels.float().clamp(0, 1)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    total = (r + g + b).clamp_min(1e-3)
    cr, cg = r / total, g / total
    v = x.max(1).values
    low = x.min(1).values
    s = (v - low) / v.clamp_min(1e-3)
    delta = (v - low).clamp_min(1e-6)
    hue = torch.where(v == r, ((g - b) / delta) % 6, torch.where(v == g, (b - r) / delta + 2, (r - g) / delta + 4)) / 6
    bins = (hue.clamp(0, 0.9999) * 6).long()
    weights = s.flatten(1)
    histogram = torch.zeros(len(x), 6).scatter_add_(1, bins.flatten(1), weights)
    histogram = histogram / histogram.sum(1, keepdim=True).clamp_min(1e-6)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr_ = 128 + 255 * 0.713 * (r - y)
    cb_ = 128 + 255 * 0.564 * (b - y)
    skin_box = ((cr_ >= 133) & (cr_ <= 173) & (cb_ >= 77) & (cb_ <= 127)).float().flatten(1).mean(1)
    h, w = y.shape[-2:]
    centre = y[:, h // 4: h - h // 4, w // 4: w - w // 4].flatten(1).mean(1)
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[h // 8: h - h // 8, w // 8: w - w // 8] = False
    border = y[:, ring].mean(1)
    texture = ((y[:, :, 1:] - y[:, :, :-1]).abs().flatten(1).mean(1)
               + (y[:, 1:] - y[:, :-1]).abs().flatten(1).mean(1)) / y.flatten(1).mean(1).clamp_min(0.02)
    stats = [cr.flatten(1).mean(1), cr.flatten(1).std(1), cg.flatten(1).mean(1), cg.flatten(1).std(1),
             s.flatten(1).mean(1), s.flatten(1).std(1), v.flatten(1).mean(1), v.flatten(1).std(1)]
    out = torch.cat([torch.stack(stats, 1), histogram, skin_box[:, None], (centre - border)[:, None], texture[:, None]], 1)
    return torch.nan_to_num(out)


__all__ = ["FEATURES", "appearance_features"]
