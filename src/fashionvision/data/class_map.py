"""Class maps: one dataset's taxonomy onto a small common set, so that datasets can be compared.

A class map is a YAML file (``fashionvision/data/class_maps/<name>.yaml`` ships one per dataset:
``fashionpedia``, ``deepfashion2``, ``modanet``, ``ccp``)::

    source: modanet
    target: [top, outerwear, dress, skirt, pants, shorts, shoes, bag, accessories]
    map: {bag: bag, belt: accessories, ...}
    unmapped: [...]            # source classes with no counterpart, listed on purpose

Every class of a dataset must be either mapped or listed as unmapped: a class the file does not
mention is an error, never dropped silently. :meth:`ClassMap.index_map` gives, for a dataset's
class list, each class's target index (``None`` for the unmapped), and :meth:`ClassMap.report`
says what falls out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from fashionvision.errors import UserError

SHIPPED = Path(__file__).resolve().parent / "class_maps"


@dataclass(frozen=True)
class ClassMap:
    """``source`` classes onto ``target`` names; ``unmapped`` lists those with no counterpart."""

    name: str
    target: tuple[str, ...]
    mapping: dict[str, str]
    unmapped: tuple[str, ...]

    def index_map(self, classes: Sequence[str], what: str = "the dataset") -> list[int | None]:
        """Target index of each class of ``classes`` (None: unmapped); unknown classes are an error."""
        unknown = [c for c in classes if c not in self.mapping and c not in self.unmapped]
        if unknown:
            raise UserError(f"class map '{self.name}' does not mention {what}'s class(es) {unknown}; "
                            f"add them to its map or unmapped list")
        return [self.target.index(self.mapping[c]) if c in self.mapping else None for c in classes]

    def report(self, classes: Sequence[str]) -> dict:
        """What the map does to ``classes``: the unmapped ones and the targets nothing maps onto."""
        reached = {self.mapping[c] for c in classes if c in self.mapping}
        return {"class_map": self.name, "unmapped": [c for c in classes if c in self.unmapped],
                "targets_without_source": [t for t in self.target if t not in reached]}


def available() -> list[str]:
    """Names of the shipped class maps."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def load_class_map(name_or_path: str | os.PathLike) -> ClassMap:
    """A shipped map by name (``modanet``) or a YAML file by path, checked."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SHIPPED / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"unknown class map '{name_or_path}'; shipped: {', '.join(available())} "
                            "(or give a .yaml file)")
    if not path.is_file():
        raise UserError(f"class map file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("target"), list) or not isinstance(data.get("map"), dict):
        raise UserError(f"{path}: a class map needs 'target' (a list) and 'map' (source class: target class)")
    target = tuple(str(t) for t in data["target"])
    mapping = {str(k): str(v) for k, v in data["map"].items()}
    unmapped = tuple(str(u) for u in data.get("unmapped") or [])
    problems = [f"'{k}' -> '{v}' is not a target" for k, v in mapping.items() if v not in target]
    problems += [f"'{u}' is both mapped and unmapped" for u in unmapped if u in mapping]
    if len(set(target)) != len(target):
        problems.append("a target is listed twice")
    if problems:
        raise UserError(f"{path}: {'; '.join(problems)}")
    return ClassMap(str(data.get("source") or path.stem), target, mapping, unmapped)


@dataclass(frozen=True)
class EvalMapping:
    """A model's classes and a dataset's, both onto one target set: what evaluation across datasets needs.

    ``model_index[k]`` / ``data_index[k]``: the target index of model / dataset class k (None: unmapped).
    """

    names: tuple[str, ...]
    model_index: tuple[int | None, ...]
    data_index: tuple[int | None, ...]
    report: dict

    def boxes(self, boxes) -> "object":
        """Ground-truth ``[N, 5]`` boxes in target ids; boxes of unmapped dataset classes left out."""
        import numpy as np

        boxes = np.asarray(boxes).reshape(-1, 5)
        target = np.array([-1 if self.data_index[int(c)] is None else self.data_index[int(c)] for c in boxes[:, 4]],
                          dtype=np.int64).reshape(-1)
        kept = boxes[target >= 0].copy()
        kept[:, 4] = target[target >= 0]
        return kept

    def labels(self, labels) -> tuple["object", "object"]:
        """``(target labels, keep mask)`` of predicted model labels (unmapped ones: keep False)."""
        import numpy as np

        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        target = np.array([-1 if self.model_index[int(c)] is None else self.model_index[int(c)] for c in labels],
                          dtype=np.int64).reshape(-1)
        return np.maximum(target, 0), target >= 0


def find_map(classes: Sequence[str], names: Sequence[str]) -> ClassMap:
    """The first of ``names`` (shipped names or files) that mentions every class of ``classes``."""
    tried = []
    for name in names:
        cmap = load_class_map(name)
        if all(c in cmap.mapping or c in cmap.unmapped for c in classes):
            return cmap
        tried.append(cmap.name)
    raise UserError(f"none of the class maps {tried} covers the classes {list(classes)[:8]}"
                    f"{' ...' if len(classes) > 8 else ''}; give class_map=[MODEL_MAP,DATASET_MAP]")


def eval_mapping(model_classes: Sequence[str], data_classes: Sequence[str],
                 class_map: str | Sequence[str]) -> EvalMapping:
    """The mapping for ``fashion-eval class_map=...``.

    ``class_map``: ``auto`` (the shipped maps that fit each side), one name or file (tried for
    both sides, then the shipped ones), or ``[MODEL_MAP, DATASET_MAP]``.
    """
    if isinstance(class_map, str):
        given = [] if class_map == "auto" else [class_map]
        model_map = find_map(model_classes, given + available())
        data_map = find_map(data_classes, given + available())
    else:
        if len(class_map) != 2:
            raise UserError(f"class_map takes a name, auto, or [MODEL_MAP,DATASET_MAP]; got {list(class_map)}")
        model_map, data_map = load_class_map(class_map[0]), load_class_map(class_map[1])
    if model_map.target != data_map.target:
        raise UserError(f"class maps '{model_map.name}' and '{data_map.name}' map onto different targets "
                        f"({list(model_map.target)} vs {list(data_map.target)})")
    report = {"model": model_map.report(model_classes), "dataset": data_map.report(data_classes),
              "target": list(model_map.target)}
    return EvalMapping(model_map.target, tuple(model_map.index_map(model_classes, "the model")),
                       tuple(data_map.index_map(data_classes)), report)
