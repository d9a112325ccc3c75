"""Running a study: every unfinished trial in its own worker process, locally or on Ray.

The driver (this module) is the only writer of the results database. It registers
the study's trials, skips the finished ones (trials are identified by config hash),
hands the others to workers, and writes each outcome together with its epochs in one
transaction. Killed at any moment (even by SIGKILL) and started again, it re-runs
exactly the trials that had not been written; local workers end themselves when
their driver dies.

Local (default): ``workers`` long-lived processes (spawn), one trial each at a time,
``torch.set_num_threads(cores // workers)``. A worker that dies takes only its trial
with it: the trial is recorded as ``crashed`` and a new worker takes its place.

Ray (``address="host:port"``): each trial a Ray task with ``num_cpus=cpus_per_trial``
and ``max_retries`` (a lost worker or node has its trial retried); outcomes stream
back to the driver with ``ray.wait``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import statistics
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spikegrad.config import ConfigError
from spikegrad.studies.db import FINISHED, ResultsDB
from spikegrad.studies.spec import METRICS, StudySpec, TrialConfig, load_study_spec
from spikegrad.studies.worker import ray_trial, worker_main

RAY_MAX_RETRIES = 3
Outcome = dict[str, Any]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_study(
    spec: StudySpec | str | Path | dict[str, Any],
    db_path: str | Path,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    trial_function: Callable[[dict[str, Any]], Outcome] | None = None,
) -> dict[str, Any]:
    """Run every unfinished trial of ``spec`` and record it in the database ``db_path``.

    ``workers``: local worker processes (default: one per core, or cores //
    ``cpus_per_trial``). ``address``: run on the Ray cluster there instead
    (``"host:port"``; ``"local"`` starts a throwaway single-machine Ray).
    ``retry_failed``: run ``failed`` and ``crashed`` trials again. ``trial_function``
    replaces :func:`~spikegrad.studies.worker.run_trial` (tests, custom trainers; it
    must be importable by the workers).

    Returns a summary: study, db, trials, already_finished, ran, counts (per status),
    best (the best trial by the spec's metric), workers, address, wall_time_s.
    """
    if not isinstance(spec, StudySpec):
        spec = load_study_spec(spec)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    trials = spec.trials()
    started = time.perf_counter()
    db_path = Path(db_path)
    with _DriverLock(db_path), ResultsDB(db_path) as db:
        db.register_study(spec.name, spec.to_dict(), trials)
        statuses = db.statuses(t.config_hash() for t in trials)
        if retry_failed:
            again = [h for h, s in statuses.items() if s in ("failed", "crashed")]
            db.reset_trials(again)
            statuses.update({h: "pending" for h in again})
        todo = [t for t in trials if statuses.get(t.config_hash()) not in FINISHED]
        done_before = len(trials) - len(todo)
        tracker = _Tracker(spec, db, total=len(trials), initial=done_before, progress=progress)
        cores = available_cores()
        n_workers = workers or max(1, cores // spec.cpus_per_trial)
        try:
            if not todo:
                pass
            elif address is None:
                n_workers = min(n_workers, len(todo))
                threads = max(1, cores // n_workers)
                _run_local(todo, tracker, n_workers, threads, trial_function)
            else:
                _run_ray(todo, tracker, address, spec.cpus_per_trial, trial_function)
        finally:
            tracker.close()
        status = db.status(spec.name)
        return {
            "study": spec.name,
            "db": str(db_path),
            "trials": len(trials),
            "already_finished": done_before,
            "ran": tracker.ran,
            "counts": status["counts"],
            "best": best_trial(db.trials(study=spec.name), spec.metric),
            "workers": n_workers if address is None else None,
            "address": address,
            "wall_time_s": time.perf_counter() - started,
        }


def best_trial(trials: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The trial with the best finite ``metric`` (max for accuracies, min for losses)."""
    scored = [t for t in trials if _finite(t.get(metric))]
    if not scored:
        return None
    pick = max if METRICS.get(metric, "max") == "max" else min
    best = pick(scored, key=lambda t: t[metric])
    return {"config_hash": best["config_hash"], "axes": best["axes"], "status": best["status"],
            metric: best[metric]}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class _Tracker:
    """Driver bookkeeping: payloads, writing outcomes, the progress bar, the running best."""

    def __init__(self, spec: StudySpec, db: ResultsDB, total: int, initial: int,
                 progress: bool) -> None:
        self.spec, self.db = spec, db
        self.metric = spec.metric
        self.ran = 0
        self.problems = 0
        self.best: float | None = None
        self._medians: list[float | None] | None = None
        self._medians_stale = True
        finished = db.trials(study=spec.name, status=FINISHED)
        self.problems = sum(t["status"] in ("failed", "crashed") for t in finished)
        for trial in finished:
            self._update_best(trial.get(self.metric))
        self.bar = tqdm(total=total, initial=initial, desc=spec.name, unit="trial",
                        disable=not progress, dynamic_ncols=True, smoothing=0.1)
        self._postfix()

    def payload(self, trial: TrialConfig) -> dict[str, Any]:
        payload: dict[str, Any] = {"config": trial.to_dict()}
        rule = self.spec.early_stopping
        if rule is not None:
            payload["medians"] = self._current_medians(rule.min_trials)
            payload["grace_epochs"] = rule.grace_epochs
        return payload

    def started(self, trial: TrialConfig) -> None:
        self.db.mark_running(trial.config_hash())

    def finished(self, trial: TrialConfig, outcome: Outcome) -> None:
        self.db.record_result(trial.config_hash(), outcome)
        self.ran += 1
        self._medians_stale = True
        if outcome["status"] in ("failed", "crashed"):
            self.problems += 1
        self._update_best((outcome.get("result") or {}).get(self.metric))
        self.bar.update(1)
        self._postfix()

    def _update_best(self, value: Any) -> None:
        if not _finite(value):
            return
        better = max if METRICS[self.metric] == "max" else min
        self.best = value if self.best is None else better(self.best, value)

    def _postfix(self) -> None:
        postfix = {}
        if self.best is not None:
            postfix[f"best {self.metric}"] = f"{self.best:.4f}"
        if self.problems:
            postfix["failed"] = self.problems
        self.bar.set_postfix(postfix, refresh=True)

    def _current_medians(self, min_trials: int) -> list[float | None] | None:
        """Per epoch: median over finished trials of their best valid accuracy so far."""
        if self._medians_stale:
            finished = {t["config_hash"] for t in self.db.trials(
                study=self.spec.name, status=("completed", "stopped"))}
            curves: dict[str, list[float]] = {}
            for row in self.db.all_epochs(self.spec.name):
                if row["config_hash"] in finished and _finite(row.get("valid_accuracy")):
                    curve = curves.setdefault(row["config_hash"], [])
                    curve.append(max(row["valid_accuracy"], curve[-1] if curve else -1.0))
            length = max((len(c) for c in curves.values()), default=0)
            medians: list[float | None] = []
            for epoch in range(length):
                values = [c[epoch] for c in curves.values() if len(c) > epoch]
                medians.append(statistics.median(values) if len(values) >= min_trials else None)
            self._medians = medians if any(m is not None for m in medians) else None
            self._medians_stale = False
        return self._medians

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------------
# Local execution


class _Worker:
    def __init__(self, context, threads: int, trial_function) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=worker_main, args=(child, threads, os.getpid(), trial_function),
            daemon=True, name="spikegrad-study-worker",
        )
        self.process.start()
        child.close()
        self.trial: TrialConfig | None = None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def _crashed(exitcode: int | None) -> Outcome:
    if exitcode is not None and exitcode < 0:
        try:
            reason = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            reason = f"killed by signal {-exitcode}"
    else:
        reason = f"exit code {exitcode}"
    return {"status": "crashed", "error": f"worker process died ({reason})",
            "finished_at": time.time()}


def _run_local(todo: list[TrialConfig], tracker: _Tracker, n_workers: int, threads: int,
               trial_function) -> None:
    context = multiprocessing.get_context("spawn")
    pending = deque(todo)
    # workers ignore Ctrl-C: the driver stops them (their trials stay unfinished)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        pool = [_Worker(context, threads, trial_function) for _ in range(n_workers)]
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        while pending or any(w.trial is not None for w in pool):
            for i, worker in enumerate(pool):
                if worker.trial is None and pending:
                    trial = pending.popleft()
                    tracker.started(trial)
                    try:
                        worker.conn.send(tracker.payload(trial))
                        worker.trial = trial
                    except (BrokenPipeError, OSError):  # died while idle: replace, try again
                        pending.appendleft(trial)
                        worker.kill()
                        pool[i] = _Worker(context, threads, trial_function)
            busy = [w for w in pool if w.trial is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for i, worker in enumerate(pool):
                if worker.trial is None or not ({worker.conn, worker.process.sentinel} & ready):
                    continue
                outcome = None
                try:
                    if worker.conn.poll():
                        outcome = worker.conn.recv()
                except (EOFError, OSError):
                    outcome = None
                except Exception:  # noqa: BLE001 - a half-sent result: the worker died
                    outcome = None
                trial, worker.trial = worker.trial, None
                if outcome is None:
                    worker.process.join(timeout=5)
                    outcome = _crashed(worker.process.exitcode)
                    worker.kill()
                    pool[i] = _Worker(context, threads, trial_function)
                tracker.finished(trial, outcome)
    finally:
        for worker in pool:
            if worker.trial is None:
                worker.stop()
            elif worker.process.is_alive():  # interrupted: its trial runs again on resume
                worker.process.terminate()
        deadline = time.monotonic() + 5
        for worker in pool:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            worker.kill()


# ---------------------------------------------------------------------------------------
# Ray execution


def _run_ray(todo: list[TrialConfig], tracker: _Tracker, address: str, cpus: int,
             trial_function) -> None:
    try:
        import ray
        from ray import exceptions as ray_errors
    except ImportError:
        raise ConfigError(
            "--address: Ray is not installed (pip install 'spikegrad[ray]')"
        ) from None
    try:
        host = address.rsplit(":", 1)[0]
        loopback = address == "local" or host in ("localhost", "::1") or host.startswith("127.")
        # a cluster on this machine's loopback: keep the driver on loopback too
        extra = {"_node_ip_address": "127.0.0.1"} if loopback else {}
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **extra)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"--address {address}: cannot connect to a Ray cluster ({first})"
                          ) from None
    try:
        task = ray.remote(num_cpus=cpus, max_retries=RAY_MAX_RETRIES)(ray_trial)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        pending = deque(todo)
        in_flight: dict[Any, TrialConfig] = {}
        while pending or in_flight:
            while pending and len(in_flight) < 2 * slots:
                trial = pending.popleft()
                tracker.started(trial)
                in_flight[task.remote(tracker.payload(trial), cpus, trial_function)] = trial
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=10.0)
            for ref in done:
                trial = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray_errors.RayTaskError as error:
                    outcome = {"status": "failed", "finished_at": time.time(),
                               "error": str(error).splitlines()[0]}
                except ray_errors.RayError as error:  # worker or node lost, retries used up
                    outcome = {"status": "crashed", "finished_at": time.time(),
                               "error": f"{type(error).__name__}: "
                                        f"{str(error).splitlines()[0] if str(error) else ''}"}
                tracker.finished(trial, outcome)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------


def driver_active(db_path: str | Path) -> bool:
    """Whether a study driver is running on this database now (holds its lock)."""
    lock = _DriverLock(Path(db_path))
    if not lock.path.exists():
        return False
    try:
        with lock:
            return False
    except ConfigError:
        return True


class _DriverLock:
    """One driver per database: an advisory lock on ``<db>.lock``, freed when the process dies."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self.handle = None

    def __enter__(self) -> _DriverLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")  # noqa: SIM115 - held for the driver's lifetime
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise ConfigError(f"{self.path.with_suffix('')}: another study driver is running "
                              "on this database") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
