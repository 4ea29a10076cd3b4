"""The README and the docs say what the toolkit does today.

* the README's first three commands are the install, the main job and the tests that CI
  (``.ci/run``) runs;
* every ``fashion-...`` command in a ``bash`` block of the README, ``docs/*.md`` and
  ``benchmarks/README.md`` is an installed entry point and parses: it runs in this process with
  ``--cfg job`` appended, which composes and checks the config (typos, groups, values) and stops
  before anything is downloaded, trained or written;
* every command named in the README's command table is an entry point;
* every relative link in those files resolves to a file or folder of the repository.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BENCHMARKS = [ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "HISTORY.md"]
COMMAND_FILES = [README, *DOCS, ROOT / "benchmarks" / "README.md"]
LINK_FILES = [README, *DOCS, *BENCHMARKS]

# Pages other branches are writing at the same time; links to them may dangle until those branches
# are merged. Remove each entry once its file exists on the branch that holds this test.
PENDING_PAGES: set[str] = set()  # pages linked before they are written

SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]


ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")  # OMP_NUM_THREADS=1 fashion-train ...


def bash_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every logical line in the file's ```bash blocks (``\\`` joined)."""
    lines, out, inside, pending, start = path.read_text(encoding="utf-8").splitlines(), [], False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every ``fashion-...`` command of the documents (each once)."""
    seen, found = set(), []
    for path in COMMAND_FILES:
        for number, line in bash_blocks(path):
            for part in re.split(r"\s*&&\s*", line.split(" #")[0]):
                part = ENV_PREFIX.sub("", part.strip())
                words = shlex.split(part, comments=True)
                if words and words[0].startswith("fashion-") and part.strip() not in seen:
                    seen.add(part.strip())
                    found.append((f"{path.relative_to(ROOT)}:{number}", part.strip()))
    return found


COMMANDS = documented_commands()


def test_documents_name_commands():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert "README.md" in where and len(COMMANDS) > 20, COMMANDS


def test_readme_starts_with_install_main_job_and_tests():
    first = [shlex.split(line, comments=True) for _, line in bash_blocks(README)[:4]]
    first = [words for words in first if words]
    assert first[:3] == [["pip", "install", "-e", ".[dev]"], ["fashion-train"], ["pytest"]], first
    assert "`pytest -m slow`" in bash_blocks(README)[3][1]  # the pytest line's comment names the slow tier
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in ci
    assert re.search(r"^python -m pytest -q$", ci, re.M) and re.search(r"^python -m pytest -q -m slow$", ci, re.M)


def test_command_table_names_entry_points():
    table = README.read_text(encoding="utf-8").split("## Commands")[1].split("\n## ")[0]
    named = set(re.findall(r"^\| `(fashion-[a-z]+)", table, re.M))
    assert named == set(SCRIPTS), named ^ set(SCRIPTS)


@pytest.fixture
def isolated(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FASHION_CONVERTED_DIR", str(tmp_path / "converted"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_command(monkeypatch, capsys, argv: list[str]) -> tuple[int, str]:
    """``argv --cfg job`` through the entry point's ``main`` in this process; (exit code, stderr)."""
    module_name, function = SCRIPTS[argv[0]].split(":")
    module = importlib.import_module(module_name)
    monkeypatch.setattr(sys, "argv", [*argv, "--cfg", "job"])
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("hydra", "fashionvision"))]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    try:
        with pytest.raises(SystemExit) as exit_info:
            getattr(module, function)()
            raise SystemExit(0)
    finally:  # Hydra configures logging on the captured streams
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
    _, err = capsys.readouterr()
    return int(exit_info.value.code or 0), err


def first_job(argv: list[str]) -> list[str]:
    """A multirun command (``-m``) as its first job: each sweep (``a,b``) by its first value, since
    Hydra composes one config at a time (``--cfg job`` does not combine with ``-m``)."""
    if not any(word in ("-m", "--multirun") for word in argv):
        return argv
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    job = []
    for word in argv:
        if word in ("-m", "--multirun"):
            continue
        if "=" in word and not word.startswith("-"):
            override = parser.parse_override(word)
            if override.is_sweep_override():
                word = f"{override.get_key_element()}={next(override.sweep_string_iterator())}"
        job.append(word)
    return job


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(isolated, monkeypatch, capsys, where: str, command: str):
    argv = first_job([os.path.expandvars(word) for word in shlex.split(command, comments=True)])
    assert argv[0] in SCRIPTS, f"{where}: {argv[0]} is not an entry point of pyproject.toml"
    code, err = run_command(monkeypatch, capsys, argv)
    assert code == 0, f"{where}: {command}\n{err[-2000:]}"
    assert not (isolated / "outputs").exists()


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("path", LINK_FILES, ids=[str(p.relative_to(ROOT)) for p in LINK_FILES])
def test_relative_links_resolve(path: Path):
    missing = []
    for target in relative_links(path):
        resolved = (path.parent / target.split("#")[0]).resolve()
        name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
        if not resolved.exists() and name not in PENDING_PAGES:
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)}: {missing}"

