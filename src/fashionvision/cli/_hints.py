"""One-line errors with a "did you mean" for mistyped overrides, and the groups shown by --help.

Hydra answers ``trainer.batch_sz=4`` with a multi-line "Could not override ... Key 'batch_sz'
is not in struct" and ``model=unnet`` with a list of options. Before the app runs, the
overrides are composed once with Hydra's compose API; when that fails for a key or a group
option that does not exist, :func:`override_error` names the closest existing one at that
node (``difflib``) in one ``error:`` line. Other failures are left to Hydra's own report.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

_KEY = re.compile(r"Could not override '([^']+)'")
_MISSING_KEY = re.compile(r"Key '([^']+)' is not in struct")
_OPTION = re.compile(r"Could not find '([^'/]+)/([^']+)'")


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _groups(config_dir: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in config_dir.iterdir() if d.is_dir()}


def _closest(word: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _key_hint(cfg: Any, key: str, root_extra: list[str]) -> str:
    """``'a.b.c'`` -> the nearest existing key at the first missing level, as a hint."""
    from omegaconf import DictConfig

    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            break
        if part in node:
            node = node[part]
            continue
        names = [str(k) for k in node.keys()] + (root_extra if depth == 0 else [])
        close = _closest(part, names)
        if close:
            return f" (did you mean '{'.'.join([*parts[:depth], close, *parts[depth + 1:]])}'?)"
        where = ".".join(parts[:depth]) or "the top level"
        return f" ({where} has: {', '.join(sorted(names))})"
    return ""


def override_error(config_dir: Path, config_name: str, overrides: list[str]) -> str | None:
    """The one-line error for mistyped keys or group options in ``overrides``, or None.

    Every bad override is named (the others are composed again without it to find the node
    the hint is taken from); ``hydra.*`` overrides are Hydra's business and not checked.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    checked = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    groups = _groups(config_dir)
    problems: list[str] = []
    for _ in range(len(checked) + 1):
        try:
            cfg = _compose(config_dir, config_name, checked)
            break
        except (HydraException, OmegaConfBaseException) as exc:
            text = str(exc)
            option = _OPTION.search(text)
            key = _KEY.search(text) or (_MISSING_KEY.search(text) if "override" in text.lower() else None)
            if option:
                group, value = option.group(1), option.group(2)
                close = _closest(value, groups.get(group, []))
                hint = f"did you mean '{group}={close}'? " if close else ""
                problems.append(f"no '{value}' in config group '{group}' ({hint}options: "
                                f"{', '.join(groups.get(group, []))})")
                bad = [o for o in checked if o.lstrip("+").split("=", 1)[0] == group]
            elif key:
                name = key.group(1)
                bad = [o for o in checked if o.split("=", 1)[0] == name]
                if not bad:
                    return None
                problems.append(name)
            else:
                return None  # not a typo: Hydra reports it itself
            if not bad:
                return None
            checked = [o for o in checked if o not in bad]
    else:
        return None
    if not problems:
        return None
    lines = []
    for problem in problems:
        if problem.startswith("no '"):
            lines.append(problem)
        else:
            hint = _key_hint(cfg, problem, list(groups))
            plus = "" if "did you mean" in hint else f"; a leading + adds a new key (+{problem}=...)"
            lines.append(f"unknown key '{problem}'{hint}{plus}")
    return "; ".join(lines)


def groups_text(choices: dict[str, Any], config_dir: Path) -> str:
    """``group: option, option`` for the config groups this command composes (not Hydra's)."""
    groups = _groups(config_dir)
    lines = []
    for group in sorted(choices):
        if group.startswith("hydra") or group not in groups:
            continue
        chosen = choices[group]
        options = ", ".join(f"{o} (default)" if o == chosen else o for o in groups[group])
        lines.append(f"{group}: {options}")
    return "\n".join(lines) if lines else "(none: set values as key=value)"
