"""Where the time of one study trial goes: ``spikegrad bench --case trial``.

Trains the first trial of the study case (:func:`spikegrad.bench.study_spec`: the paper-size
Randman network, 20 → 100 → 10, T = 100, batches of 250, a fixed number of epochs) the way a
study's worker trains it (:func:`spikegrad.studies.worker.run_trial`, on one thread), with a
clock around each part of the training loop, and times the start of a fresh process (importing
torch, importing the training code, loading the compiled kernels) in new processes.

The clocks wrap the functions the training loop calls, for the duration of the measurement
only; each part's time is its own, without the parts it calls (the compiled kernels' time is
not the forward pass's). Evaluation (the validation set after each epoch and the final test
set) is one part with everything it calls. What no clock covers (building the network, the
loop itself, the loss's finiteness check, the gradients' reset) is the row ``the rest``.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch

# (row, what it measures) in the order of a training step; the keys of a report's "parts"
PARTS = {
    "data": "the data set (made, or read from the cache, once a worker)",
    "batches": "batches and their sparse form",
    "forward kernels": "forward pass: the compiled kernels",
    "forward": "forward pass: the model's Python, autograd's graph",
    "loss": "loss and activity regularisers",
    "backward kernels": "backward pass: the compiled kernels",
    "backward": "backward pass: autograd's engine, the engine's Python",
    "optimiser": "optimiser step (Adam)",
    "checks": "finite weights, the epoch's metric sums",
    "evaluation": "evaluation (validation each epoch, test at the end)",
}
# What starts a process's work, timed in fresh processes: (code run first, code timed)
STARTUP = {
    "import torch": ("", "import torch"),
    "import spikegrad.training (torch with it)": ("", "import spikegrad.training"),
    "load the compiled kernels": ("import spikegrad.engine.cpp as c", "assert c.available()"),
}


class TrialProfileError(RuntimeError):
    """The profile could not be measured (no compiled kernels, or the trial failed)."""


class Clocks:
    """Exclusive time per part: a part's clock stops while a part it calls runs. Inside an
    opaque part (evaluation) no other clock runs."""

    def __init__(self, opaque: tuple[str, ...] = ("evaluation",)) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.calls = dict.fromkeys(PARTS, 0)
        self.opaque = opaque
        self._stack: list[list[Any]] = []  # [part, started, time of nested parts]

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        if self._stack and self._stack[-1][0] in self.opaque:
            yield
            return
        entry = [name, time.perf_counter(), 0.0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - entry[1]
            self.seconds[name] += elapsed - entry[2]
            self.calls[name] += 1
            if self._stack:
                self._stack[-1][2] += elapsed

    def wrap(self, name: str, function: Callable) -> Callable:
        @functools.wraps(function)  # keeps its attributes (an optimiser's step hook marks)
        def timed(*args, **kwargs):
            with self.part(name):
                return function(*args, **kwargs)
        return timed

    def wrap_iterator(self, name: str, function: Callable) -> Callable:
        """A generator function whose every next item is timed as ``name``."""
        @functools.wraps(function)
        def timed(*args, **kwargs):
            items = function(*args, **kwargs)
            while True:
                with self.part(name):
                    item = next(items, StopIteration)
                if item is StopIteration:
                    return
                yield item
        return timed


def _patches(clocks: Clocks) -> list:
    from spikegrad import training
    from spikegrad.engine import cpp
    from spikegrad.model import SNN
    from spikegrad.studies import worker

    def on(owner, name: str, part: str):
        return mock.patch.object(owner, name, clocks.wrap(part, getattr(owner, name)))

    # an optimiser's first instance wraps its class's step in PyTorch's profiling hook; made
    # here, so that the clock goes around the hook (and the hook is not added twice)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    return [
        on(worker, "cached_data", "data"),
        mock.patch.object(training, "iterate_batches",
                          clocks.wrap_iterator("batches", training.iterate_batches)),
        on(SNN, "forward", "forward"),
        on(cpp, "lif_forward", "forward kernels"),
        on(training, "classification_loss", "loss"),
        on(training, "activity_penalty", "loss"),
        on(torch.Tensor, "backward", "backward"),
        on(cpp, "lif_backward", "backward kernels"),
        on(torch.optim.Adam, "step", "optimiser"),
        on(training, "_weights_finite", "checks"),
        on(training.MetricSums, "add", "checks"),
        on(training, "evaluate", "evaluation"),
    ]


def first_trial_config(epochs: int):
    """The first trial of the study case with ``epochs`` epochs."""
    from spikegrad.bench import study_spec
    from spikegrad.studies.spec import load_study_spec

    return load_study_spec(study_spec(epochs)).trials()[0]


def startup_seconds(repeats: int) -> dict[str, float]:
    """Median seconds of each start-up part in ``repeats`` fresh processes each (the kernels
    are compiled first, in this process, when they were not yet)."""
    from spikegrad.engine import cpp

    if not cpp.available():
        raise TrialProfileError("the compiled kernels are unavailable (the warning above says why)")
    times: dict[str, float] = {}
    for name, (setup, timed) in STARTUP.items():
        program = (f"import time\n{setup}\nt = time.perf_counter()\n{timed}\n"
                   f"print(time.perf_counter() - t)")
        runs = [float(subprocess.run([sys.executable, "-c", program], check=True,
                                     capture_output=True, text=True).stdout.split()[-1])
                for _ in range(repeats)]
        times[name] = statistics.median(runs)
    return times


def profile_trial(epochs: int = 10, startup_repeats: int = 3) -> dict:
    """Train the study case's first trial for ``epochs`` epochs on one thread with a clock on
    each part (:data:`PARTS`); the seconds of each part, per training step, and the start-up
    of a fresh process (median of ``startup_repeats``; 0: not measured)."""
    from spikegrad.studies.worker import run_trial

    config = first_trial_config(epochs)
    startup = startup_seconds(startup_repeats) if startup_repeats else {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a study's worker on each core
    clocks = Clocks()
    try:
        with contextlib.ExitStack() as stack:
            for patch in _patches(clocks):
                stack.enter_context(patch)
            started = time.perf_counter()
            outcome = run_trial({"config": config.model_dump(mode="json")})
            total = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    if outcome["status"] != "completed":
        raise TrialProfileError(f"the profiled trial ended {outcome['status']}: {outcome['error']}")
    steps = clocks.calls["optimiser"]
    parts = dict(clocks.seconds)
    parts["the rest"] = total - sum(parts.values())
    return {"trial_s": total, "steps": steps, "epochs": epochs,
            "batch_size": config.training.batch_size, "parts_s": parts,
            "surrogate": config.surrogate.name, "slope": config.surrogate.slope,
            "test_accuracy": outcome["result"]["test_accuracy"], "startup_s": startup}


def format_profile(report: dict) -> str:
    steps = report["steps"]
    lines = [f"{'part of the trial':56s} {'s':>6s} {'ms/step':>8s} {'share':>6s}"]
    for name, seconds in report["parts_s"].items():
        label = PARTS.get(name, name)
        lines.append(f"{label:56s} {seconds:6.2f} {1e3 * seconds / steps:8.2f} "
                     f"{100 * seconds / report['trial_s']:5.1f}%")
    lines.append(f"{'the whole trial':56s} {report['trial_s']:6.2f} "
                 f"{1e3 * report['trial_s'] / steps:8.2f} {100:5.1f}%")
    lines.append(f"({report['epochs']} epochs, {steps} training steps of "
                 f"{report['batch_size']} samples, {report['surrogate']} surrogate of slope "
                 f"{report['slope']:g}, one thread; test accuracy "
                 f"{report['test_accuracy']:.3f}; the rest: the network's set-up, the "
                 f"loop itself, the loss's finiteness check, the gradients' reset)")
    if report["startup_s"]:
        lines.append("")
        lines.append(f"{'start of a fresh process (median)':56s} {'s':>6s}")
        for name, seconds in report["startup_s"].items():
            lines.append(f"{name:56s} {seconds:6.2f}")
    return "\n".join(lines)
