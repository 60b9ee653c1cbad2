"""dermlens.explain.saliency: the maps are the gradients they claim to be, of the target they claim to explain."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from dermlens.data.synthetic import render_lesion
from dermlens.explain import Saliency, overlay, saliency_map, saliency_overlay
from dermlens.explain.saliency import network_view_box, pixel_to_input, pixel_transform
from dermlens.taxonomy import default_taxonomy


@pytest.fixture(scope="module")
def photo():
    """A synthetic lesion, non-square like a phone photo."""
    return render_lesion("basal_cell_carcinoma", np.random.default_rng(3), size=120).resize((120, 80), Image.BILINEAR)



def test_pixels_to_input_matches_the_predictors_transform(predictor, photo):
    pre = predictor.config.preprocessing
    ours = pixel_to_input(pre)(pixel_transform(pre)(photo))
    torch.testing.assert_close(ours, predictor.transform(photo), atol=1e-5, rtol=0)


def _pixels_and_logits(predictor, photo):
    pre = predictor.config.preprocessing
    pixels = pixel_transform(pre)(photo).unsqueeze(0).requires_grad_()
    features = predictor.model.forward_features(pixel_to_input(pre)(pixels))
    features.retain_grad()
    return pixels, features, predictor.model.forward_head(features)


def test_input_gradient_is_the_l1_norm_of_the_pixel_gradient(predictor, photo):
    pixels, _, logits = _pixels_and_logits(predictor, photo)
    (grad,) = torch.autograd.grad(logits[0, 2], pixels)
    expected = grad[0].abs().sum(0)
    sal = saliency_map(predictor, photo, target_class=2, method="input_gradient")
    np.testing.assert_allclose(sal.raw, expected.numpy(), rtol=1e-4, atol=1e-7)
    assert sal.heatmap.shape == expected.shape and 0 <= sal.heatmap.min() and sal.heatmap.max() == pytest.approx(1.0)


def test_gradcam_matches_a_hand_computation(predictor, photo):
    _, features, logits = _pixels_and_logits(predictor, photo)
    logits[0, 1].backward()
    weights = features.grad.mean((2, 3), keepdim=True)  # channel importance: pooled gradients
    cam = torch.relu((weights * features).sum(1, keepdim=True))
    size = predictor.config.preprocessing.size
    expected = torch.nn.functional.interpolate(cam, (size, size), mode="bilinear", align_corners=False)[0, 0]
    sal = saliency_map(predictor, photo, target_class=1, method="gradcam")
    np.testing.assert_allclose(sal.raw, expected.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_default_target_is_the_top_class(predictor, photo):
    prediction = predictor.predict_one(photo)
    sal = saliency_map(predictor, photo)
    assert sal.target == prediction.top5[0][0]
    assert sal.probability == pytest.approx(prediction.top5[0][1], abs=1e-5)


def test_inner_node_target_sums_its_classes(predictor, photo):
    taxonomy = default_taxonomy()
    classes = predictor.config.class_nodes
    sal = saliency_map(predictor, photo, target_class="malignant")
    under = [i for i, node in enumerate(classes) if taxonomy.ancestor_at_level(node, 1) == "malignant"]
    assert sal.target == "malignant" and sal.class_indices == under and len(under) == 2
    p_malignant = predictor.predict_one(photo).probabilities["malignant"]
    assert sal.probability == pytest.approx(p_malignant, abs=1e-5)
    # A training-class node by name is that class alone.
    melanoma = saliency_map(predictor, photo, target_class="melanoma", method="input_gradient")
    assert melanoma.class_indices == [classes.index("melanoma")]


@pytest.mark.parametrize(
    "target, method, message",
    [(99, "gradcam", "out of range"), ("no_such_node", "gradcam", "not a taxonomy node"),
     ("inflammatory", "gradcam", "no training class"), (None, "occlusion", "unknown saliency method")],
)
def test_bad_targets_and_methods_raise(predictor, photo, target, method, message):
    with pytest.raises(ValueError, match=message):
        saliency_map(predictor, photo, target_class=target, method=method)


def test_view_box_follows_the_eval_geometry(predictor):
    pre = predictor.config.preprocessing
    assert network_view_box((120, 80), pre) == (20, 0, 100, 80)
    assert network_view_box((80, 121), pre) == (0, 20, 80, 100)
    assert network_view_box((120, 80), dataclasses.replace(pre, resize="squash")) == (0, 0, 120, 80)


def test_overlay_keeps_the_photo_where_the_map_is_cold(photo):
    heat = np.zeros((64, 64), np.float32)
    heat[:, 32:] = 1.0  # right half hot
    sal = Saliency(heatmap=heat, raw=heat, method="gradcam", target="melanoma", class_indices=[0], probability=0.5,
                   view_box=(20, 0, 100, 80))
    picture = overlay(photo, sal, alpha=0.6, min_side=80, max_side=80)
    assert picture.size == (80, 80)
    crop = np.asarray(photo.crop((20, 0, 100, 80)), float)
    shown = np.asarray(picture, float)
    assert np.abs(shown[:, :30] - crop[:, :30]).max() <= 1  # cold: the photo itself
    assert np.abs(shown[:, 50:] - crop[:, 50:]).mean() > 20  # hot: coloured


def test_saliency_overlay_in_one_call(predictor, photo):
    picture = saliency_overlay(predictor, photo, method="input_gradient", max_side=300, min_side=100)
    assert picture.mode == "RGB" and picture.size == (100, 100)  # the 80x80 centre square, raised to min_side
