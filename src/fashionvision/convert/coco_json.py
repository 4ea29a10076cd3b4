"""Reading a COCO instances file: load it in one line of error, and drop what is not an entry.

The COCO-based converters (:mod:`fashionvision.convert.coco` and its presets) index images,
annotations and categories by id; an entry that is not a JSON object, or an id that is a list,
would end deep inside them in AttributeError or TypeError. :func:`clean_entries` names, counts
and drops those before anything else looks at the file, so the strict/skip rule of the converter
decides what happens to them like any other bad record.
"""

from __future__ import annotations

import json
from pathlib import Path

from fashionvision.convert.common import Skip
from fashionvision.errors import UserError


def load_coco(path: Path, what: str = "COCO") -> dict:
    """Load a COCO JSON once, with a clear error naming the file."""
    if not path.is_file():
        raise UserError(f"{what} annotation file '{path}' does not exist")
    try:
        # Text mode: json decodes as it reads instead of holding the bytes and a decoded copy.
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise UserError(f"{path}: not usable JSON (nested too deeply to be a COCO annotation file)") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a COCO annotation file (the top level is a JSON "
                        f"{type(data).__name__}, expected an object with images, annotations, categories)")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise UserError(f"{path}: not a COCO annotation file (no list {', '.join(missing)})")
    return data


def _is_id(value: object) -> bool:
    """An id COCO files use: a number or a string (a list or an object cannot be a key)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


ENTRY_IDS = {"categories": ("category", ("id",)), "images": ("image", ("id",)),
             "annotations": ("annotation", ("id", "image_id", "category_id"))}


def clean_entries(data: dict, name: str, skipped: list[Skip]) -> int:
    """Drop, name and count the entries that are not objects or whose ids are not ids.

    Every later step may then use ``entry.get`` and ids as dictionary keys: a string among the
    images, or a list as an id, would otherwise end in AttributeError or TypeError. A category
    must also have a text ``name``. Returns the number of annotations dropped.
    """
    dropped = 0
    for key, (what, ids) in ENTRY_IDS.items():
        kept = []
        for index, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                skipped.append(Skip(f"{name}: {what} #{index} (not an object)", f"a JSON {type(entry).__name__}"))
            else:
                bad = next((f for f in ids if not _is_id(entry.get(f))), None)
                if bad is None and key == "categories" and not isinstance(entry.get("name"), str):
                    bad, kind = "name", "a string"
                else:
                    kind = "a number or string"
                if bad is None:
                    kept.append(entry)
                    continue
                label = f"{what} id {entry['id']}" if _is_id(entry.get("id")) else f"{what} #{index}"
                skipped.append(Skip(f"{name}: {label}", f"'{bad}' is {entry.get(bad)!r}, not {kind}"))
            dropped += key == "annotations"
        data[key] = kept
    return dropped
