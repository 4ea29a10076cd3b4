"""fashion-download ccp [dest=DIR] [progress=false]: fetch, check and install a public dataset."""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_hydra
from fashionvision.convert.download import check_ccp_layout, download_ccp, is_ccp
from fashionvision.errors import UserError


def download(cfg: dict) -> int:
    """Install the dataset into ``dest``; exit 0 without downloading when it is already there."""
    name = cfg["dataset"]["name"]
    source = (cfg.get("sources") or {}).get(name)
    if source is None:
        raise UserError(
            f"no public download for '{name}' (available: {', '.join(cfg.get('sources') or {})}); "
            f"download it from its authors' site and unpack it into {cfg['dest']}"
        )
    dest = Path(cfg["dest"])
    if is_ccp(dest):
        print(f"{dest} already holds a valid CCP dataset ({check_ccp_layout(dest)}); nothing to do")
        return 0
    download_ccp(dest, url=source["url"], sha256=source.get("sha256"), timeout=float(cfg["timeout"]),
                 progress=bool(cfg["progress"]))
    print(f"CCP installed in {dest}: {check_ccp_layout(dest)}")
    return 0


def main() -> None:
    run_hydra("download", download, bare_word_key="dataset")


if __name__ == "__main__":
    main()
