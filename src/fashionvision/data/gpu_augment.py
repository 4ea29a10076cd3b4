"""Batched colour jitter in torch, for when the CPU workers cannot keep up with the GPU.

Same maths as :func:`fashionvision.data.transforms.color_jitter`: a hue shift of
``U(-hsv_h, hsv_h)`` of the hue circle (rotation of the YIQ chroma plane), saturation,
value and contrast gains ``1 + U(-g, g)``, all folded into one 3x3 matrix plus offset per
image, so a whole batch costs one batched matrix product on the device. The dataset then
builds its transform with ``color_on_cpu=False`` so the colour is not jittered twice.

The draws come from :class:`RankGenerator`, a generator of its own on the batch's device per
rank, not from the global CUDA generator: ``trainer.seed`` seeds that one identically on every
rank, so under DDP every GPU would jitter its (different) images with the same numbers.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fashionvision.data.transforms import RGB_TO_YIQ, YIQ_TO_RGB


def rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for ``rank``'s colour stream, derived from ``(seed, rank)``.

    Mixed through NumPy's ``SeedSequence`` rather than ``seed + rank``: sums collide across runs
    (seed 1 rank 0 = seed 0 rank 1), and rank 0 would replay the global generator's stream.
    """
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(rank), 0xC0104]  # the last word: this stream's tag
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1


class RankGenerator:
    """One ``torch.Generator`` per device, seeded from ``(seed, rank)`` (see :func:`rank_seed`).

    Created on the device of the first batch it serves, so drawing costs no transfer and no
    host synchronisation; the same seed and rank give the same draws on every run.
    """

    def __init__(self, seed: int, rank: int):
        self.seed, self.rank = int(seed), int(rank)
        self._generators: dict[torch.device, torch.Generator] = {}

    def get(self, device: torch.device | str) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(rank_seed(self.seed, self.rank))
            self._generators[device] = generator
        return self._generators[device]

    def state_dict(self) -> dict:
        """The seed, the rank and each device's generator state (a CPU uint8 tensor)."""
        return {"seed": self.seed, "rank": self.rank,
                "states": {str(d): g.get_state() for d, g in self._generators.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue the streams of :meth:`state_dict` (devices not yet used start on demand)."""
        self.seed, self.rank = int(state["seed"]), int(state["rank"])
        self._generators = {}
        for name, value in state.get("states", {}).items():
            self.get(name).set_state(value)


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB->YIQ, YIQ->RGB and the luma row on ``device``, copied there once: a fresh copy of
    host data to a GPU every batch would make the host wait for the device each time."""
    return (torch.as_tensor(RGB_TO_YIQ, dtype=torch.float32, device=device),
            torch.as_tensor(YIQ_TO_RGB, dtype=torch.float32, device=device),
            torch.as_tensor(RGB_TO_YIQ[0], dtype=torch.float32, device=device))


def color_matrices(hue_shift: torch.Tensor, sat_gain: torch.Tensor, val_gain: torch.Tensor,
                   contrast_gain: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` linear parts of :func:`fashionvision.data.transforms.color_matrix`."""
    b = hue_shift.shape[0]
    dtype, device = torch.float32, hue_shift.device
    to_yiq, to_rgb, _ = _constants(device)
    angle = -2 * torch.pi * hue_shift.float()  # same sign as transforms.color_matrix
    c, s = torch.cos(angle) * sat_gain, torch.sin(angle) * sat_gain
    chroma = torch.zeros(b, 3, 3, dtype=dtype, device=device)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1], chroma[:, 1, 2], chroma[:, 2, 1], chroma[:, 2, 2] = c, -s, s, c
    return (contrast_gain * val_gain).float().view(b, 1, 1) * (to_rgb @ chroma @ to_yiq)


def gpu_color_jitter(images: torch.Tensor, hsv_h: float, hsv_s: float, hsv_v: float,
                     contrast: float, generator: torch.Generator | None = None,
                     max_value: float = 1.0) -> torch.Tensor:
    """Random hue/saturation/value/contrast per image of a float batch ``[B, 3, H, W]``.

    Args:
        images: float tensor on any device, values in ``[0, max_value]``.
        hsv_h, hsv_s, hsv_v, contrast: ranges as in ``configs/augment/*.yaml``.
        generator: torch generator (on any device) for reproducible draws.
        max_value: 1.0 for ``[0, 1]`` inputs, 255.0 for ``[0, 255]``.

    Returns:
        A new tensor of the same shape, dtype and range (clamped).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a [B, 3, H, W] batch, got shape {tuple(images.shape)}")
    if not (hsv_h or hsv_s or hsv_v or contrast):
        return images
    b = images.shape[0]
    draw_device = generator.device if generator is not None else images.device
    u = torch.rand(b, 4, generator=generator, device=draw_device).to(images.device) * 2 - 1
    dh, gs, gv, gc = (u[:, i] * float(r) for i, r in enumerate((hsv_h, hsv_s, hsv_v, contrast)))
    x = images.float()
    matrices = color_matrices(dh, 1 + gs, 1 + gv, 1 + gc)
    luma = _constants(images.device)[2]
    mean_luma = torch.einsum("c,bc->b", luma, x.mean(dim=(2, 3)))
    offset = ((-gc) * (1 + gv) * mean_luma).view(b, 1, 1, 1)  # (1 - contrast_gain) * value_gain * mean
    out = torch.einsum("bij,bjhw->bihw", matrices, x) + offset
    return out.clamp_(0, max_value).to(images.dtype)
