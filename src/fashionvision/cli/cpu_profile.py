"""The CPU profile ``fashion-train`` picks by itself on a machine without CUDA.

Full YOLOv3 at 416 px for 100 epochs is a GPU recipe: on a laptop its first step takes
minutes. When the user chose neither an experiment nor a trainer (nor ``trainer.device``)
and CUDA is not available, the command adds the model family's CPU profile, an experiment
config named by the ``cpu_profile`` key of ``configs/model/<family>.yaml`` (data, not code:
a new family names its own profile), and says so in one line.

A user who chose a dataset by name keeps it: the profiles set CCP's folders, so then only
``trainer=cpu`` is added (a folder, ``dataset.path=DIR`` or its alias ``dataset=DIR``, keeps the profile). A user who gave ``trainer.epochs`` gets epochs, not the profile's
time budget.
"""

from __future__ import annotations

import os
from pathlib import Path

from fashionvision.cli._hydra import CONFIG_DIR

#: any of these on the command line means the user chose how to train
CHOSEN_KEYS = ("experiment", "trainer", "trainer.device", "study", "hparams_search")


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv[1:] if "=" in a and not a.startswith("-")]


def _load(path: Path) -> dict:
    from omegaconf import OmegaConf

    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def default_choice(group: str, config: str = "train") -> str | None:
    """The option a primary config's defaults list picks for ``group`` (``model: yolo``)."""
    for entry in _load(CONFIG_DIR / f"{config}.yaml").get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    return None


def model_choice(overrides: list[str]) -> str | None:
    """The model family this command line trains (the last ``model=`` wins)."""
    chosen = [a.split("=", 1)[1] for a in overrides if _key(a) == "model"]
    return chosen[-1] if chosen else default_choice("model")


def profile_for(model: str | None) -> str | None:
    """The ``cpu_profile`` named by ``configs/model/<model>.yaml`` (None when it names none)."""
    if not model:
        return None
    profile = _load(CONFIG_DIR / "model" / f"{model}.yaml").get("cpu_profile")
    return str(profile) if profile and (CONFIG_DIR / "experiment" / f"{profile}.yaml").is_file() else None


def describe(experiment: str) -> str:
    """``yolo width 0.25 at 256 px, 12m budget, batch 16`` from the experiment file itself."""
    cfg = _load(CONFIG_DIR / "experiment" / f"{experiment}.yaml")
    model = dict(cfg.get("model") or {})
    trainer = dict(cfg.get("trainer") or {})
    name = next((str(e["override /model"]) for e in cfg.get("defaults", [])
                 if isinstance(e, dict) and "override /model" in e), "")
    words = [" ".join(filter(None, [name, *(f"{k} {model[k]}" for k in ("encoder", "width") if k in model)]))]
    if model.get("image_size"):
        words[0] += f" at {model['image_size']} px"
    if trainer.get("max_time"):
        words.append(f"{trainer['max_time']} budget")
    elif trainer.get("epochs"):
        words.append(f"{trainer['epochs']} epochs")
    if trainer.get("batch_size"):
        words.append(f"batch {trainer['batch_size']}")
    return ", ".join(w for w in words if w)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_profile_overrides(argv: list[str], cuda_available: bool | None = None,
                          env: dict | None = None) -> tuple[list[str], str | None]:
    """``(argv with the profile's overrides added, the line to print)``; unchanged argv and
    None when the user chose, CUDA is there, the run is distributed or the family has no profile."""
    env = dict(os.environ if env is None else env)
    overrides = _overrides(argv)
    keys = {_key(a) for a in overrides}
    if int(env.get("WORLD_SIZE", 1)) > 1 or keys & set(CHOSEN_KEYS):
        return argv, None
    if cuda_available is None:
        cuda_available = _cuda_available()
    if cuda_available:
        return argv, None
    profile = profile_for(model_choice(overrides))
    if profile is None:
        return argv, None
    how = "pass trainer.device=cpu experiment=... to choose"
    named = [a.split("=", 1)[1] for a in overrides if _key(a) == "dataset"]
    # `dataset=NAME` picks another dataset's folders; `dataset=DIR` is only an alias of dataset.path
    if any((CONFIG_DIR / "dataset" / f"{name}.yaml").is_file() for name in named):
        return [*argv, "trainer=cpu"], (
            f"no GPU found: training on the CPU with trainer=cpu (the CPU profile experiment={profile} "
            f"is tuned on CCP, so it is not applied to this dataset); {how}")
    extra = [f"experiment={profile}"]
    if "trainer.epochs" in keys and "trainer.max_time" not in keys:
        extra.append("trainer.max_time=null")  # the user asked for epochs, not the profile's budget
    return [*argv, *extra], f"no GPU found: using the CPU profile experiment={profile} ({describe(profile)}); {how}"
