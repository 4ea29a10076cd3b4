"""The shipped class maps cover their datasets' class lists exactly; bad maps are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashionvision.convert import deepfashion2, modanet
from fashionvision.data.class_map import available, load_class_map
from fashionvision.errors import UserError

COMMON = ("top", "outerwear", "dress", "skirt", "pants", "shorts", "shoes", "bag", "accessories")


def test_shipped_maps_cover_their_datasets(shared_data: Path):
    import scipy.io

    assert available() == ["ccp", "deepfashion2", "fashionpedia", "modanet"]
    cell = scipy.io.loadmat(shared_data / "ccp" / "label_list.mat")["label_list"].ravel()
    ccp = [str(e.ravel()[0]) for e in cell if str(e.ravel()[0]) not in ("null", "hair", "skin")]
    described = json.loads((shared_data / "fashionpedia-sample" / "category_attributes_descriptions.json").read_text())
    fashionpedia = [c["name"] for c in described["categories"]
                    if c["supercategory"] not in ("garment parts", "closures", "decorations")]
    lists = {"ccp": ccp, "fashionpedia": fashionpedia, "deepfashion2": list(deepfashion2.CATEGORIES),
             "modanet": list(modanet.CATEGORIES)}
    assert len(lists["ccp"]) == 56 and len(lists["fashionpedia"]) == 27
    for name, classes in lists.items():
        cmap = load_class_map(name)
        assert cmap.target == COMMON
        indices = cmap.index_map(classes)
        assert len(indices) == len(classes)
        assert set(cmap.mapping) | set(cmap.unmapped) == set(classes), name  # nothing stale, nothing missing
    assert load_class_map("fashionpedia").report(fashionpedia)["unmapped"] == [
        "jumpsuit", "leg warmer", "tights, stockings", "sock", "umbrella"]
    assert load_class_map("deepfashion2").report(lists["deepfashion2"])["targets_without_source"] == [
        "shoes", "bag", "accessories"]


def test_a_class_the_map_does_not_mention_is_an_error(tmp_path: Path):
    with pytest.raises(UserError, match=r"does not mention the dataset's class\(es\) \['kimono'\]"):
        load_class_map("modanet").index_map(["bag", "kimono"])
    (tmp_path / "m.yaml").write_text("target: [top]\nmap: {shirt: tops}\nunmapped: [shirt]\n")
    with pytest.raises(UserError, match="'shirt' -> 'tops' is not a target; 'shirt' is both mapped and unmapped"):
        load_class_map(tmp_path / "m.yaml")
    with pytest.raises(UserError, match="unknown class map 'zara'; shipped: ccp, deepfashion2"):
        load_class_map("zara")


def test_eval_mapping_maps_both_sides_and_counts_what_falls_out():
    import numpy as np

    from fashionvision.data.class_map import eval_mapping

    ccp = ["jeans", "swimwear", "t-shirt"]
    mapping = eval_mapping(ccp, list(modanet.CATEGORIES), "auto")
    assert mapping.names == COMMON and mapping.report["model"]["class_map"] == "ccp"
    assert mapping.report["model"]["unmapped"] == ["swimwear"] and mapping.report["dataset"]["class_map"] == "modanet"
    labels, keep = mapping.labels(np.array([0, 1, 2]))
    assert keep.tolist() == [True, False, True] and labels[keep].tolist() == [COMMON.index("pants"), COMMON.index("top")]
    boxes = mapping.boxes(np.array([[0, 0, 5, 5, 1], [1, 1, 4, 4, 7]]))  # belt -> accessories, pants -> pants
    assert boxes[:, 4].tolist() == [COMMON.index("accessories"), COMMON.index("pants")]
    with pytest.raises(UserError, match="none of the class maps"):
        eval_mapping(["kimono"], list(modanet.CATEGORIES), "auto")
