"""Several training runs at once: each in a process of its own, ``parallel`` at a time.

A run's weights depend on its thread count (``trainer.threads``: the order of a float sum), not
on what runs beside it, so runs given the same threads train alike one after another or side by
side. On a CPU, two one-thread runs on two cores finish sooner than the same runs one after
another with two threads each: small models' GEMMs scale poorly across threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sharedflow.errors import first_line
from sharedflow.train.run import train

__all__ = ["Job", "available_cores", "train_all"]

LOG = "train.log"  # a run's output when it trains in a process of its own


@dataclass
class Job:
    """One run to train: ``sharedflow train recipe overrides``, into ``run_dir``;
    ``error``, once done: empty, or why it failed (the last line of its log)."""

    recipe: str
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def given(self) -> list[str]:
        """The overrides, then the run directory."""
        return [*self.overrides, f"run_dir={self.run_dir}"]


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def train_all(
    jobs: Sequence[Job],
    parallel: int,
    threads: int | None = None,
    done: Callable[[Job], None] | None = None,
) -> None:
    """Train every job, ``parallel`` at a time (1: one after another, in this process); each
    finished job is passed to ``done``. ``threads``: the thread count the jobs' overrides
    give, set for each process's libraries too (OpenMP, MKL). A failed job keeps its error
    and the others go on; an interrupt stops every process (each resumes when trained again).
    """
    if parallel < 1:
        raise ValueError(f"parallel={parallel}: expected at least 1")
    if parallel == 1:
        for job in jobs:
            _train_here(job)
            if done:
                done(job)
        return
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    waiting, running = list(jobs), {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                job = waiting.pop(0)
                running[_start(job, env)] = job
            process = _wait_any(list(running))
            job = running.pop(process)
            if process.returncode:
                job.error = _last_line(job.run_dir / LOG) or f"exit status {process.returncode}"
            if done:
                done(job)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait()


def _train_here(job: Job) -> None:
    try:
        train(job.recipe, job.given)
    except Exception as error:  # one failed run must not stop the others
        job.error = f"{type(error).__name__}: {first_line(error)}"
        job.run_dir.mkdir(parents=True, exist_ok=True)
        (job.run_dir / LOG).write_text(traceback.format_exc())


def _start(job: Job, env: dict[str, str]) -> subprocess.Popen:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with (job.run_dir / LOG).open("w") as log:
        command = [sys.executable, "-m", "sharedflow.cli", "train", job.recipe, *job.given]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_any(processes: list[subprocess.Popen]) -> subprocess.Popen:
    """The first of ``processes`` to end (``os.wait`` reaps any child, so poll instead)."""
    while True:
        for process in processes:
            if process.poll() is not None:
                return process
        time.sleep(0.2)


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
