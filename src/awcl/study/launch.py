"""Running a study's runs: one after another, several at once on this machine, or as jobs on
a cluster (SLURM through submitit).

Every launcher runs the same :func:`awcl.study.runs.execute` on the same planned runs, so
runs keep their cache keys and directories, each writes its own ``DONE`` record, and the
report is the same whichever launcher ran them. A run starts once every run it depends on
has its ``DONE`` file; independent runs (the fine-tunings of different encoders, the
pretraining of different methods) overlap.

- :class:`Serial`: the plan's order, in this process (the default, ``--jobs 1``).
- :class:`LocalPool`: ``--jobs N`` worker processes on this machine. Worker *i* is pinned to
  its share of the cores (``os.sched_setaffinity``) so N jobs do not each take every core;
  pretraining with ``threads: 0`` uses that share. Give ``threads`` explicitly in the study
  config when results must match a serial run bit for bit (float sums depend on it).
- :class:`Cluster`: each run is a submitit job (``--launcher slurm``; ``submitit-local`` runs
  the same jobs as local processes, to try a set-up without a cluster). The study directory
  must be on a file system the nodes share. Interrupting the launcher cancels its jobs.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from awcl.errors import AwclError
from awcl.study.records import RunRecord
from awcl.study.runs import Executors, Run, execute

log = logging.getLogger(__name__)

Started = Callable[[Run], None]
Finished = Callable[[Run, RunRecord], None]


class Launcher(Protocol):
    def run(self, todo: list[Run], executors: Executors, started: Started, finished: Finished) -> None:
        """Execute every run of ``todo`` (dependency order respected); call ``started`` when a
        run begins and ``finished`` with its DONE record when it ends. Raises the first
        failure after the runs already under way have ended (or been cancelled)."""
        ...


# ----------------------------------------------------------------------------- serial
@dataclass
class Serial:
    """One run after another in this process, in the plan's order."""

    def run(self, todo: list[Run], executors: Executors, started: Started, finished: Finished) -> None:
        for run in todo:
            started(run)
            finished(run, execute(run, executors))


# ----------------------------------------------------------------------------- scheduling
class _Handle(Protocol):
    def done(self) -> bool: ...
    def result(self) -> Any: ...


def schedule(
    todo: list[Run],
    submit: Callable[[Run], _Handle],
    wait_any: Callable[[list[_Handle]], None],
    jobs: int | None,
    started: Started,
    finished: Finished,
    cancel: Callable[[_Handle], None] = lambda h: None,
) -> None:
    """Start each run as soon as its dependencies are DONE, at most ``jobs`` at a time
    (None: no limit); ``wait_any`` blocks until at least one handle is done."""
    pending = list(todo)
    running: dict[_Handle, Run] = {}
    error: BaseException | None = None
    try:
        while pending or running:
            if error is None:
                for run in list(pending):
                    if jobs is not None and len(running) >= jobs:
                        break
                    if all(dep.done for dep in run.deps.values()):
                        pending.remove(run)
                        running[submit(run)] = run
                        started(run)
            if not running:
                if error is not None:
                    break
                waiting = pending[0]
                missing = [d.dirname for d in waiting.deps.values() if not d.done]
                raise AwclError(f"{waiting.dirname}: waits for {', '.join(missing)}, which is not planned")
            wait_any(list(running))
            for h in [h for h in running if h.done()]:
                run = running.pop(h)
                try:
                    rec = h.result()
                except BaseException as err:  # keep the first; let the others end
                    if error is None:
                        error = err
                        log.warning("%s failed; waiting for the %d runs under way", run.dirname, len(running))
                    continue
                finished(run, rec)
    except BaseException:  # interrupted: do not leave jobs writing into the study
        for h in running:
            cancel(h)
        raise
    if error is not None:
        raise error


# ----------------------------------------------------------------------------- local pool
def _cpu_slots(jobs: int) -> list[list[int]]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        return []
    if jobs >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(jobs)]
    return [cpus[i::jobs] for i in range(jobs)]


def _init_worker(slots: Any, verbose: bool) -> None:
    """Pool worker start: take a core share, keep the console to warnings."""
    if slots is not None:
        try:
            cpus = slots.get(timeout=10)
            os.sched_setaffinity(0, cpus)
            import torch

            # OpenMP sized its pool when torch loaded (before the pinning): runs that leave
            # their thread count to the default get the share, not every core
            torch.set_num_threads(len(cpus))
        except Exception:  # no share left or no affinity support: run unpinned
            pass
    if not verbose:
        for name in ("awcl", "lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", module=r"(lightning|torch)(\.|$)")


def _execute_quietly(run: Run, executors: Executors) -> RunRecord:
    from awcl import logs

    with logs.summarized():
        return execute(run, executors)


@dataclass
class LocalPool:
    """``jobs`` worker processes on this machine (fresh interpreters, not forks of this one:
    a fork of a threaded process can hang). Executors must be picklable (module-level
    functions, as :func:`awcl.study.backends.real_executors` are)."""

    jobs: int = 2
    pin: bool = True  # give each worker its share of the cores
    verbose: bool = False

    def run(self, todo: list[Run], executors: Executors, started: Started, finished: Finished) -> None:
        if self.jobs < 1:
            raise AwclError(f"--jobs must be at least 1, not {self.jobs}")
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        slots = None
        shares = _cpu_slots(self.jobs) if self.pin else []
        if shares:
            slots = ctx.Queue()  # handed to each worker at its start
            for s in shares:
                slots.put(s)
        with cf.ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=ctx, initializer=_init_worker, initargs=(slots, self.verbose)
        ) as pool:

            def wait_any(handles: list) -> None:
                cf.wait(handles, return_when=cf.FIRST_COMPLETED)

            try:
                schedule(todo, lambda r: pool.submit(_execute_quietly, r, executors), wait_any,
                         self.jobs, started, finished, cancel=lambda h: h.cancel())  # fmt: skip
            except BaseException:
                # Ctrl-C, a test's timeout, a failed run: stop now. Waiting for the runs in
                # progress could wait for ever on a hung one; killing them loses nothing
                # (a run writes under a temporary name and renames when done).
                _kill_workers(pool)
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()


# ----------------------------------------------------------------------------- cluster
@dataclass
class Cluster:
    """Each run as a submitit job. ``cluster``: None (auto: SLURM where ``sbatch`` exists),
    ``"slurm"``, ``"local"`` (local processes) or ``"debug"`` (in this process)."""

    folder: str | os.PathLike  # submitit's job files and logs
    cluster: str | None = "slurm"
    jobs: int | None = None  # at most this many jobs queued or running (None: no limit)
    timeout_min: int = 24 * 60
    cpus_per_task: int = 8
    gpus_per_node: int = 0
    mem_gb: float = 32
    partition: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    additional: dict[str, Any] = field(default_factory=dict)  # further sbatch options
    poll_s: float = 10.0

    def executor(self) -> Any:
        try:
            import submitit
        except ModuleNotFoundError:
            raise AwclError("the cluster launcher needs submitit: pip install 'awcl[cluster]'") from None
        ex = submitit.AutoExecutor(folder=str(Path(self.folder) / "%j"), cluster=self.cluster)
        params: dict[str, Any] = {"name": "awcl", "timeout_min": self.timeout_min}
        if ex.cluster == "slurm":
            params.update(cpus_per_task=self.cpus_per_task, gpus_per_node=self.gpus_per_node,
                          mem_gb=self.mem_gb, tasks_per_node=1, nodes=1)  # fmt: skip
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.setup:
                params["slurm_setup"] = list(self.setup)
            if self.additional:
                params["slurm_additional_parameters"] = dict(self.additional)
        ex.update_parameters(**params)
        return ex

    def run(self, todo: list[Run], executors: Executors, started: Started, finished: Finished) -> None:
        ex = self.executor()
        poll = 0.2 if ex.cluster in ("local", "debug") else self.poll_s

        def submit(run: Run) -> Any:
            ex.update_parameters(name=f"awcl-{run.dirname}"[:60])
            job = ex.submit(_execute_quietly, run, executors)
            log.info("submitted %s as job %s", run.dirname, job.job_id)
            return job

        def wait_any(handles: list) -> None:
            while not any(h.done() for h in handles):
                time.sleep(poll)

        def cancel(job: Any) -> None:
            try:
                job.cancel(check=False)
            except Exception as err:  # best effort; say which job may still be running
                log.warning("could not cancel job %s: %s", job.job_id, err)

        schedule(todo, submit, wait_any, self.jobs, started, finished, cancel)


def make_launcher(
    kind: str = "local",
    jobs: int | None = None,
    folder: str | os.PathLike = ".",
    verbose: bool = False,
    **cluster: Any,
) -> Launcher:
    """``local`` (``jobs`` <= 1: serial, else a pool), ``slurm`` or ``submitit-local``."""
    if kind == "local":
        return Serial() if (jobs or 1) <= 1 else LocalPool(jobs=int(jobs or 1), verbose=verbose)
    if kind in ("slurm", "submitit-local"):
        return Cluster(folder=folder, cluster="slurm" if kind == "slurm" else "local", jobs=jobs, **cluster)
    raise AwclError(f"--launcher {kind!r}: expected local, slurm or submitit-local")
