#!/usr/bin/env python
"""Write a synthetic Fashionpedia-style COCO JSON at the scale of the real train file.

Used to benchmark ``fashion-convert fashionpedia`` without the 540 MB download. The structure
follows the official ``sample.json`` (``info, categories, attributes, images, annotations,
licenses``; integer polygon coordinates; annotations with ``attribute_ids``, ``area``,
``iscrowd``) with the final 46 categories and 294 attributes from
``category_attributes_descriptions.json``. Mixed in, as in the real data and the sample: some
annotations without ``bbox`` (derive it from the segmentation), some compressed-string RLEs and
some uncompressed (list) RLEs. Images do not exist as files: convert with
``fashionpedia.require_images=false``.

Usage::

    python scripts/make_synthetic_fashionpedia.py --out /tmp/synthetic.json \
        [--images 45000] [--annotations 330000] [--vertices 110] [--seed 0]

The JSON is streamed to disk annotation by annotation, so the generator itself stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

DEFAULT_CATEGORIES = Path(__file__).resolve().parents[1].parent / "shared/data/fashionpedia-sample/category_attributes_descriptions.json"
PART_SUPERCATEGORIES = {"garment parts", "closures", "decorations"}
PART_SHARE = 0.4  # share of annotations that are parts (sleeves, necklines, zippers, ...)
NO_BBOX_SHARE = 0.05
RLE_STRING_SHARE = 0.01
RLE_LIST_SHARE = 0.003


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """Width, height like Fashionpedia's photos (mostly portrait, long side up to ~1500)."""
    if rng.random() < 0.75:
        width = int(rng.integers(450, 1025))
        height = int(width * rng.uniform(1.2, 1.6))
    else:
        height = int(rng.integers(450, 1025))
        width = int(height * rng.uniform(1.0, 1.5))
    return width, height


def polygon(rng: np.random.Generator, width: int, height: int, part: bool, vertices: int) -> np.ndarray:
    """A star-shaped integer polygon ``[x0, y0, x1, y1, ...]`` inside the image."""
    scale = rng.uniform(0.03, 0.2) if part else rng.uniform(0.1, 0.6)
    rx, ry = scale * width / 2, scale * height / 2 * rng.uniform(0.8, 2.0)
    cx, cy = rng.uniform(rx, width - rx), rng.uniform(min(ry, height / 2), max(height - ry, height / 2))
    count = max(4, int(rng.poisson(vertices if not part else vertices / 2)))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radius = rng.uniform(0.6, 1.0, count)
    xs = np.clip(cx + rx * radius * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + ry * radius * np.sin(angles), 0, height - 1)
    return np.stack([xs, ys], axis=1).round().astype(np.int64).ravel()


def shoelace(points: np.ndarray) -> float:
    xs, ys = points[0::2].astype(np.float64), points[1::2].astype(np.float64)
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def uncompressed_counts(rle: dict) -> list[int]:
    """Column-major run lengths (starting with a run of zeros) of an RLE, as COCO list counts."""
    flat = coco_mask.decode(rle).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def annotation_json(rng, ann_id, image_id, category, width, height, vertices, attributes) -> str:
    part = category["supercategory"] in PART_SUPERCATEGORIES
    points = polygon(rng, width, height, part, vertices)
    entry: dict = {"id": ann_id, "image_id": image_id, "category_id": category["id"]}
    entry["attribute_ids"] = sorted(rng.choice(attributes, size=int(rng.integers(0, 6)), replace=False).tolist())
    draw = rng.random()
    if draw < RLE_STRING_SHARE + RLE_LIST_SHARE:
        rle = coco_mask.frPyObjects([points.tolist()], height, width)[0]
        if draw < RLE_STRING_SHARE:
            segmentation: object = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
        else:
            segmentation = {"size": [height, width], "counts": uncompressed_counts(rle)}
        area = float(coco_mask.area(rle))
        bbox = [float(v) for v in coco_mask.toBbox(rle)]
        entry["iscrowd"] = 1 if draw >= RLE_STRING_SHARE else 0
    else:
        segmentation = None  # written below as text: much faster than json.dumps of a big list
        area = shoelace(points)
        xs, ys = points[0::2], points[1::2]
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]
        entry["iscrowd"] = 0
    entry["area"] = area
    if rng.random() >= NO_BBOX_SHARE:
        entry["bbox"] = bbox
    text = json.dumps(entry)
    seg_text = json.dumps(segmentation) if segmentation is not None else "[[" + ", ".join(map(str, points.tolist())) + "]]"
    return text[:-1] + ', "segmentation": ' + seg_text + "}"


def write_synthetic(out: Path, images: int, annotations: int, vertices: float, seed: int, categories_file: Path) -> dict:
    """Stream the synthetic file to ``out``; return counts."""
    reference = json.loads(categories_file.read_text(encoding="utf-8"))
    categories, attributes = reference["categories"], [a["id"] for a in reference["attributes"]]
    mains = [c for c in categories if c["supercategory"] not in PART_SUPERCATEGORIES]
    parts = [c for c in categories if c["supercategory"] in PART_SUPERCATEGORIES]
    rng = np.random.default_rng(seed)
    per_image = rng.multinomial(annotations, np.full(images, 1.0 / images))
    sizes = [image_size(rng) for _ in range(images)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    ann_id = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write('{"info": ' + json.dumps({"year": 2020, "version": "synthetic", "description": "synthetic Fashionpedia-like file for benchmarks"}))
        handle.write(', "categories": ' + json.dumps(categories) + ', "attributes": ' + json.dumps(reference["attributes"]))
        handle.write(', "images": [')
        handle.write(", ".join(
            json.dumps({"id": i + 1, "width": w, "height": h, "file_name": f"{i + 1:012d}.jpg", "license": 1})
            for i, (w, h) in enumerate(sizes)
        ))
        handle.write('], "annotations": [')
        first = True
        for index, count in enumerate(per_image):
            width, height = sizes[index]
            for _ in range(int(count)):
                pool = parts if rng.random() < PART_SHARE else mains
                category = pool[int(rng.integers(len(pool)))]
                ann_id += 1
                handle.write(("" if first else ", ") + annotation_json(rng, ann_id, index + 1, category, width, height, vertices, attributes))
                first = False
        handle.write('], "licenses": [{"id": 1, "name": "synthetic", "url": ""}]}\n')
    os.replace(tmp, out)
    return {"images": images, "annotations": ann_id, "bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=45000)
    parser.add_argument("--annotations", type=int, default=330000)
    parser.add_argument("--vertices", type=float, default=180, help="mean polygon vertices of a main item (parts: half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--categories", type=Path, default=DEFAULT_CATEGORIES,
                        help="category_attributes_descriptions.json (the final 46 categories)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = write_synthetic(args.out, args.images, args.annotations, args.vertices, args.seed, args.categories)
    counts["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
