"""U-Nets that output one logit per pixel; ``sigmoid(logit)`` is the estimated tissue fraction.

Both networks pad the input to a multiple of their total stride and crop the output back, so any image size works.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BN + ReLU: the U-Net decoder's unit."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Upsample x2, concatenate the encoder's skip feature map, ConvBlock."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.block = ConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else tuple(2 * s for s in x.shape[-2:])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


class LiteUNet(nn.Module):
    """U-Net on the EfficientNet-Lite0 encoder (timm ``tf_efficientnet_lite0``, features at strides 2..32).

    The encoder starts from the same offline ImageNet weights as the classifier; the decoder is new.
    """

    stride = 32

    def __init__(self, pretrained: bool = True, decoder_channels: tuple[int, ...] = (128, 64, 48, 32, 16)):
        super().__init__()
        self.encoder = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True)
        if pretrained:
            self._load_imagenet_encoder()
        skips = self.encoder.feature_info.channels()  # [16, 24, 40, 112, 320] at strides 2, 4, 8, 16, 32
        in_channels = skips[-1]
        blocks = []
        for skip, out in zip([*reversed(skips[:-1]), None], decoder_channels):
            blocks.append(UpBlock(in_channels, skip or 0, out))
            in_channels = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)

    def _load_imagenet_encoder(self) -> None:
        from dermlens.models.backbones import _lite0_imagenet_state

        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        state = _lite0_imagenet_state(full)
        own = self.encoder.state_dict()
        missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
        if missing:
            raise ValueError(f"EfficientNet-Lite0 encoder: {len(missing)} weights not found, e.g. {missing[:3]}")
        self.encoder.load_state_dict({k: state[k] for k in own})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = _pad_to_multiple(x, self.stride)
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(self.decoder, [*reversed(features[:-1]), None]):
            y = block(y, skip)
        return self.head(y)[..., :height, :width]


class SmallUNet(nn.Module):
    """A plain U-Net (Ronneberger et al. 2015) for small single-channel images such as 64x64 PET slices."""

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 3):
        super().__init__()
        self.stride = 2**depth
        channels = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, channels[0])])
        self.down.extend(ConvBlock(channels[i], channels[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(UpBlock(channels[i + 1], channels[i], channels[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = _pad_to_multiple(x, self.stride)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)[..., :height, :width]


NETWORKS = {"lite_unet": LiteUNet, "small_unet": SmallUNet}


def create_network(name: str, **kwargs) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"unknown segmentation network {name!r}; choose from {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)
