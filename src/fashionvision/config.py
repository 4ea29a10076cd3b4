"""Typed config sections: one parser for every group (trainer, model, augment, anchors).

Hydra hands library code plain dicts. :func:`parse_section` turns one into a dataclass once,
at the edge, and fails loudly: an unknown key (a typo such as ``model.widht=0.5``) names the
closest valid key ("did you mean"), a value of the wrong kind names the key and what it should
be, and each dataclass's ``check()`` refuses values that make no sense (``model.width=0``,
``model.conf=2``) before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from fashionvision.errors import UserError

T = TypeVar("T")

#: the input size (square letterbox side, or long side) when a config gives none
DEFAULT_IMAGE_SIZE = 416


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check one value against its annotation (as written in the dataclass)."""
    if value is None:
        if "None" in annotation or annotation == "Any":
            return None
        raise UserError(f"{key} must not be null")
    if annotation == "Any":
        return value
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("list"):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {value!r}")
        return list(value)
    if annotation.startswith("dict"):
        if not isinstance(value, dict):
            raise UserError(f"{key} must be a mapping such as {{a: 1.0}}, got {value!r}")
        return dict(value)
    if annotation.startswith("str |"):  # a string or a number (durations)
        return value
    if not isinstance(value, str):
        raise UserError(f"{key} must be a string, got {value!r}")
    return value


def parse_section(cls: type[T], raw: dict | T | None, section: str) -> T:
    """``raw`` (a plain dict, or already ``cls``) as a validated ``cls`` instance.

    Raises:
        UserError: unknown keys (with the closest valid name), values of the wrong type, and
            whatever ``cls.check()`` refuses; every message names ``section.key``.
    """
    if isinstance(raw, cls):
        return raw
    raw = dict(raw or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [key for key in raw if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise UserError(f"unknown {section} setting {', '.join(hints)}; valid: {', '.join(known)}")
    values = {key: _coerce(f"{section}.{key}", value, str(known[key].type)) for key, value in raw.items()}
    parsed = cls(**values)
    check = getattr(parsed, "check", None)
    if callable(check):
        check()
    return parsed


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """One-line refusal of a value: ``model.width must be > 0, got 0.0``."""
    if not ok:
        raise UserError(f"{key} must be {what}, got {value!r}")


def check_probability(key: str, value: float | None) -> None:
    """Thresholds and probabilities live in [0, 1]."""
    if value is not None:
        require(0.0 <= value <= 1.0, key, value, "between 0 and 1")


def check_image_size(key: str, value: int) -> None:
    """Every network here downsamples five times: sizes are positive multiples of 32."""
    require(value >= 32 and value % 32 == 0, key, value, "at least 32 and a multiple of 32")
