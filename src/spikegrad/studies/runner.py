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

import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from spikegrad.config import ConfigError
from spikegrad.errors import first_line
from spikegrad.io import ExclusiveLock
from spikegrad.studies.db import FINISHED, ResultsDB
from spikegrad.studies.spec import (
    METRICS,
    StudySpec,
    TrialConfig,
    condition_key,
    load_study_spec,
)
from spikegrad.studies.tables import best_by, finite_number
from spikegrad.studies.worker import ray_trial, worker_main

RAY_MAX_RETRIES = 3
Outcome = dict[str, Any]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Work:
    """One trial to run; with ``stop_after`` it pauses after that many epochs (a rung).
    With ``checkpoint_dir`` it keeps its checkpoint there, and continues from it."""

    trial: TrialConfig
    stop_after: int | None = None
    checkpoint_dir: str | None = None


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
    best (the best trial by the spec's metric), workers, address, wall_time_s; with a
    ``select`` section also selections (the value chosen per condition).
    """
    return run_studies([spec], db_path, workers, address, progress, retry_failed,
                       trial_function)[0]


def run_studies(
    specs: list[StudySpec | str | Path | dict[str, Any]],
    db_path: str | Path,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    trial_function: Callable[[dict[str, Any]], Outcome] | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_study` for several studies at once, in one pool of workers (trials that
    two studies share run once). Studies with a ``select`` section run in two phases: the
    rungs of every selection together with all other trials, then the chosen values."""
    specs = [s if isinstance(s, StudySpec) else load_study_spec(s) for s in specs]
    if workers is not None and workers < 1:
        raise ConfigError(f"workers: must be at least 1, got {workers}")
    started = time.perf_counter()
    db_path = Path(db_path)
    ResultsDB.check(db_path)  # a foreign file: refused before a lock file is put beside it
    with _DriverLock(db_path), ResultsDB(db_path) as db:
        def members(spec: StudySpec) -> list[TrialConfig]:
            if spec.select is None:
                return spec.trials()
            chosen = {k: v["value"] for k, v in db.selections(spec.name).items()}
            unique = {t.config_hash(): t for t in spec.rung_trials() + spec.chosen_trials(chosen)}
            return list(unique.values())

        for spec in specs:
            db.register_study(spec.name, spec.to_dict(), members(spec))
        everything = {t.config_hash(): t for spec in specs for t in spec.trials()}
        statuses = db.statuses(everything)
        if retry_failed:
            again = [h for h, status in statuses.items() if status in ("failed", "crashed")]
            db.reset_trials(again)
            statuses.update({h: "pending" for h in again})
        done_before = {spec.name: sum(statuses.get(t.config_hash()) in (*FINISHED, "paused")
                                      for t in members(spec)) for spec in specs}
        tracker = _Tracker(specs, db, total=sum(len(members(s)) for s in specs),
                           initial=sum(done_before.values()), progress=progress)
        cores = available_cores()
        cpus = max(s.cpus_per_trial for s in specs)
        n_workers = workers or max(1, cores // cpus)
        pool = _Pool(tracker, n_workers, cores, address, cpus, trial_function)
        # paused rungs keep their checkpoints here (local runs: the workers share the
        # driver's file system), so that the chosen ones continue rather than start again
        checkpoints = None if address is not None else db_path.with_name(
            db_path.name + ".checkpoints")

        def selected_work(trial: TrialConfig, stop_after: int | None = None) -> Work:
            folder = None if checkpoints is None else str(checkpoints / trial.config_hash())
            return Work(trial, stop_after, folder)

        try:
            # phase 1: every trial without a selection, and the rungs of the selections
            todo: dict[str, Work] = {}
            for spec in specs:
                if spec.select is None:
                    for trial in spec.trials():
                        todo.setdefault(trial.config_hash(), Work(trial))
                    continue
                for trial in spec.rung_trials():
                    todo.setdefault(trial.config_hash(),
                                    selected_work(trial, spec.select.rung_epochs))
            statuses = db.statuses(todo)
            pool.run([w for h, w in todo.items()
                      if statuses.get(h) not in (*FINISHED, "paused")])
            # the choices, then phase 2: every seed at the chosen values
            todo = {}
            for spec in specs:
                if spec.select is None:
                    continue
                _choose(spec, db)
                db.register_study(spec.name, spec.to_dict(), members(spec))
                chosen = {k: v["value"] for k, v in db.selections(spec.name).items()}
                tracker.grow(len(members(spec)) - len(spec.rung_trials()))
                for trial in spec.chosen_trials(chosen):
                    todo.setdefault(trial.config_hash(), selected_work(trial))
            statuses = db.statuses(todo)
            pool.run([w for h, w in todo.items() if statuses.get(h) not in FINISHED])
        finally:
            pool.close()
            tracker.close()
        if checkpoints is not None:  # every chosen trial has finished: none will continue
            shutil.rmtree(checkpoints, ignore_errors=True)
        summaries = []
        for spec in specs:
            status = db.status(spec.name)
            summary = {
                "study": spec.name,
                "db": str(db_path),
                "trials": status["total"],
                "already_finished": done_before[spec.name],
                "ran": tracker.ran_by_study.get(spec.name, 0),
                "counts": status["counts"],
                "best": best_trial(db.trials(study=spec.name), spec.metric),
                "first_failure": next((f for f in status["failures"]
                                       if f["status"] in ("failed", "crashed")), None),
                "workers": pool.n_workers if address is None else None,
                "address": address,
                "wall_time_s": time.perf_counter() - started,
            }
            if spec.select is not None:
                summary["selections"] = {k: v["value"]
                                         for k, v in db.selections(spec.name).items()}
            summaries.append(summary)
        return summaries


def _choose(spec: StudySpec, db: ResultsDB) -> None:
    """Store, for every condition of ``spec`` not chosen yet, the value of the selected axis
    with the best mean over the rung seeds of the best validation accuracy up to the rung;
    values tied on it (e.g. every one still at chance) are told apart by the mean of the
    lowest validation loss up to the rung, then by grid order."""
    select = spec.select
    known = db.selections(spec.name)
    rung_seeds = (spec.seed_values() or [])[: select.rung_seeds]
    by_condition: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for trial in spec.rung_trials():
        key = condition_key(spec.condition_of(trial))
        if key in known:
            continue
        epochs = [e for e in db.epochs(trial.config_hash()) if e["epoch"] <= select.rung_epochs]
        accuracies = [e["valid_accuracy"] for e in epochs if finite_number(e.get("valid_accuracy"))]
        losses = [e["valid_loss"] for e in epochs if finite_number(e.get("valid_loss"))]
        value = json.dumps(trial.axes[select.axis])
        by_condition.setdefault(key, {}).setdefault(value, []).append(
            (max(accuracies) if accuracies else -math.inf, min(losses) if losses else math.inf))
    for key, by_value in by_condition.items():
        scores = {v: (sum(a for a, _ in x) / len(x), sum(loss for _, loss in x) / len(x))
                  for v, x in by_value.items() if len(x) == len(rung_seeds)}
        if not scores:
            continue
        # grid order breaks what accuracy and loss leave tied
        chosen = max(scores, key=lambda v: (scores[v][0], -scores[v][1]))
        db.record_selection(spec.name, key, select.axis, json.loads(chosen),
                            {v: {"valid_accuracy": a if math.isfinite(a) else None,
                                 "valid_loss": loss if math.isfinite(loss) else None}
                             for v, (a, loss) in scores.items()})


def best_trial(trials: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The trial with the best finite ``metric`` (max for accuracies, min for losses)."""
    rows = best_by(trials, [], metric)
    if not rows:
        return None
    return {key: rows[0][key] for key in ("config_hash", "axes", "status")} | {
        metric: rows[0]["best"]}


class _Tracker:
    """Driver bookkeeping: payloads, writing outcomes, the progress bar, the running best."""

    def __init__(self, specs: list[StudySpec], db: ResultsDB, total: int, initial: int,
                 progress: bool) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.db = db
        # the running best is shown for the first study's metric
        self.metric = specs[0].metric
        self.ran_by_study: dict[str, int] = {}
        self.problems = 0
        self.best: float | None = None
        self._medians: dict[str, list[float | None] | None] = {}
        self._medians_stale: set[str] = set(self.specs)
        for spec in specs:
            finished = db.trials(study=spec.name, status=FINISHED)
            self.problems += sum(t["status"] in ("failed", "crashed") for t in finished)
            if spec.metric == self.metric:
                for trial in finished:
                    self._update_best(trial.get(self.metric))
        name = specs[0].name if len(specs) == 1 else f"{len(specs)} studies"
        self.bar = tqdm(total=total, initial=initial, desc=name, unit="trial",
                        disable=not progress, dynamic_ncols=True, smoothing=0.1)
        self._postfix()

    @property
    def ran(self) -> int:
        return sum(self.ran_by_study.values())

    def grow(self, extra: int) -> None:
        """More trials to run than first known (the chosen values of a selection)."""
        if extra > 0:
            self.bar.total += extra
            self.bar.refresh()

    def payload(self, work: Work) -> dict[str, Any]:
        payload: dict[str, Any] = {"config": work.trial.to_dict()}
        if work.stop_after is not None:
            payload["stop_after"] = work.stop_after
        if work.checkpoint_dir is not None:
            payload["checkpoint_dir"] = work.checkpoint_dir
        spec = self.specs.get(work.trial.study)
        rule = spec.early_stopping if spec is not None else None
        if rule is not None:
            payload["medians"] = self._current_medians(spec.name, rule.min_trials)
            payload["grace_epochs"] = rule.grace_epochs
        return payload

    def started(self, work: Work) -> None:
        self.db.mark_running(work.trial.config_hash())

    def finished(self, work: Work, outcome: Outcome) -> None:
        self.db.record_result(work.trial.config_hash(), outcome)
        study = work.trial.study
        self.ran_by_study[study] = self.ran_by_study.get(study, 0) + 1
        self._medians_stale.add(study)
        if outcome["status"] in ("failed", "crashed"):
            self.problems += 1
        if self.specs.get(study) is not None and self.specs[study].metric == self.metric:
            self._update_best((outcome.get("result") or {}).get(self.metric))
        self.bar.update(1)
        self._postfix()

    def _update_best(self, value: Any) -> None:
        if not finite_number(value):
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

    def _current_medians(self, study: str, min_trials: int) -> list[float | None] | None:
        """Per epoch: median over finished trials of their best valid accuracy so far."""
        if study in self._medians_stale:
            finished = {t["config_hash"] for t in self.db.trials(
                study=study, status=("completed", "stopped"))}
            curves: dict[str, list[float]] = {}
            for row in self.db.all_epochs(study):
                if row["config_hash"] in finished and finite_number(row.get("valid_accuracy")):
                    curve = curves.setdefault(row["config_hash"], [])
                    curve.append(max(row["valid_accuracy"], curve[-1] if curve else -1.0))
            length = max((len(c) for c in curves.values()), default=0)
            medians: list[float | None] = []
            for epoch in range(length):
                values = [c[epoch] for c in curves.values() if len(c) > epoch]
                medians.append(statistics.median(values) if len(values) >= min_trials else None)
            self._medians[study] = medians if any(m is not None for m in medians) else None
            self._medians_stale.discard(study)
        return self._medians.get(study)

    def close(self) -> None:
        self.bar.close()


class _Pool:
    """Where trials run: local worker processes (started once, kept for every phase) or a
    Ray cluster."""

    def __init__(self, tracker: _Tracker, n_workers: int, cores: int, address: str | None,
                 cpus: int, trial_function) -> None:
        self.tracker, self.address, self.cpus = tracker, address, cpus
        self.n_workers, self.cores, self.trial_function = n_workers, cores, trial_function
        self.local: _LocalWorkers | None = None

    def run(self, todo: list[Work]) -> None:
        if not todo:
            return
        if self.address is not None:
            _run_ray(todo, self.tracker, self.address, self.cpus, self.trial_function)
            return
        if self.local is None:
            self.n_workers = min(self.n_workers, len(todo))
            threads = max(1, self.cores // self.n_workers)
            self.local = _LocalWorkers(self.n_workers, threads, self.trial_function)
        self.local.run(todo, self.tracker)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


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


class _LocalWorkers:
    """Long-lived worker processes (spawned once per driver run), one trial each at a time."""

    def __init__(self, n_workers: int, threads: int, trial_function) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.threads, self.trial_function = threads, trial_function
        # workers ignore Ctrl-C: the driver stops them (their trials stay unfinished)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.pool = [self._new() for _ in range(n_workers)]
        finally:
            signal.signal(signal.SIGINT, previous)
        self.busy: dict[int, Work] = {}

    def _new(self) -> _Worker:
        return _Worker(self.context, self.threads, self.trial_function)

    def run(self, todo: list[Work], tracker: _Tracker) -> None:
        pending = deque(todo)
        pool, busy = self.pool, self.busy
        while pending or busy:
            for i, worker in enumerate(pool):
                if i not in busy and pending:
                    work = pending.popleft()
                    tracker.started(work)
                    try:
                        worker.conn.send(tracker.payload(work))
                        busy[i] = work
                    except (BrokenPipeError, OSError):  # died while idle: replace, try again
                        pending.appendleft(work)
                        worker.kill()
                        pool[i] = self._new()
            ready = set(wait([pool[i].conn for i in busy] + [pool[i].process.sentinel
                                                             for i in busy]))
            for i in list(busy):
                worker = pool[i]
                if not ({worker.conn, worker.process.sentinel} & ready):
                    continue
                outcome = None
                try:
                    if worker.conn.poll():
                        outcome = worker.conn.recv()
                except (EOFError, OSError):
                    outcome = None
                except Exception:  # noqa: BLE001 - a half-sent result: the worker died
                    outcome = None
                work = busy.pop(i)
                if outcome is None:
                    worker.process.join(timeout=5)
                    outcome = _crashed(worker.process.exitcode)
                    worker.kill()
                    pool[i] = self._new()
                tracker.finished(work, outcome)

    def close(self) -> None:
        for i, worker in enumerate(self.pool):
            if i not in self.busy:
                worker.stop()
            elif worker.process.is_alive():  # interrupted: its trial runs again on resume
                worker.process.terminate()
        deadline = time.monotonic() + 5
        for worker in self.pool:
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            worker.kill()


# ---------------------------------------------------------------------------------------
# Ray execution


def _run_ray(todo: list[Work], tracker: _Tracker, address: str, cpus: int,
             trial_function) -> None:
    try:
        import ray
        from ray import exceptions as ray_errors
    except ImportError:
        raise ConfigError(
            "a Ray cluster needs Ray, which is not installed (pip install 'spikegrad[ray]')"
        ) from None
    try:
        host = address.rsplit(":", 1)[0]
        loopback = address == "local" or host in ("localhost", "::1") or host.startswith("127.")
        # a cluster on this machine's loopback: keep the driver on loopback too
        extra = {"_node_ip_address": "127.0.0.1"} if loopback else {}
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **extra)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"{address}: cannot connect to a Ray cluster ({first_line(error)})"
                          ) from None
    try:
        task = ray.remote(num_cpus=cpus, max_retries=RAY_MAX_RETRIES)(ray_trial)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        pending = deque(todo)
        in_flight: dict[Any, Work] = {}
        while pending or in_flight:
            while pending and len(in_flight) < 2 * slots:
                work = pending.popleft()
                tracker.started(work)
                in_flight[task.remote(tracker.payload(work), cpus, trial_function)] = work
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=10.0)
            for ref in done:
                work = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray_errors.RayTaskError as error:
                    outcome = {"status": "failed", "finished_at": time.time(),
                               "error": first_line(error)}
                except ray_errors.RayError as error:  # worker or node lost, retries used up
                    outcome = {"status": "crashed", "finished_at": time.time(),
                               "error": f"{type(error).__name__}: "
                                        f"{first_line(error, empty='')}"}
                tracker.finished(work, outcome)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------------


def driver_active(db_path: str | Path) -> bool:
    """Whether a study driver is running on this database now (holds its lock)."""
    return _DriverLock(Path(db_path)).held_elsewhere()


def study_status(db: ResultsDB, names: list[str]) -> dict[str, dict[str, Any]]:
    """:meth:`ResultsDB.status` of each study in ``names``, where no driver runs on the
    database with the trials that a stopped driver had started counted as "interrupted"
    instead of "running" (they run again when the study is resumed)."""
    reports = {name: db.status(name) for name in names}
    if not driver_active(db.path):
        for report in reports.values():
            if "running" in report["counts"]:
                report["counts"]["interrupted"] = report["counts"].pop("running")
    return reports


def _DriverLock(db_path: Path) -> ExclusiveLock:  # noqa: N802 - used as a class
    """One driver per database: an advisory lock on ``<db>.lock``, freed when the process dies."""
    return ExclusiveLock(db_path.with_name(db_path.name + ".lock"),
                         f"{db_path}: another study driver is running on this database")
