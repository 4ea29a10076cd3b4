"""Geometry and colour transforms shared by the detector and the segmenter (numpy + OpenCV).

A *sample* is a plain dict: ``image`` HxWx3 uint8 RGB, ``boxes`` float32 ``[N, 4]``
(x1, y1, x2, y2 in continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, so an
inclusive integer annotation ``x2`` becomes ``x2 + 1``), ``labels`` int64 ``[N]`` and
optionally ``mask`` HxW (class indices). Other keys pass through untouched.

Every geometric augmentation is folded into ONE 2x3 matrix in continuous coordinates and
applied with a single ``cv2.warpAffine`` to the image (bilinear), the mask (nearest,
border = ignore index) and the box corners, so the three can never drift apart and the
image is interpolated once. Randomness comes only from the ``numpy.random.Generator``
passed in (the dataset seeds one per item from ``(seed, epoch, index)``), never from
global state, so runs are reproducible and resume-exact.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from fashionvision.config import parse_section
from fashionvision.data.augment_config import AugmentConfig
from fashionvision.errors import UserError

PAD_VALUE = 114
IGNORE_INDEX = 255
MIN_BOX_SIDE = 2.0      # boxes thinner than this (pixels) after a transform are dropped
MIN_AREA_KEPT = 0.2     # ... and boxes keeping less than this share of their area
CROP_TRIES = 10         # windows drawn at most to satisfy augment.crop_max_ratio

Shape = tuple[int, int]  # (height, width)


def as_shape(size: int | tuple[int, int] | list[int]) -> Shape:
    """``416 -> (416, 416)``; a pair is taken as (height, width)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def padded_shape(h: int, w: int, long_side: int, stride: int = 32) -> Shape:
    """(H, W) with the long side scaled to ``long_side`` and both sides rounded UP to ``stride``.

    Used for rectangular batches (U-Net, rect detection): a 832x550 (h x w) CCP photo at 416
    becomes 416x288 instead of 416x416, which saves about 30 % of the compute on padding.
    """
    scale = long_side / max(h, w)
    return (int(math.ceil(round(h * scale, 6) / stride) * stride),
            int(math.ceil(round(w * scale, 6) / stride) * stride))


def target_shape(size: int | tuple[int, int], h: int, w: int, rect: bool) -> Shape:
    """The output shape for an (h, w) image: square/fixed, or :func:`padded_shape` when ``rect``."""
    if rect and isinstance(size, (int, np.integer)):
        return padded_shape(h, w, int(size))
    return as_shape(size)


def _mask_border(mask: np.ndarray, ignore_index: int) -> np.ndarray:
    # OpenCV warps 8/16-bit masks; widen if the ignore index does not fit (e.g. 255 in int8).
    if mask.dtype == np.uint8 and ignore_index <= 255:
        return mask
    return mask.astype(np.uint16)


def letterbox_params(h: int, w: int, out_shape: Shape) -> tuple[float, Shape, tuple[int, int]]:
    """``(scale, (new_h, new_w), (pad_left, pad_top))`` of :func:`letterbox` for an h x w image."""
    out_h, out_w = out_shape
    scale = min(out_h / h, out_w / w)
    new_w, new_h = min(out_w, max(1, round(w * scale))), min(out_h, max(1, round(h * scale)))
    return scale, (new_h, new_w), ((out_w - new_w) // 2, (out_h - new_h) // 2)


def letterbox(image: np.ndarray, new_shape: int | tuple[int, int], pad_value: int = PAD_VALUE,
              mask: np.ndarray | None = None, mask_pad: int = IGNORE_INDEX,
              ) -> tuple[np.ndarray, np.ndarray | None, float, tuple[int, int]]:
    """Resize keeping the aspect ratio so the image fits ``new_shape`` (H, W), pad centred.

    Returns ``(image, mask, scale, (pad_left, pad_top))``; the mask (if given) is resized with
    nearest-neighbour and padded with ``mask_pad`` (the ignore index).
    """
    out_h, out_w = as_shape(new_shape)
    h, w = image.shape[:2]
    scale, (new_h, new_w), (left, top) = letterbox_params(h, w, (out_h, out_w))
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        if mask is not None:
            # NEAREST_EXACT uses pixel centres like the image resize; plain NEAREST is offset.
            mask = cv2.resize(_mask_border(mask, mask_pad), (new_w, new_h),
                              interpolation=cv2.INTER_NEAREST_EXACT)
    right, bottom = out_w - new_w - left, out_h - new_h - top
    if left or top or right or bottom:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                   value=(pad_value,) * 3)
        if mask is not None:
            mask = cv2.copyMakeBorder(_mask_border(mask, mask_pad), top, bottom, left, right,
                                      cv2.BORDER_CONSTANT, value=mask_pad)
    return image, mask, scale, (left, top)


def boxes_to_letterbox(boxes: np.ndarray, scale: float, pad: tuple[float, float]) -> np.ndarray:
    """Map continuous-coordinate boxes of the source image into the letterboxed image."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float64)
    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale + offset).astype(np.float32)


def boxes_from_letterbox(boxes: np.ndarray, scale: float, pad: tuple[float, float],
                         orig_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`boxes_to_letterbox`, clipped to the original ``(h, w)`` image."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float64)
    out = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - offset) / scale
    h, w = orig_size
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out.astype(np.float32)


def content_region(scale: float, pad: tuple[int, int], orig_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the real image inside a letterboxed output.

    Crop a prediction (mask or probabilities) to this region, then resize it to ``orig_size``.
    """
    h, w = orig_size
    return int(pad[1]), int(pad[0]), max(1, round(h * scale)), max(1, round(w * scale))


def warp_boxes(boxes: np.ndarray, labels: np.ndarray, matrix: np.ndarray, out_shape: Shape,
               min_side: float = MIN_BOX_SIDE, min_area_kept: float = MIN_AREA_KEPT,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Transform boxes by a 2x3 continuous-coordinate matrix: corners, min/max, clip, filter."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), labels.reshape(0).astype(np.int64)
    b = boxes.astype(np.float64)
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], axis=1)  # N,4,2
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    out = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    area_before = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    h, w = out_shape
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    bw, bh = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    keep = (bw >= min_side) & (bh >= min_side) & (bw * bh >= min_area_kept * np.maximum(area_before, 1e-9))
    return out[keep].astype(np.float32), labels[keep].astype(np.int64)


def warp_sample(sample: dict, matrix: np.ndarray, out_shape: Shape, pad_value: int = PAD_VALUE,
                ignore_index: int = IGNORE_INDEX) -> dict:
    """Apply a 2x3 continuous-coordinate affine matrix to image, mask and boxes alike."""
    # OpenCV addresses pixel centres by integer index; continuous coords put them at i + 0.5.
    cv_matrix = matrix.astype(np.float64).copy()
    cv_matrix[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5
    h, w = out_shape
    out = dict(sample)
    out["image"] = cv2.warpAffine(sample["image"], cv_matrix, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3)
    if sample.get("mask") is not None:
        out["mask"] = cv2.warpAffine(_mask_border(sample["mask"], ignore_index), cv_matrix, (w, h),
                                     flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=ignore_index)
    out["boxes"], out["labels"] = warp_boxes(sample["boxes"], sample["labels"], matrix, out_shape)
    return out


def warp_mask(mask: np.ndarray, matrix: np.ndarray, out_shape: Shape, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The mask part of :func:`warp_sample` alone (nearest, border = ``ignore_index``)."""
    cv_matrix = matrix.astype(np.float64).copy()
    cv_matrix[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5
    return cv2.warpAffine(_mask_border(mask, ignore_index), cv_matrix, (out_shape[1], out_shape[0]),
                          flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=ignore_index)


def letterbox_sample(sample: dict, out_shape: Shape, pad_value: int = PAD_VALUE,
                     ignore_index: int = IGNORE_INDEX) -> dict:
    """Letterbox a whole sample (evaluation, and training with augmentation off).

    Adds ``scale`` and ``pad`` (left, top) so predictions can be mapped back.
    """
    out = dict(sample)
    out["image"], out["mask"], scale, pad = letterbox(sample["image"], out_shape, pad_value,
                                                      sample.get("mask"), ignore_index)
    if out["mask"] is None:
        out.pop("mask")
    out["boxes"] = boxes_to_letterbox(sample["boxes"], scale, pad)
    out["labels"] = np.asarray(sample["labels"], dtype=np.int64).reshape(-1)
    out["scale"], out["pad"] = float(scale), (int(pad[0]), int(pad[1]))
    return out


# RGB -> YIQ: Y is luma, (I, Q) the chroma plane. Hue is an angle and saturation a radius in
# that plane, so a hue shift, saturation gain and value gain are together one 3x3 matrix.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def color_matrix(hue_shift: float, sat_gain: float, val_gain: float, contrast_gain: float,
                 mean_luma: float) -> np.ndarray:
    """The 3x4 matrix (RGB in, RGB out, last column an offset) of one colour jitter.

    ``hue_shift`` is a fraction of the hue circle (rotation in the YIQ chroma plane),
    saturation scales the chroma radius, value scales everything, and contrast scales
    around the image's mean luma (after the value gain).
    """
    angle = -2 * np.pi * hue_shift  # sign: positive goes red -> yellow -> green, as HSV hue
    c, s = np.cos(angle), np.sin(angle)
    chroma = np.array([[1, 0, 0], [0, c * sat_gain, -s * sat_gain], [0, s * sat_gain, c * sat_gain]])
    linear = contrast_gain * val_gain * (YIQ_TO_RGB @ chroma @ RGB_TO_YIQ)
    offset = (1 - contrast_gain) * val_gain * mean_luma
    return np.concatenate([linear, np.full((3, 1), offset)], axis=1)


def color_jitter(image: np.ndarray, rng: np.random.Generator, hsv_h: float, hsv_s: float,
                 hsv_v: float, contrast: float) -> np.ndarray:
    """Random hue shift, saturation, value and contrast gains as ONE matrix (``cv2.transform``).

    The hue shift is ``U(-hsv_h, hsv_h)`` of the hue circle; gains are ``1 + U(-g, g)``.
    One pass over the pixels (about 4x faster than an HSV round trip with lookup tables) and
    the same maths as :func:`fashionvision.data.gpu_augment.gpu_color_jitter`.
    """
    dh, gs, gv, gc = rng.uniform(-1, 1, 4) * (hsv_h, hsv_s, hsv_v, contrast)
    mean_luma = float(np.dot(cv2.mean(image)[:3], RGB_TO_YIQ[0])) if contrast else 0.0
    return cv2.transform(image, color_matrix(dh, 1 + gs, 1 + gv, 1 + gc, mean_luma))


def _affine_about(center: tuple[float, float], angle: float, scale: float,
                  shift: tuple[float, float]) -> np.ndarray:
    """3x3: rotate by ``angle`` degrees and scale about ``center``, then shift."""
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D(center, angle, scale)
    m[0, 2] += shift[0]
    m[1, 2] += shift[1]
    return m


class TrainTransform:
    """The training augmentation of ``configs/augment/*.yaml`` (see :func:`build_train_transform`).

    Call as ``transform(sample, rng, fetch=None, length=0)``: ``fetch(index)`` returns another
    un-augmented sample of the dataset (for mosaic) and ``length`` is the dataset size.
    """

    def __init__(self, augment: AugmentConfig, out_shape: int | tuple[int, int], task: str,
                 color_on_cpu: bool = True, rect: bool | None = None, pad_value: int = PAD_VALUE,
                 ignore_index: int = IGNORE_INDEX):
        if task not in ("detection", "segmentation"):
            raise ValueError(f"task must be 'detection' or 'segmentation', not {task!r}")
        cfg = augment  # parsed and range-checked already (AugmentConfig.check)
        self.task = task
        self.out_shape = out_shape
        self.rect = (task == "segmentation") if rect is None else bool(rect)
        self.pad_value, self.ignore_index = pad_value, ignore_index
        self.color_on_cpu = color_on_cpu
        self.hflip, self.vflip = float(cfg.hflip), float(cfg.vflip)
        self.hsv = (float(cfg.hsv_h), float(cfg.hsv_s), float(cfg.hsv_v), float(cfg.contrast))
        self.scale_range = (float(cfg.scale[0]), float(cfg.scale[1]))
        self.rotate, self.translate = float(cfg.rotate), float(cfg.translate)
        self.crop = float(cfg.crop)
        self.crop_min_side = float(cfg.crop_min_side)
        # Mosaic glues four photos: a detector learns from the extra objects and contexts, but
        # for the segmenter the config documents mosaic as detection-only.
        self.mosaic = float(cfg.mosaic) if task == "detection" else 0.0
        # The last ``close_mosaic`` fraction of training (by ``progress``, 0..1) sees whole
        # photos, like the ones it is tested on (YOLOv8 turns mosaic off for its last epochs).
        self.close_mosaic = float(cfg.close_mosaic)
        # Segmentation patches: train on random (h, w) windows of the augmented image at the
        # SAME scale, infer on whole images (a fully convolutional model does not mind).
        self.crop_size = _parse_crop_size(cfg.crop_size)
        # ... preferring windows where no single class (background, mostly) covers more than
        # this share of the labelled pixels (up to CROP_TRIES draws; mmseg's cat_max_ratio)
        self.crop_max_ratio = float(cfg.crop_max_ratio)
        # ... or, with this probability, centred on a pixel of one foreground class drawn
        # uniformly among those in the image: a belt or a pair of sunglasses is then as likely
        # to be in a patch as the dress around it (a uniform window mostly shows background)
        self.crop_focus = float(cfg.crop_focus)
        # The last ``close_crop`` fraction of training sees whole images, as at evaluation
        self.close_crop = float(cfg.close_crop)

    def shape_for(self, h: int, w: int) -> Shape:
        return target_shape(self.out_shape, h, w, self.rect)

    def mosaic_at(self, progress: float) -> float:
        """The mosaic probability at ``progress`` (0..1) of training: 0 in the closing phase."""
        return 0.0 if in_closing_phase(progress, self.close_mosaic) else self.mosaic

    def crop_at(self, progress: float) -> Shape | None:
        """The patch size at ``progress`` (0..1) of training: None (whole images) when closing."""
        return None if in_closing_phase(progress, self.close_crop) else self.crop_size

    def __call__(self, sample: dict, rng: np.random.Generator,
                 fetch: Callable[[int], dict] | None = None, length: int = 0,
                 progress: float = 0.0) -> dict:
        h, w = sample["image"].shape[:2]
        mosaic = self.mosaic_at(progress)
        out_shape = self.shape_for(h, w)
        out_h, out_w = out_shape
        scale, _, pad = letterbox_params(h, w, out_shape)
        use_mosaic = fetch is not None and length > 1 and mosaic > 0 and rng.random() < mosaic
        if use_mosaic:
            sample = self._mosaic(sample, rng, fetch, length, out_shape)
            start = np.array([[1.0, 0, -out_w / 2], [0, 1.0, -out_h / 2], [0, 0, 1]])  # canvas centre
        elif self.crop > 0 and rng.random() < self.crop:
            fw, fh = rng.uniform(self.crop_min_side, 1.0, 2)
            cw, ch = w * fw, h * fh
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            s = min(out_h / ch, out_w / cw)
            start = np.array([[s, 0, (out_w - cw * s) / 2 - x0 * s],
                              [0, s, (out_h - ch * s) / 2 - y0 * s], [0, 0, 1]])
        else:
            start = None
        angle = rng.uniform(-self.rotate, self.rotate) if self.rotate else 0.0
        gain = rng.uniform(*self.scale_range) if self.scale_range != (1.0, 1.0) else 1.0
        shift = ((rng.uniform(-self.translate, self.translate) * out_w,
                  rng.uniform(-self.translate, self.translate) * out_h) if self.translate else (0.0, 0.0))
        flip_h = self.hflip > 0 and rng.random() < self.hflip
        flip_v = self.vflip > 0 and rng.random() < self.vflip
        crop_size = self.crop_at(progress)
        window = crop_window(out_shape, crop_size, rng) if crop_size else None

        if start is None and angle == 0.0 and gain == 1.0 and shift == (0.0, 0.0) and window is None:
            # exact letterbox (no second interpolation); flips are exact array flips
            out = letterbox_sample(sample, out_shape, self.pad_value, self.ignore_index)
            if flip_h:
                out = self._flip(out, axis=1)
            if flip_v:
                out = self._flip(out, axis=0)
        else:
            if start is None:
                start = np.array([[scale, 0, pad[0]], [0, scale, pad[1]], [0, 0, 1]])
            m = _affine_about((out_w / 2, out_h / 2), angle, gain, shift) @ start
            if flip_h:
                m = np.array([[-1.0, 0, out_w], [0, 1, 0], [0, 0, 1]]) @ m
            if flip_v:
                m = np.array([[1.0, 0, 0], [0, -1, out_h], [0, 0, 1]]) @ m
            if window is not None:  # a pure translation: the patch keeps the training scale
                if sample.get("mask") is not None:
                    if self.crop_focus > 0 and rng.random() < self.crop_focus:
                        window = self._focused_window(sample["mask"], m[:2], out_shape, window, rng)
                    elif self.crop_max_ratio < 1:
                        window = self._balanced_window(sample["mask"], m[:2], out_shape, window, rng)
                (y0, x0), out_shape = window
                m = np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ m
            out = warp_sample(sample, m[:2], out_shape, self.pad_value, self.ignore_index)
            out["scale"], out["pad"] = float(scale), (int(pad[0]), int(pad[1]))
        if self.color_on_cpu and any(self.hsv):
            out["image"] = color_jitter(out["image"], rng, *self.hsv)
        return out

    def _balanced_window(self, mask: np.ndarray, matrix: np.ndarray, out_shape: Shape,
                         window: tuple[tuple[int, int], Shape], rng: np.random.Generator,
                         ) -> tuple[tuple[int, int], Shape]:
        """The first of up to CROP_TRIES windows whose largest class is <= crop_max_ratio."""
        full = warp_mask(mask, matrix, out_shape, self.ignore_index)
        for attempt in range(CROP_TRIES):
            if attempt:
                window = crop_window(out_shape, self.crop_size, rng)
            (top, left), (h, w) = window
            values = full[top:top + h, left:left + w].ravel()
            counts = np.bincount(values[values != self.ignore_index])
            if counts.sum() and counts.max() <= self.crop_max_ratio * counts.sum():
                break
        return window

    def _focused_window(self, mask: np.ndarray, matrix: np.ndarray, out_shape: Shape,
                        window: tuple[tuple[int, int], Shape], rng: np.random.Generator,
                        ) -> tuple[tuple[int, int], Shape]:
        """A window of the same size centred (within the image) on a pixel of one class.

        The class is drawn uniformly among the foreground classes (not 0 = background, not
        ignored) visible after the warp, then one of its pixels at random; without any such
        class the window drawn uniformly is kept.
        """
        full = warp_mask(mask, matrix, out_shape, self.ignore_index)
        present = np.flatnonzero(np.bincount(full.ravel(), minlength=self.ignore_index + 1))
        present = present[(present != 0) & (present != self.ignore_index)]
        if present.size == 0:
            return window
        ys, xs = np.nonzero(full == present[rng.integers(present.size)])
        pick = rng.integers(ys.size)
        _, (h, w) = window
        top = int(np.clip(ys[pick] - h // 2, 0, out_shape[0] - h))
        left = int(np.clip(xs[pick] - w // 2, 0, out_shape[1] - w))
        return (top, left), (h, w)

    @staticmethod
    def _flip(sample: dict, axis: int) -> dict:
        out = dict(sample)
        out["image"] = np.ascontiguousarray(np.flip(sample["image"], axis=axis))
        if sample.get("mask") is not None:
            out["mask"] = np.ascontiguousarray(np.flip(sample["mask"], axis=axis))
        size = sample["image"].shape[axis]  # width for a horizontal flip (axis 1), height for axis 0
        boxes = sample["boxes"].copy()
        cols = [0, 2] if axis == 1 else [1, 3]
        boxes[:, cols] = size - sample["boxes"][:, cols[::-1]]
        out["boxes"] = boxes
        return out

    def _mosaic(self, sample: dict, rng: np.random.Generator, fetch: Callable[[int], dict],
                length: int, out_shape: Shape) -> dict:
        """Four samples around a random centre of a 2x canvas (boxes clipped to what shows)."""
        out_h, out_w = out_shape
        ch, cw = 2 * out_h, 2 * out_w
        xc, yc = int(rng.uniform(0.5 * out_w, 1.5 * out_w)), int(rng.uniform(0.5 * out_h, 1.5 * out_h))
        samples = [sample] + [fetch(int(i)) for i in rng.integers(0, length, 3)]
        has_mask = sample.get("mask") is not None
        image = np.full((ch, cw, 3), self.pad_value, dtype=np.uint8)
        mask = np.full((ch, cw), self.ignore_index,
                       dtype=np.uint8 if self.ignore_index <= 255 else np.uint16) if has_mask else None
        all_boxes, all_labels = [], []
        for k, part in enumerate(samples):
            ph, pw = part["image"].shape[:2]
            ox = xc - pw if k in (0, 2) else xc   # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
            oy = yc - ph if k in (0, 1) else yc
            x1, y1, x2, y2 = max(ox, 0), max(oy, 0), min(ox + pw, cw), min(oy + ph, ch)
            if x2 <= x1 or y2 <= y1:
                continue
            image[y1:y2, x1:x2] = part["image"][y1 - oy:y2 - oy, x1 - ox:x2 - ox]
            if has_mask:
                mask[y1:y2, x1:x2] = part["mask"][y1 - oy:y2 - oy, x1 - ox:x2 - ox]
            boxes = np.asarray(part["boxes"], dtype=np.float32).reshape(-1, 4) + [ox, oy, ox, oy]
            region = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            kept, labels = warp_boxes(boxes.clip([x1, y1, x1, y1], [x2, y2, x2, y2]),
                                      np.asarray(part["labels"]), region, (ch, cw))
            all_boxes.append(kept)
            all_labels.append(labels)
        out = dict(sample)
        out["image"], out["mask"] = image, mask
        out["boxes"] = np.concatenate(all_boxes).astype(np.float32) if all_boxes else np.zeros((0, 4), np.float32)
        out["labels"] = np.concatenate(all_labels).astype(np.int64) if all_labels else np.zeros(0, np.int64)
        if not has_mask:
            out.pop("mask")
        return out


def in_closing_phase(progress: float, fraction: float) -> bool:
    """Whether ``progress`` (0..1) is in the last ``fraction`` of training (close_mosaic, close_crop)."""
    return fraction > 0 and progress >= 1.0 - fraction


def _parse_crop_size(value) -> Shape | None:
    """``augment.crop_size``: null, an int (square) or [height, width] of positive ints."""
    if value is None:
        return None
    try:
        shape = as_shape(value if isinstance(value, (int, np.integer)) else tuple(value))
    except (TypeError, ValueError):
        shape = (0, 0)
    if min(shape) < 1:
        raise ValueError(f"augment crop_size must be null, a positive int or [height, width], not {value!r}")
    return shape


def crop_window(out_shape: Shape, crop_size: Shape, rng: np.random.Generator) -> tuple[tuple[int, int], Shape]:
    """``((top, left), (h, w))``: a uniformly placed ``crop_size`` window inside ``out_shape``.

    A window larger than the output is shrunk to it (small images train whole).
    """
    h, w = min(crop_size[0], out_shape[0]), min(crop_size[1], out_shape[1])
    top = int(rng.integers(0, out_shape[0] - h + 1))
    left = int(rng.integers(0, out_shape[1] - w + 1))
    return (top, left), (h, w)


def build_train_transform(augment: AugmentConfig | dict | None, out_shape: int | tuple[int, int], task: str,
                          color_on_cpu: bool = True, rect: bool | None = None,
                          pad_value: int = PAD_VALUE, ignore_index: int = IGNORE_INDEX) -> TrainTransform:
    """The training transform for the ``augment`` group (``None`` = letterbox only).

    Args:
        augment: the parsed group, or a dict of its keys (``configs/augment/default.yaml``: hflip, vflip, hsv_h, hsv_s,
            hsv_v, contrast, scale, translate, rotate, crop, mosaic, crop_size); missing keys
            are off. ``crop_size`` ([h, w]) trains on random windows of that size, same scale.
        out_shape: int (square, or rectangular per image when ``rect``) or (H, W).
        task: "detection" or "segmentation" (mosaic is applied to detection only).
        color_on_cpu: False when colour jitter runs batched on the GPU instead
            (:func:`fashionvision.data.gpu_augment.gpu_color_jitter`).
        rect: rectangular :func:`padded_shape` outputs; default True for segmentation.
    """
    if not isinstance(augment, AugmentConfig):
        # a dict from code rather than the CLI: the same checks (a typo must not silently turn
        # an augmentation off), raised as the programming error it is
        try:
            augment = parse_section(AugmentConfig, {"name": "custom", **(augment or {})}, "augment")
        except UserError as exc:
            raise ValueError(str(exc)) from exc
    return TrainTransform(augment, out_shape, task, color_on_cpu, rect, pad_value, ignore_index)
