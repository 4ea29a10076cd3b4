"""Checkpoints that survive crashes and are safe to load from strangers.

* Written atomically: a temporary file in the same folder, flushed and fsynced, then
  ``os.replace``; the previous ``last.pt`` stays as ``last.prev.pt`` so one bad file never
  loses a run.
* Written on a background thread when asked (:class:`CheckpointWriter`): the loop pays for a
  copy of the tensors (on a GPU, one device-to-host copy) instead of serialising and fsyncing
  up to a gigabyte; one write at a time, and the run waits for it before it ends.
* Everything in a checkpoint is a tensor, number, string, list or dict, so it loads with
  ``torch.load(weights_only=True)``; RNG states are stored as tensors and lists, never as
  pickled objects. A file that carries pickled objects is refused.
* Rebuilding a model (:func:`fashionvision.families.rebuild_task`) uses the family registry
  by model name only; no ``_target_`` from a checkpoint is ever instantiated.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashionvision.errors import UserError
from fashionvision.output_guard import Input, unique_temporary, writable_target

log = logging.getLogger("fashionvision.engine")

CHECKPOINT_DIR = "checkpoints"
LAST, PREV, BEST = "last.pt", "last.prev.pt", "best.pt"


# ---------------------------------------------------------------- RNG states as plain data
def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors/lists (loadable with weights_only)."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------- writing
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict, keep_previous: bool = True) -> Path:
    """Write ``state`` to ``path`` atomically; the file it replaces becomes ``<stem>.prev.pt``.

    A crash at any moment leaves either the old or the new file under ``path`` (never a torn
    one), and the one before it under the ``.prev`` name. Temporary names are unique to each
    call (two writers never share one). A full disk or a file-size limit is one
    :class:`UserError`; the partial file is removed and the last good checkpoint stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writable_target(path)
    tmp = unique_temporary(path)
    try:
        try:
            with open(tmp, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except (RuntimeError, OSError) as exc:  # torch.save turns ENOSPC/EFBIG into RuntimeError
            kept = f"; the last good checkpoint '{path}' is intact" if path.is_file() else ""
            raise UserError(f"could not write checkpoint '{path}' (disk full or a file-size limit? "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}){kept}") from exc
        if keep_previous and path.exists():
            prev = previous_of(path)
            link_tmp = unique_temporary(prev)
            try:
                # a hard link keeps `path` in place while `prev` is swapped in
                link_tmp.unlink()
                os.link(path, link_tmp)
                os.replace(link_tmp, prev)
            except OSError:
                link_tmp.unlink(missing_ok=True)
                os.replace(path, prev)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def snapshot(state: Any) -> Any:
    """A copy of ``state`` that training can no longer change: tensors copied to the CPU,
    dicts, lists and tuples rebuilt (model and optimizer state dicts share the live tensors)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: snapshot(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(value) for value in state)
    return state


class CheckpointWriter:
    """Writes checkpoint files with :func:`save_checkpoint`, one batch of files at a time.

    ``background=True``: :meth:`write` takes a :func:`snapshot` and returns while a thread
    writes the files, each still atomic, so a crash during the write leaves the previous
    ``last.pt``. The next :meth:`write` and :meth:`wait` first wait for the thread, and a write
    that failed (a full disk) raises there, as the :class:`UserError` a synchronous write raises.
    """

    def __init__(self, background: bool = False):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.write_seconds: float | None = None  # the last finished write, copy excluded (the budget's reserve)

    def write(self, files: list[tuple[Path, dict, bool]], background: bool = True) -> None:
        """Write each ``(path, state, keep_previous)``; in the background when both this writer
        and the call allow it (the final checkpoint of a run is written in the foreground)."""
        self.wait()
        if not (self.background and background):
            self._write_all(files)
            self.wait()  # its error, raised here
            return
        copies = [(path, snapshot(state), keep_previous) for path, state, keep_previous in files]
        # not a daemon: an interpreter that exits mid-write finishes the file first
        self._thread = threading.Thread(target=self._write_all, args=(copies,), name="checkpoint-writer")
        self._thread.start()

    def _write_all(self, files: list[tuple[Path, dict, bool]]) -> None:
        started = time.perf_counter()
        try:
            for path, state, keep_previous in files:
                save_checkpoint(path, state, keep_previous=keep_previous)
        except BaseException as exc:  # handed to the training thread by wait()
            self._error = exc
            return
        self.write_seconds = time.perf_counter() - started

    def wait(self) -> None:
        """Until the write under way (if any) has finished; re-raises its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def settle(self) -> None:
        """:meth:`wait` while another error is on its way out: a failed write is logged, not raised."""
        try:
            self.wait()
        except Exception as exc:
            log.error("the last background checkpoint write failed too: %s", exc)


def previous_of(path: Path) -> Path:
    return path.with_name(f"{path.stem}.prev{path.suffix}")


# ---------------------------------------------------------------- reading
def _offer(path: Path) -> str:
    candidates = [previous_of(path)]
    if path.name == BEST:
        candidates.append(path.with_name(LAST))
    for candidate in candidates:
        if candidate.is_file() and candidate != path:
            return f"; the previous checkpoint '{candidate}' may be intact (trainer.resume={candidate})"
    return ""


def _not_a_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch file at all (random bytes, another format), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if zipfile.is_zipfile(path):
        return None
    if head[:2] == b"PK":
        return "is corrupt or truncated (a zip archive without its end: an interrupted write or a full disk)"
    if head[:1] == b"\x80":  # torch's legacy (pre-1.6) format starts as a pickle
        return None
    return "is not a PyTorch checkpoint (neither a zip archive nor a legacy torch file: random bytes, " \
           "another format, or overwritten)"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with one clear error for each way it fails."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    problem = _not_a_checkpoint(path)
    if problem:
        raise UserError(f"checkpoint '{path}' {problem}{_offer(path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # only a refused global is a pickled object; any other unpickling error is a damaged file
        if "global" in text.lower() and ("weights only" in text.lower() or "weights_only" in text):
            raise UserError(
                f"checkpoint '{path}' contains pickled Python objects, which are refused "
                f"(loaded with weights_only=True because checkpoints may come from others); "
                f"only tensors, numbers, strings, lists and dicts are accepted"
            ) from exc
        raise UserError(f"checkpoint '{path}' is corrupt or truncated ({_first_line(exc)}){_offer(path)}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"checkpoint '{path}' is corrupt or truncated ({_first_line(exc)}){_offer(path)}") from exc
    if not isinstance(state, dict):
        raise UserError(f"checkpoint '{path}' holds a {type(state).__name__}, not a checkpoint dict")
    for entry in ("config", "task", "ema"):
        if state.get(entry) is not None and not isinstance(state[entry], dict):
            raise UserError(f"checkpoint '{path}': its '{entry}' is a {type(state[entry]).__name__}, not a "
                            f"mapping; it is not a checkpoint that fashion-train wrote (or it was edited)")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def resolve_checkpoint(ckpt_or_run_dir: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder resolved to ``checkpoints/best.pt`` then ``last.pt``."""
    path = Path(ckpt_or_run_dir)
    if path.is_file():
        return path
    if path.is_dir():
        for folder in (path / CHECKPOINT_DIR, path):
            for name in (BEST, LAST):
                if (folder / name).is_file():
                    return folder / name
        raise UserError(f"no checkpoint in '{path}' (looked for {CHECKPOINT_DIR}/{BEST} and {CHECKPOINT_DIR}/{LAST})")
    raise UserError(f"checkpoint or run folder '{path}' does not exist")


def checkpoint_inputs(ckpt: str | os.PathLike) -> list[Input]:
    """A checkpoint and the run folder it belongs to, as inputs of the output guard.

    Evaluating into the run folder itself would replace the run's ``metrics.json``; a fresh
    folder below it (``run/eval_test``) is the peer benchmarks' layout.
    """
    ckpt = Path(ckpt)
    folder = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else ckpt.parent
    return [Input(folder, "training run folder", subfolders_ok=True), Input(ckpt, "checkpoint")]


def _damaged(path: Path) -> str | None:
    """Why ``path`` is unreadable, from its bytes alone (zip CRCs; no unpickling), or None."""
    problem = _not_a_checkpoint(path)
    if problem or not zipfile.is_zipfile(path):
        return problem
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        return f"is corrupt or truncated ({_first_line(exc)})"
    return f"is corrupt (damaged entry {bad})" if bad else None


def find_resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``trainer.resume=auto`` continues: the run's ``last.pt``, else its ``.prev``.

    A ``last.pt`` that is unreadable (a crash or a full disk while the file system was
    failing) falls back to ``last.prev.pt``, saying so; both unreadable
    is a :class:`UserError`.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    problems = []
    for name in (LAST, PREV):
        path = folder / name
        if not path.is_file():
            continue
        problem = _damaged(path)
        if problem is None:
            if problems:
                log.warning("trainer.resume=auto: %s; resuming from %s instead (one checkpoint earlier)",
                            problems[0], path)
            return path
        problems.append(f"'{path}' {problem}, unreadable")
    if problems:
        raise UserError(f"trainer.resume=auto: no readable checkpoint in '{folder}' ({'; '.join(problems)}); "
                        "start afresh in a new hydra.run.dir, or with trainer.overwrite=true")
    return None


def check_fresh_run_folder(run_dir: str | os.PathLike, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a fresh run over an earlier run's checkpoints.

    ``best.pt``, ``last.pt``, ``last.prev.pt`` and ``metrics.json`` of the earlier run would be
    replaced one by one as the new run writes; that is someone's work. Continuing it
    (``trainer.resume=auto``) or ``trainer.overwrite=true`` are the two ways on.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if overwrite or str(resume or "") == "auto":
        return
    found = [name for name in (LAST, PREV, BEST) if (folder / name).is_file()]
    if not found:
        return
    if resume and Path(resume).resolve().parent == folder.resolve():
        return  # resuming from one of this run's own checkpoints
    raise UserError(f"run folder '{run_dir}' already holds checkpoints ({', '.join(found)}); continue that run "
                    f"with trainer.resume=auto, start a new one in a fresh hydra.run.dir=DIR, or replace it "
                    f"with trainer.overwrite=true")


def model_state(ckpt: dict, prefer_ema: bool = True) -> dict:
    """The weights to use from a checkpoint: EMA when present (and preferred), else the model."""
    if prefer_ema and isinstance(ckpt.get("ema"), dict) and "module" in ckpt["ema"]:
        return ckpt["ema"]["module"]
    if "model" in ckpt:
        return ckpt["model"]
    if "state_dict" in ckpt:
        return ckpt["state_dict"]
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state dict
    raise UserError("checkpoint holds no model weights (no 'model', 'ema' or 'state_dict' entry)")


def load_matching(model: nn.Module, state: dict, source: str = "checkpoint",
                  prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """Load the tensors whose names and shapes match; return (and log) the skipped names.

    The one partial-weights loader (fine-tuning, Darknet-converted and U-Net weights). Each name
    of ``state`` is tried under every one of ``prefixes`` (a U-Net wrapper takes the bare
    network's weights under ``net.`` and an encoder's under ``net.encoder.``).
    """
    own = model.state_dict()
    mapped = {}
    for key, value in state.items():
        bare = key.removeprefix("module.").removeprefix("_orig_mod.")  # DDP / torch.compile
        mapped[next((p + bare for p in prefixes if p + bare in own), bare)] = value
    state = mapped
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = [f"{k} {tuple(state[k].shape)} -> {tuple(own[k].shape)}"
               for k in state if k in own and k not in usable]
    missing = [k for k in own if k not in state]
    model.load_state_dict(usable, strict=False)
    if not usable:
        raise UserError(f"{source}: no layer matches this model (is it a checkpoint of another model?)")
    if skipped:
        log.warning("%s: %d layers have other shapes and start fresh: %s", source, len(skipped), "; ".join(skipped))
    if missing:
        log.warning("%s: %d layers of the model are not in it and start fresh: %s", source, len(missing),
                    ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    log.info("%s: loaded %d of %d tensors", source, len(usable), len(own))
    return skipped


def resume_mismatch(state: dict, model: nn.Module, described: dict, model_cfg: dict) -> str | None:
    """Why ``state`` cannot continue this run's ``model``, in words, or None when it can.

    Checked in the order a user can act on: another model family (``model=unet`` on a yolo
    run), other classes, then tensors of other shapes (``model.width`` changed), naming the
    ``model.*`` settings that differ rather than PyTorch's size-mismatch dump.
    """
    theirs_desc = state.get("task") or {}
    theirs_cfg = dict((state.get("config") or {}).get("model") or {})
    their_model = theirs_desc.get("model") or theirs_cfg.get("name")
    our_model = described.get("model") or model_cfg.get("name")
    if their_model and our_model and their_model != our_model:
        return (f"it holds a model={their_model} ({theirs_desc.get('task', '?')}) run, this run builds "
                f"model={our_model} ({described.get('task', '?')}); resume with model={their_model}, or "
                "train the new model in a fresh run folder (hydra.run.dir=...)")
    theirs, ours = theirs_desc.get("classes"), list(described.get("classes") or [])
    if theirs is not None and list(theirs) != ours:
        return (f"it was trained on {len(theirs)} classes, the data has {len(ours)}"
                f"{'' if len(theirs) != len(ours) else ' (other names)'}")
    weights = state.get("model")
    if not isinstance(weights, dict):
        return "it holds no model weights"
    own = model.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items()
              if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)]
    names = [k for k in own if k not in weights] + [k for k in weights if k not in own]
    if not shapes and not names:
        return None
    changed = [f"model.{k}={theirs_cfg.get(k)!r} in the checkpoint, {model_cfg.get(k)!r} now"
               for k in sorted(set(theirs_cfg) | set(model_cfg))
               if k not in ("weights", "encoder_weights") and theirs_cfg.get(k) != model_cfg.get(k)]
    detail = "; ".join(changed) if changed else "the model's layers differ"
    count = f"{len(shapes)} tensors of other shapes" if shapes else f"{len(names)} tensors missing or extra"
    example = (shapes or names)[0]
    return f"its model does not match this run's ({detail}; {count}, e.g. {example})"


def load_pretrained(model: nn.Module, path: str | os.PathLike, classes: list[str] | None = None) -> list[str]:
    """Fine-tuning start: ``model.weights=PATH``, skipping layers whose shapes differ.

    A model that knows other formats (Darknet ``.weights``) defines ``load_pretrained(path)``
    and is asked first; otherwise ``path`` must be one of our checkpoints or a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.weights='{path}' does not exist")
    ckpt = load_checkpoint(path) if zipfile.is_zipfile(path) else None  # ours, not a Darknet binary
    theirs = ((ckpt or {}).get("task") or {}).get("classes")
    if classes is not None and theirs is not None and len(theirs) != len(classes):
        log.warning("model.weights '%s' was trained for %d classes, the data has %d: the class-dependent "
                    "layers start fresh", path, len(theirs), len(classes))
    hook = getattr(model, "load_pretrained", None)
    if callable(hook):
        result = hook(path)
        if isinstance(result, dict):
            result = result.get("skipped_shape_mismatch", [])
        return list(result) if isinstance(result, (list, tuple)) else []
    if ckpt is None:
        raise UserError(f"model.weights='{path}' is not a PyTorch checkpoint, and this model reads no other format")
    return load_matching(model, model_state(ckpt), source=str(path))
