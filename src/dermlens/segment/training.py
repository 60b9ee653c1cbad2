"""Training the dermoscopy segmenter, readable top to bottom.

Data: image/mask pairs (``pairs.load_pairs``), decoded once into memory (HAM10000's 7,012 training pairs at
200x150 take ~0.8 GB). Augmentation on the source grid, applied to image and mask together: flips, rotation, scale
and shift (bilinear, so the mask's edges become fractional as the image's do), then colour jitter on the image.
Target: the area fraction of the augmented mask on the model grid (``targets``), not a binarised mask.
Loss: soft-label cross-entropy (``losses.soft_cross_entropy``): its minimiser is the posterior-mean fraction.
Optimiser: AdamW, warm-up then cosine (the classifier recipe's schedule), the encoder at a tenth of the rate
because its ImageNet features are worth keeping. Every epoch: validation Jaccard at the photos' own size, a row in
``metrics.jsonl``, an atomic checkpoint, the best model (by thresholded Jaccard) in ``model/``. The run folder and
its resume policy are the classifier's (train/loop.py): a used folder needs ``resume`` or ``overwrite``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from tqdm.auto import tqdm

from dermlens.segment.losses import LOSSES
from dermlens.segment.metrics import jaccard, thresholded_jaccard
from dermlens.models.segmentation import create_network
from dermlens.segment.pairs import MaskedImage, load_pair
from dermlens.segment.segmenter import Segmenter, SegmenterConfig, normalise, save_segmenter
from dermlens.train.loop import RunFolder, epoch_generator, learning_rate, set_learning_rate


@dataclass
class SegmentTrainConfig:
    input_size: tuple[int, int] = (192, 144)  # (width, height); HAM10000 here is 200x150
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3  # decoder; the encoder gets lr * encoder_lr_scale
    encoder_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    target: str = "fraction"  # "fraction" or "binary" (the conventional baseline)
    max_steps_per_epoch: int | None = None  # for quick runs and tests
    seed: int = 0
    pretrained: bool = True


class AugmentedPairs(torch.utils.data.Dataset):
    """In-memory image/mask pairs; ``augment`` draws a new geometric + colour augmentation each time."""

    def __init__(self, pairs: list[MaskedImage], input_size: tuple[int, int], augment: bool, progress: bool = True):
        self.input_size = input_size
        self.augment = augment
        self.items = [load_pair(p) for p in tqdm(pairs, desc="loading image/mask pairs", disable=not progress, leave=False)]
        self.colour = T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.items[index]
        image = image.float() / 255.0
        if self.augment:
            image, mask = self._geometry(image, mask)
            image = self.colour(image)
        width, height = self.input_size
        image = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
        # 'area' interpolation averages the source pixels under each output pixel: the area-fraction target
        target = F.interpolate(mask[None], size=(height, width), mode="area")[0] if mask.shape[-2:] != (height, width) else mask
        return image.clamp(0, 1), target.clamp(0, 1)

    @staticmethod
    def _geometry(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's RNG, like ColorJitter and the classifier's transforms (the convention of train/loop.py)
        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand(()))

        stacked = torch.cat([image, mask])  # one transform for both, so they stay aligned
        if uniform(0, 1) < 0.5:
            stacked = stacked.flip(-1)
        if uniform(0, 1) < 0.5:
            stacked = stacked.flip(-2)
        height, width = stacked.shape[-2:]
        angle = uniform(-45, 45)
        scale = uniform(0.8, 1.25)
        shift = [int(uniform(-0.1, 0.1) * width), int(uniform(-0.1, 0.1) * height)]
        stacked = TF.affine(stacked, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                            interpolation=T.InterpolationMode.BILINEAR, fill=0.0)
        return stacked[:3], stacked[3:]


def _loader(dataset, batch_size: int, generator: torch.Generator) -> torch.utils.data.DataLoader:
    # No worker processes: the augmentations draw from this process's torch RNG, which the checkpoint saves.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                                       num_workers=0, drop_last=True)


def evaluate_segmenter(segmenter: Segmenter, pairs: list[MaskedImage], progress: bool = True) -> dict:
    """Per-image Jaccard at each photo's own size (the ISIC protocol), and the summary scores."""
    scores = []
    for pair in tqdm(pairs, desc="evaluating", disable=not progress, leave=False):
        image, mask = load_pair(pair)  # decoded once, for the prediction and the truth
        scores.append(jaccard(segmenter.fraction(image.permute(1, 2, 0).numpy()), mask[0].numpy()))
    scores = np.asarray(scores)
    return {
        "n": int(len(scores)),
        "mean_jaccard": float(scores.mean()),
        "thresholded_jaccard": thresholded_jaccard(scores),
        "share_below_0.65": float((scores < 0.65).mean()),
        "per_image": [{"image": str(p.image), "jaccard": float(s)} for p, s in zip(pairs, scores)],
    }


def train_one_epoch(model, loss_fn, optimizer, data, lr_at, epoch: int, steps_per_epoch: int,
                    cfg: SegmentTrainConfig, seg_config: SegmenterConfig, progress: bool = True) -> dict:
    model.train()
    loader = _loader(data, cfg.batch_size, epoch_generator(cfg.seed, epoch))
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
    started, losses = time.time(), []
    for step_in_epoch, (images, targets) in enumerate(loader):
        if step_in_epoch >= steps_per_epoch:
            break
        set_learning_rate(optimizer, lr_at(epoch * steps_per_epoch + step_in_epoch))
        logits = model(normalise(images, seg_config).contiguous(memory_format=torch.channels_last))
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    return {"train_loss": float(np.mean(losses)),
            "images_per_second": round(steps_per_epoch * cfg.batch_size / (time.time() - started), 1)}


def train_segmenter(train_pairs: list[MaskedImage], val_pairs: list[MaskedImage], out: str | Path,
                    cfg: SegmentTrainConfig = SegmentTrainConfig(), resume: bool = False, progress: bool = True,
                    provenance: dict | None = None, *, overwrite: bool = False) -> Path:
    """Train, checkpoint every epoch, keep the best epoch's model in ``out/model``; returns that folder.

    A folder that holds a checkpoint needs ``resume`` (continue it, same settings) or ``overwrite`` (start again).
    """
    out = Path(out)
    run = RunFolder(out, resume=resume, overwrite=overwrite)
    torch.manual_seed(cfg.seed)

    model = create_network("lite_unet", pretrained=cfg.pretrained).to(memory_format=torch.channels_last)
    encoder = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    optimizer = torch.optim.AdamW([{"params": encoder, "lr_scale": cfg.encoder_lr_scale}, {"params": rest, "lr_scale": 1.0}],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = LOSSES[cfg.target]
    seg_config = SegmenterConfig(input_size=tuple(cfg.input_size), target=cfg.target)

    train_data = AugmentedPairs(train_pairs, cfg.input_size, augment=True, progress=progress)
    steps_per_epoch = len(train_data) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_data)} training pairs: fewer than one batch of {cfg.batch_size}")
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        return learning_rate(step, total_steps, warmup_steps, cfg.lr)

    state = run.start(model, optimizer, asdict(cfg))
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    while state.running(cfg.epochs):
        epoch, started = state.epoch, time.time()
        row = {"epoch": epoch + 1, **train_one_epoch(model, loss_fn, optimizer, train_data, lr_at, epoch,
                                                      steps_per_epoch, cfg, seg_config, progress)}
        model.eval()
        scores = evaluate_segmenter(Segmenter.from_model(model, seg_config, tta=False), val_pairs, progress=progress)
        summary = {k: v for k, v in scores.items() if k != "per_image"}
        row.update({"seconds": round(time.time() - started, 1), **{f"val_{k}": v for k, v in summary.items()}})
        if progress:
            tqdm.write(json.dumps(row))
        if state.end_epoch(row, score=summary["thresholded_jaccard"]):
            seg_config.training = {**(provenance or {}), "recipe": asdict(cfg), "best_epoch": epoch + 1,
                                   "validation": summary}
            save_segmenter(out / "model", model, seg_config)
        run.save(model, optimizer, state)
    return out / "model"
