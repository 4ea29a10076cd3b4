"""A photo as the model sees it at inference: resized, letterboxed and batched.

The same two steps as the evaluation dataset (:class:`~fashionvision.data.dataset.FashionDataset`
with ``train=False``): resize so the long side is ``long_side`` (as
:func:`~fashionvision.data.cache.load_resized` does), then letterbox to the square input
(``rect=False``, the detector) or to the stride-32 :func:`~fashionvision.data.transforms.padded_shape`
(``rect=True``, the U-Net). The meta keys (``path``, ``image_id``, ``orig_size``, ``scale``,
``pad``) are the dataset's, so a task maps predictions back exactly as during ``fashion-eval``.

It lives in the data layer because the tasks need it too: multi-scale test-time augmentation
(:mod:`fashionvision.tasks.seg_tta`) prepares each photo again at other long sides.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from fashionvision.data.transforms import PAD_VALUE, letterbox, target_shape


def prepare_image(image: np.ndarray, long_side: int, rect: bool, index: int = 0,
                  path: str = "") -> tuple[np.ndarray, dict]:
    """One RGB ``[H, W, 3]`` uint8 image -> the model input (``[h, w, 3]``) and its meta dict.

    The meta also keeps the photo itself (``meta["source"]``, a reference, not a copy) for
    decoders that look at it again at another scale.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    resize = long_side / max(height, width)
    new_w, new_h = max(1, round(width * resize)), max(1, round(height * resize))
    resized = image
    if (new_w, new_h) != (width, height):
        interp = cv2.INTER_AREA if resize < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    shape = target_shape(long_side, new_h, new_w, rect=rect)
    boxed, _, scale, pad = letterbox(resized, shape)
    meta = {"path": path, "image_id": index, "orig_size": (height, width),
            "scale": float(resize * scale), "pad": (int(pad[0]), int(pad[1])), "source": image}
    return boxed, meta


def prepare_batch(images: Sequence[np.ndarray], long_side: int, rect: bool,
                  paths: Sequence[str] | None = None) -> tuple[torch.Tensor, list[dict]]:
    """RGB uint8 arrays -> (uint8 batch ``[B, 3, H, W]``, metas).

    Images of different shapes (the U-Net keeps aspect ratios) are padded at the bottom and right
    to the largest one; the top-left placement recorded in each meta stays valid.
    """
    if not images:
        raise ValueError("prepare_images needs at least one image")
    prepared = [prepare_image(im, long_side, rect, i, paths[i] if paths else "") for i, im in enumerate(images)]
    height = max(p[0].shape[0] for p in prepared)
    width = max(p[0].shape[1] for p in prepared)
    batch = torch.full((len(prepared), 3, height, width), PAD_VALUE, dtype=torch.uint8)
    for i, (array, _) in enumerate(prepared):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        batch[i, :, : tensor.shape[1], : tensor.shape[2]] = tensor
    return batch, [meta for _, meta in prepared]
