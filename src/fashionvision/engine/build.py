"""The engine's building blocks under the names its callers have always imported.

They live by what they do: :mod:`~fashionvision.engine.device` (device, workers, bf16),
:mod:`~fashionvision.engine.seeding`, :mod:`~fashionvision.engine.samplers` and
:mod:`~fashionvision.engine.loaders`; whether a folder is converted is
:func:`fashionvision.data.converted.dataset_ready`.
"""

from fashionvision.data.converted import dataset_ready
from fashionvision.engine.device import clamp_workers, cpu_has_bf16, resolve_device
from fashionvision.engine.loaders import build_loader, to_device
from fashionvision.engine.samplers import EpochAware, ResumableSampler
from fashionvision.engine.seeding import seed_everything

__all__ = ["EpochAware", "ResumableSampler", "build_loader", "clamp_workers", "cpu_has_bf16", "dataset_ready",
           "resolve_device", "seed_everything", "to_device"]
