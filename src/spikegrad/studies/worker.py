"""What runs in a worker process: one trial at a time, its outcome sent back to the driver.

:func:`run_trial` trains one config and never raises: an exception in training is an
outcome with status ``failed`` (the driver records it and the study goes on). Built
data sets are cached per process, so trials that share a data config build it once.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import threading
import time
import traceback
from collections import OrderedDict
from importlib import metadata
from typing import Any

DATA_CACHE_SIZE = 4
_data_cache: OrderedDict[str, Any] = OrderedDict()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("spikegrad", "torch", "numpy", "ray"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def cached_data(config):
    """The data splits of ``config`` (built once per process and data config)."""
    from spikegrad.data import build_data

    key = json.dumps([config.data.model_dump(mode="json"), config.time.n_steps,
                      config.time.dt_ms], sort_keys=True)
    if key in _data_cache:
        _data_cache.move_to_end(key)
        return _data_cache[key]
    data = build_data(config.data, config.time.n_steps, config.time.dt_ms)
    _data_cache[key] = data
    while len(_data_cache) > DATA_CACHE_SIZE:
        _data_cache.popitem(last=False)
    return data


def median_stopping(medians: list[float | None] | None, grace_epochs: int, epochs: int):
    """The median stopping rule as an epoch callback for :meth:`Trainer.fit`: stop after
    epoch ``e >= grace_epochs`` when the best validation accuracy so far is below the median
    of the finished trials' at that epoch (``medians[e - 1]``; None: no median yet)."""

    def should_stop(state) -> bool:
        epoch = state.epoch
        if medians is None or epoch < grace_epochs or epoch > len(medians) or epoch >= epochs:
            return False
        median = medians[epoch - 1]
        return median is not None and state.best_valid_accuracy < median

    return should_stop


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    """Train ``payload["config"]`` (a config dict); return the outcome for the database.

    ``payload`` may carry ``medians`` (per-epoch median best validation accuracy of
    finished trials) and ``grace_epochs`` for the median stopping rule, ``stop_after``
    (epochs): the trial then pauses there (status ``paused``, metrics of its best epoch so
    far) unless it ends before, and ``checkpoint_dir``: a folder where the trial keeps its
    checkpoint, so that a paused trial continues from it (training is deterministic, so a
    trial without its checkpoint starts again and reaches the same result).
    """
    from spikegrad.config import ExperimentConfig

    started, clock = time.time(), time.perf_counter()
    outcome: dict[str, Any] = {
        "host": socket.gethostname(), "pid": os.getpid(), "versions": package_versions(),
        "started_at": started,
    }
    try:
        from spikegrad.engine import engine_info
        from spikegrad.engine.threads import thread_info
        from spikegrad.training import Trainer, check_memory

        outcome["versions"].update({k: str(v) for k, v in thread_info().items()})
        config = ExperimentConfig.model_validate(payload["config"])
        outcome["versions"].update({k: str(v) for k, v in engine_info(config.model).items()})
        check_memory(config)  # before the data are built
        trainer = Trainer(config, out_dir=payload.get("checkpoint_dir"),
                          data=cached_data(config), progress=False)
        callback = median_stopping(payload.get("medians"), payload.get("grace_epochs", 1),
                                   config.training.epochs)
        result = trainer.fit(resume=True, stop_after=payload.get("stop_after"),
                             epoch_callback=callback)
        outcome.update(status=result["status"], result=result,
                       history=list(trainer.state.history), error=None)
        if result["status"] == "diverged":
            outcome["error"] = f"diverged in epoch {result['diverged_epoch']}: " \
                               f"{result['divergence_reason']}"
    except Exception as error:  # noqa: BLE001 - every failure is an outcome, never a crash
        last = traceback.extract_tb(error.__traceback__)[-1:]
        where = f" ({last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        outcome.update(status="failed", result=None, history=[],
                       error=f"{type(error).__name__}: {error}{where}".splitlines()[0])
    outcome["finished_at"] = time.time()
    outcome["trial_time_s"] = time.perf_counter() - clock
    return outcome


# ---------------------------------------------------------------------------------------
# Local worker processes


def _exit_with_parent(parent_pid: int) -> None:
    """End this process soon after the driver dies (even by SIGKILL): no orphans."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def worker_main(conn, n_threads: int, parent_pid: int, trial_function=None) -> None:
    """Loop of a local worker process: receive a payload, send back its outcome."""
    _exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(n_threads)
    # a thread lock instead of tqdm's default multiprocessing one (a semaphore that a
    # worker ending with os._exit would leak)
    tqdm.set_lock(threading.RLock())
    function = trial_function or run_trial
    while True:
        try:
            payload = conn.recv()
        except (EOFError, OSError):
            return
        if payload is None:  # done: skip the slow interpreter teardown (nothing to flush)
            conn.close()
            os._exit(0)
        outcome = function(payload)
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            return


def ray_trial(payload: dict[str, Any], n_threads: int, trial_function=None) -> dict[str, Any]:
    """Body of the Ray task of one trial (runs on a cluster worker)."""
    import torch

    torch.set_num_threads(n_threads)
    outcome = (trial_function or run_trial)(payload)
    try:  # several nodes may share a host name: name the node too
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
        outcome["host"] = f"{outcome.get('host')} ray-node:{node}"
    except Exception:  # noqa: BLE001 - the node is a detail, the outcome is what matters
        pass
    return outcome
