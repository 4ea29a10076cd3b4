"""The shape of the package, checked so it cannot drift back (docs/architecture.md).

* ``lint-imports`` keeps the layer and family-independence contracts of ``pyproject.toml``;
* no import cycle, lazy (function-level) imports included;
* a handful of modules at the package root;
* no code outside ``families/`` tests a family's name: adding a family is one folder and one
  registry line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fashionvision"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_import_cycles() -> None:
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter")
    sys.path.insert(0, str(ROOT / "src"))
    try:
        graph = grimp.build_graph("fashionvision")
    finally:
        sys.path.remove(str(ROOT / "src"))
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert not cycles, cycles


def test_a_handful_of_modules_at_the_package_root() -> None:
    roots = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert roots == ["__init__.py", "config.py", "errors.py", "output_guard.py", "progress.py"], roots


FAMILY_WORDS = re.compile(r"""(==|!=|\bin\b)\s*\(?["'](yolo|unet)["']|["'](yolo|unet)["']\s*(==|!=|:)""")


def test_no_family_name_tested_outside_families() -> None:
    """``x == "yolo"`` or ``{"unet": ...}`` outside ``families/`` would make a third family edit them."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "families" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FAMILY_WORDS.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_test_files_have_unique_names() -> None:
    """The tests mirror the package in folders without ``__init__.py``: two files of one name
    would stop pytest's collection (its default import mode imports each by its basename)."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
