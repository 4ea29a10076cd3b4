"""Command-line words before Hydra sees them: flags anywhere, bare words, dataset aliases.

Hydra parses its argv with argparse, whose positional ``overrides`` must form one run: in
``fashion-train model=unet --cfg job`` any override placed after the flag (ours or the user's)
makes argparse stop with "unrecognized arguments". :func:`reorder` therefore moves every
override in front of Hydra's flags, keeping each flag with its value, so flags work in any
position as users of Hydra expect.
"""

from __future__ import annotations

from pathlib import Path


def hydra_flags() -> dict[str, tuple[object, tuple[str, ...] | None]]:
    """``{option string: (nargs, choices)}`` for every flag of Hydra's own argument parser."""
    from hydra._internal.utils import get_args_parser

    flags = {}
    for action in get_args_parser()._actions:
        for option in action.option_strings:
            flags[option] = (action.nargs, tuple(action.choices) if action.choices else None)
    return flags


def split_argv(args: list[str]) -> tuple[list[str], list[str]]:
    """``(overrides and bare words, flags with their values)``, each in the order given."""
    flags = hydra_flags()
    words: list[str] = []
    flagged: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name not in flags:
            words.append(arg)
            i += 1
            continue
        flagged.append(arg)
        i += 1
        nargs, choices = flags[name]
        if "=" in arg and arg.startswith("--") or nargs == 0:
            continue
        if nargs is None and i < len(args):  # exactly one value
            flagged.append(args[i])
            i += 1
        elif nargs == "?" and i < len(args) and choices and args[i] in choices:
            flagged.append(args[i])
            i += 1
    return words, flagged


def reorder(argv: list[str], bare_word_key: str | None = None) -> list[str]:
    """``[prog, *overrides, *flags]``; a leading bare word becomes ``bare_word_key=WORD``.

    The bare word is the first argument that is neither a flag nor ``key=value``, wherever
    the flags are (``fashion-convert --help ccp`` works like ``fashion-convert ccp --help``).
    """
    words, flagged = split_argv(argv[1:])
    if bare_word_key and words and "=" not in words[0]:
        words = [f"{bare_word_key}={words[0]}", *words[1:]]
    return [argv[0], *words, *flagged]


def dataset_aliases(argv: list[str], group_options: list[str]) -> list[str]:
    """One spelling for the dataset in every command.

    ``dataset=NAME`` (a config of the ``dataset`` group) stays a group choice; ``dataset=DIR``
    (anything else) and the older ``data=DIR`` both become ``dataset.path=DIR``.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "data":
            out.append(f"dataset.path={value}")
        elif sep and key == "dataset" and value not in group_options and value not in ("null", ""):
            out.append(f"dataset.path={value}")
        else:
            out.append(arg)
    return out


def group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
