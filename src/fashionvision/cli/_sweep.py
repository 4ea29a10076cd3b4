"""``fashion-* -m``: one outcome file per job, failures that do not stop the sweep, a summary.

Hydra runs every job of a sweep through the launcher (one after another by default, side by
side with ``hydra/launcher=joblib``, as Slurm jobs with ``submitit_slurm``). Each job here:

* runs in its own folder (``hydra.sweep.dir``/``hydra.sweep.subdir``) with its own log;
* writes ``job.json`` there: status (``ok`` or ``failed``), exit code, the validation metric
  and, for a failure, the error;
* returns the metric to the sweeper (``hydra-optuna-sweeper`` optimises it); a failed job
  returns NaN, which Optuna records as a failed trial, and never raises, because Hydra's
  basic sweeper stops the whole sweep at the first job that raised.

:class:`SweepSummary` (a Hydra callback, ``hydra.callbacks`` in ``paths/default.yaml``) reads
the job files when the sweep ends, whatever launcher ran the jobs, prints one line per job
and writes ``summary.json`` and ``summary.md`` into the sweep folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback

log = logging.getLogger("fashionvision")

JOB_FILE = "job.json"
#: exit codes of a job stopped by SIGTERM or Ctrl-C (it checkpointed): the sweep stops there too
STOPPED_CODES = (130, 143)
#: the summary of the last sweep this process ran (``run_hydra`` reads it for the exit code)
LAST_SUMMARY: list[dict] | None = None


def _job_folder() -> tuple[Path, list[str], int | None, Path]:
    """``(this job's folder, its overrides, its number, the sweep folder)``."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return Path(hc.runtime.output_dir), list(hc.overrides.task), hc.job.get("num"), Path(str(hc.sweep.dir))


def run_job(run: Callable[[], Any]) -> float:
    """Run one job of a sweep; record its outcome in ``job.json``; return its metric (NaN if it failed)."""
    folder, overrides, num, sweep_dir = _job_folder()
    started = time.perf_counter()
    try:
        outcome = run()
        error = outcome.error or (f"exit code {outcome.code}" if outcome.code else None)
    except Exception as exc:  # noqa: BLE001 - a job's failure must not end the sweep
        log.exception("job %s failed", num)
        outcome, error = None, f"{type(exc).__name__}: {exc}"
    value = None if outcome is None or outcome.value is None else float(outcome.value)
    stopped = outcome is not None and outcome.code in STOPPED_CODES
    record = {"job": num, "folder": str(folder), "overrides": overrides,
              "status": "ok" if error is None else "stopped" if stopped else "failed", "code": 1 if outcome is None else outcome.code,
              "metric": None if outcome is None else outcome.metric, "value": value, "error": error,
              "seconds": round(time.perf_counter() - started, 3)}
    folder.mkdir(parents=True, exist_ok=True)
    from fashionvision.data.annotations import atomic_write_text

    atomic_write_text(folder / JOB_FILE, json.dumps(record, indent=1))
    if stopped:
        # a stop signal is for the whole sweep, not for this job alone: the launcher does not
        # catch SystemExit, so no further job starts
        for line in summary_lines(read_jobs(sweep_dir)):
            print(line, flush=True)
        raise SystemExit(outcome.code)
    if error is not None:
        log.error("job %s failed (%s); the sweep goes on", num, error)
        return math.nan
    return math.nan if value is None else value


def read_jobs(sweep_dir: Path) -> list[dict]:
    """The ``job.json`` of every job folder under ``sweep_dir``, in job order; a folder
    without one (a job killed before it ended) is listed as ``missing``."""
    rows = []
    for folder in sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir()),
                         key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        path = folder / JOB_FILE
        if path.is_file():
            rows.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            rows.append({"job": folder.name, "folder": str(folder), "overrides": [], "status": "missing",
                         "metric": None, "value": None, "error": "no job.json (still running or killed)"})
    return rows


def failed(rows: list[dict]) -> bool:
    return any(r["status"] != "ok" for r in rows)


def varying(rows: list[dict]) -> list[list[str]]:
    """Each job's overrides less those every job shares (what tells the jobs apart)."""
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    return [[o for o in r["overrides"] if o not in shared] for r in rows]


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per job: number, status, metric, folder, the overrides of its own (and any error)."""
    lines = [f"sweep: {len(rows)} job(s), {sum(r['status'] == 'ok' for r in rows)} ok, "
             f"{sum(r['status'] != 'ok' for r in rows)} failed"]
    for r, own in zip(rows, varying(rows)):
        value = "-" if r.get("value") is None else f"{r['metric'] or 'value'} {r['value']:.4f}"
        lines.append(f"  job {r['job']}: {r['status']:7s} {value:24s} {r['folder']}  {' '.join(own)}")
        if r["status"] != "ok" and r.get("error"):
            lines.append(f"      {r['error']}")
    return lines


def write_summary(sweep_dir: Path, rows: list[dict]) -> None:
    from fashionvision.data.annotations import atomic_write_text

    sweep_dir = Path(sweep_dir)
    atomic_write_text(sweep_dir / "summary.json", json.dumps(rows, indent=1))
    table = ["| job | status | metric | value | folder | overrides |", "|---|---|---|---|---|---|"]
    for r, own in zip(rows, varying(rows)):
        value = "-" if r.get("value") is None else f"{r['value']:.4f}"
        table.append(f"| {r['job']} | {r['status']} | {r.get('metric') or '-'} | {value} | `{r['folder']}` | "
                     f"`{' '.join(own)}` |")
    atomic_write_text(sweep_dir / "summary.md", "\n".join(table) + "\n")


class SweepSummary(Callback):
    """At the end of a multirun: print and write the summary of every job (any launcher)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        global LAST_SUMMARY
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        rows = read_jobs(sweep_dir)
        LAST_SUMMARY = rows
        write_summary(sweep_dir, rows)
        for line in summary_lines(rows):
            print(line, flush=True)
        print(f"summary: {sweep_dir / 'summary.md'}", flush=True)
