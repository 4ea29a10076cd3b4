"""A tiny Task for engine tests: a small conv net regressing the mean colour of synthetic images.

It follows the Task contract of ``fashionvision.tasks.base`` (uint8 images, named losses,
``evaluate`` with a primary metric, ``predict``/``draw``, ``set_epoch`` per-item augmentation
seeded from (seed, epoch, index)) and has Dropout and BatchNorm, so exact-resume tests also
cover the global torch RNG and normalisation buffers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from fashionvision.data.annotations import Record, write_annotations, write_classes
from fashionvision.data.converted import ConvertedDataset
from fashionvision.data.image_io import read_image
from fashionvision.tasks.base import Task

CLASSES = ["red", "green"]


def make_toy_dataset(folder: Path, n_train: int = 8, n_val: int = 4, size: int = 16, seed: int = 0) -> Path:
    """A converted folder of random-colour images with one box each."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("val", n_val), ("test", 2)):
        records = []
        for i in range(count):
            rel = f"images/{split}_{i}.png"
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            pixels[2:8, 2:8] = (255, 0, 0) if i % 2 == 0 else (0, 255, 0)
            Image.fromarray(pixels).save(folder / rel)
            records.append(Record(rel, [[2, 2, 7, 7, i % 2]]))
        write_annotations(folder / f"{split}.txt", records)
    write_classes(folder / "classes.txt", CLASSES)
    (folder / "metadata.json").write_text(json.dumps({"source_name": "toy", "image_root": "."}))
    return folder


class ToyDataset(Dataset):
    def __init__(self, data: ConvertedDataset, split: str, train: bool, limit: int | None, seed: int = 0):
        self.data = data
        self.records = data.records(split)[:limit]
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = torch.from_numpy(np.array(read_image(self.data.image_path(record)))).permute(2, 0, 1).contiguous()
        if self.train:  # per-item augmentation from (seed, epoch, index): resumable anywhere
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
            if torch.rand(1, generator=g).item() < 0.5:
                image = image.flip(-1)
        boxes = torch.as_tensor(record.boxes[:, :4], dtype=torch.float32)
        labels = torch.as_tensor(record.boxes[:, 4], dtype=torch.int64)
        meta = {"path": str(self.data.image_path(record)), "image_id": index,
                "orig_size": tuple(image.shape[1:]), "scale": 1.0, "pad": (0, 0)}
        return {"image": image, "boxes": boxes, "labels": labels, "meta": meta}


class ToyNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ToyTask(Task):
    name = "toy"
    primary_metric = "score"

    def build_model(self) -> nn.Module:
        return ToyNet(int(self.model_cfg.get("width", 4)))

    def build_dataset(self, split: str, train: bool, limit: int | None = None, cache: bool = False) -> Dataset:
        return ToyDataset(self.data, split, train, limit)

    def collate(self, items: list[dict]) -> dict:
        return {"images": torch.stack([i["image"] for i in items]),
                "boxes": [i["boxes"] for i in items], "labels": [i["labels"] for i in items],
                "metas": [i["meta"] for i in items]}

    @staticmethod
    def _target(images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3)) / 255.0

    def compute_losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        self.calls = getattr(self, "calls", 0) + 1
        delay = float(os.environ.get("TOY_STEP_SLEEP", "0"))
        slow_rank, _, slow_delay = os.environ.get("TOY_SLOW_RANK", "").partition(":")  # "RANK:SECONDS"
        if slow_rank and int(os.environ.get("RANK", "0")) == int(slow_rank):
            delay += float(slow_delay)
        if delay:
            time.sleep(delay)
        # process tests: a signal arriving in the middle of an exact training batch
        for name, sig in (("TOY_SIGKILL_AT_BATCH", signal.SIGKILL), ("TOY_SIGTERM_AT_BATCH", signal.SIGTERM)):
            if os.environ.get(name) and int(os.environ[name]) == self.calls:
                os.kill(os.getpid(), sig)
        out = model(batch["images"].float() / 255.0)
        target = self._target(batch["images"])
        return {"mse": ((out - target) ** 2).mean(), "l1": (out - target).abs().mean() * 0.1}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, output_dir: Path | None = None) -> dict:
        errors = []
        for batch in loader:
            images = batch["images"].to(device)
            errors.append((model(images.float() / 255.0) - self._target(images)).abs().mean().item())
        error = float(np.mean(errors)) if errors else 0.0
        return {"score": -error, "mae": error}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, metas: list[dict], conf=None, iou=None) -> list[dict]:
        colours = model(images.float() / 255.0).clamp(0, 1)
        return [{"boxes": torch.tensor([[1.0, 1.0, 8.0, 8.0]]), "scores": c[:1], "labels": torch.zeros(1),
                 "colour": c} for c in colours]

    def draw(self, image, prediction: dict):
        out = np.array(image, copy=True)
        x1, y1, x2, y2 = prediction["boxes"][0].int().tolist()
        out[y1, x1:x2] = 255
        out[y2, x1:x2] = 255
        return out
