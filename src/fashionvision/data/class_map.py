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
