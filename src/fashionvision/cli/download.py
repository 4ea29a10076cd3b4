"""fashion-download ccp|fashionpedia [dest=DIR] [progress=false]: fetch, check and install a public dataset."""

from __future__ import annotations

from pathlib import Path

from fashionvision.cli._hydra import run_hydra
from fashionvision.download import check_ccp_layout, download_ccp, is_ccp
from fashionvision.errors import UserError


def _ccp(dest: Path, source: dict, cfg: dict) -> int:
    if is_ccp(dest):
        print(f"{dest} already holds a valid CCP dataset ({check_ccp_layout(dest)}); nothing to do")
        return 0
    try:
        download_ccp(dest, url=source["url"], sha256=source.get("sha256"), timeout=float(cfg["timeout"]),
                     progress=bool(cfg["progress"]))
    except UserError as exc:
        if source["url"] in str(exc):  # say which setting holds the address
            raise UserError(f"{exc} (the address is sources.ccp.url={source['url']})") from exc
        raise
    print(f"CCP installed in {dest}: {check_ccp_layout(dest)}")
    return 0


def _fashionpedia(dest: Path, source: dict, cfg: dict) -> int:
    from fashionvision.download_fashionpedia import download_fashionpedia, items_from_config, missing_items

    items = items_from_config(source.get("files") or {})
    if not missing_items(dest, items):
        print(f"{dest} already holds Fashionpedia ({', '.join(i.unpack_to or i.file for i in items)}); nothing to do")
        return 0
    try:
        done = download_fashionpedia(dest, items, timeout=float(cfg["timeout"]), progress=bool(cfg["progress"]),
                                     retries=int(cfg.get("retries", 3)))
    except UserError as exc:
        if any(i.url in str(exc) for i in items):
            raise UserError(f"{exc} (addresses: sources.fashionpedia.base_url={source.get('base_url')} "
                            "or sources.fashionpedia.files.<item>.url)") from exc
        raise
    print(f"Fashionpedia installed in {dest} ({', '.join(done)}); next: fashion-convert fashionpedia")
    return 0


INSTALLERS = {"ccp": _ccp, "fashionpedia": _fashionpedia}


def download(cfg: dict) -> int:
    """Install the dataset into ``dest``; exit 0 without downloading when it is already there."""
    name = cfg["dataset"]["name"]
    source = (cfg.get("sources") or {}).get(name)
    if source is None or name not in INSTALLERS:
        raise UserError(
            f"no public download for '{name}' (available: {', '.join(cfg.get('sources') or {})}); "
            f"download it from its authors' site and unpack it into {cfg['dest']}"
        )
    return INSTALLERS[name](Path(cfg["dest"]), source, cfg)


def main() -> None:
    run_hydra("download", download, bare_word_key="dataset")


if __name__ == "__main__":
    main()
