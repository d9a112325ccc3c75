"""Benchmarks behind ``spikegrad bench``: time one training step of the fast engine against
its peers.

One training step is forward, backward and an Adam update of a network of one hidden LIF
layer and a leaky readout, with the max-over-time cross-entropy loss, on random input
spikes. The cases:

=========  ======  ======  =======  ======  =====  =========  =========
case       inputs  hidden  readout  T       batch  recurrent  input rate
=========  ======  ======  =======  ======  =====  =========  =========
shd        700     256     20       100     256    yes        2 % of bins
randman    20      100     10       100     250    no         one spike per input
long       700     256     20       1000    256    yes        2 % of bins
=========  ======  ======  =======  ======  =====  =========  =========

Libraries, measured side by side in one process (each repetition times every library
once, so a change of machine load hits all of them alike):

- ``fast``: spikegrad's fast engine (:mod:`spikegrad.engine`), at its defaults.
- ``reference``: spikegrad's reference path (a step-by-step autograd loop).
- ``snntorch``: ``snntorch.RSynaptic`` / ``Synaptic`` (reset to zero, ``fast_sigmoid``
  surrogate of slope 10 = SuperSpike) and a ``Synaptic`` readout without reset whose
  membrane is the output. Differences: snnTorch integrates ``mem = β mem + syn`` without
  the (1 - β) factor (its weights are scaled by (1 - β_mem) to give the same drive), the
  new current enters the membrane in the same step, and its recurrent ``nn.Linear`` has a
  (zero-initialised, trained) bias.
- ``norse``: ``norse.torch.LIFRecurrent`` / ``LIF`` (``method="super"``, alpha 10,
  SuperSpike) and an ``LI`` readout. Differences: Norse integrates with forward Euler
  (decays 1 - dt/τ instead of exp(-dt/τ)), spikes in the step the threshold is crossed,
  and projects the input inside its time loop (``LIFRecurrent``).

spikegrad gets the input spikes as ``spikegrad train`` does, a sparse COO batch (as
``EventDataset.batch(sparse=True)`` makes it), the peers as a dense tensor; either is made
once, before the timed steps. The input projection of all steps is one product for the
peers as well (except inside Norse's ``LIFRecurrent``). Peak memory is the growth of the
resident set during one more, untimed step on CPU (the kernel's high-water mark, reset
before the step) or the peak of the CUDA allocator on a GPU. Peers that are not installed
(``pip install -e .[bench]``) are reported as missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from spikegrad.errors import first_line
from spikegrad.model import SNN

LIBRARIES = ("fast", "reference", "snntorch", "norse")
TAU_MEM, TAU_SYN, TAU_OUT, DT, SLOPE = 10.0, 5.0, 20.0, 1.0, 10.0


@dataclass(frozen=True)
class Case:
    inputs: int
    hidden: int
    readout: int
    steps: int
    batch: int
    recurrent: bool
    input_rate: float  # fraction of active input bins (one spike per input when None)
    init_scale: float  # weight scale that gives a few per cent of hidden activity


CASES = {
    "shd": Case(700, 256, 20, 100, 256, True, 0.02, 8.0),
    "randman": Case(20, 100, 10, 100, 250, False, 0.01, 24.0),
    "long": Case(700, 256, 20, 1000, 256, True, 0.02, 8.0),
}

Step = Callable[[], float]  # one training step; returns the mean hidden spike rate


def make_data(case: Case, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(case.batch, case.steps, case.inputs, generator=g) < case.input_rate).float()
    y = torch.randint(case.readout, (case.batch,), generator=g)
    return x.to(device), y.to(device)


def make_weights(case: Case, seed: int = 1) -> dict[str, Tensor]:
    net = SNN.build(case.inputs, [case.hidden], case.readout, recurrent=case.recurrent,
                    init_scale=case.init_scale, generator=torch.Generator().manual_seed(seed))
    layer = net.hidden[0]
    weights = {"w": layer.weight.detach(), "w_out": net.readout.weight.detach()}
    if case.recurrent:
        weights["v"] = layer.recurrent_weight.detach()
    return weights


def _max_logits(readout_trace: Tensor, time_dim: int) -> Tensor:
    return readout_trace.max(time_dim).values


def _train_step(params, forward: Callable[[], tuple[Tensor, Tensor]], y: Tensor) -> Step:
    """A training step around ``forward``, which returns the logits [B, K] (the readout's
    maximum over time) and the hidden spike rate."""
    optimiser = torch.optim.Adam(params, lr=1e-3)

    def step() -> float:
        logits, rate = forward()
        loss = nn.functional.cross_entropy(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(rate)

    return step


def spikegrad_step(case: Case, engine: str, x: Tensor, y: Tensor,
                   weights: dict[str, Tensor]) -> Step:
    """spikegrad's step as ``spikegrad train`` takes it: the input spikes as a sparse COO
    batch, the logits and spike counts from the model (the fast engine reduces the readout
    in its kernels and writes no trace)."""
    events = x.to_sparse_coo().coalesce()
    net = SNN.build(case.inputs, [case.hidden], case.readout, recurrent=case.recurrent,
                    dt_ms=DT, tau_mem_ms=TAU_MEM, tau_syn_ms=TAU_SYN, tau_out_ms=TAU_OUT,
                    engine=engine).to(x.device)
    with torch.no_grad():
        net.hidden[0].weight.copy_(weights["w"])
        net.readout.weight.copy_(weights["w_out"])
        if case.recurrent:
            net.hidden[0].recurrent_weight.copy_(weights["v"])

    def forward():
        out = net(events, record_spikes=False, record_trace=False, reduction="max")
        return out.logits, out.spike_counts[0].detach().mean() / case.steps

    return _train_step(net.parameters(), forward, y)


def _decay(tau: float) -> float:
    return math.exp(-DT / tau)


def snntorch_step(case: Case, x: Tensor, y: Tensor, weights: dict[str, Tensor]) -> Step:
    import snntorch
    from snntorch import surrogate

    beta, alpha = _decay(TAU_MEM), _decay(TAU_SYN)
    grad = surrogate.fast_sigmoid(slope=SLOPE)
    w = nn.Parameter(weights["w"].clone() * (1 - beta))
    w_out = nn.Parameter(weights["w_out"].clone() * (1 - _decay(TAU_OUT)))
    if case.recurrent:
        hidden = snntorch.RSynaptic(alpha, beta, linear_features=case.hidden, spike_grad=grad,
                                    reset_mechanism="zero").to(x.device)
        with torch.no_grad():
            hidden.recurrent.weight.copy_(weights["v"] * (1 - beta))
            hidden.recurrent.bias.zero_()
    else:
        hidden = snntorch.Synaptic(alpha, beta, spike_grad=grad,
                                   reset_mechanism="zero").to(x.device)
    readout = snntorch.Synaptic(alpha, _decay(TAU_OUT), reset_mechanism="none").to(x.device)
    x_tm = x.transpose(0, 1).contiguous()  # time first: one slice per step

    def forward():
        current = x_tm @ w.t()
        if case.recurrent:
            spk, syn, mem = hidden.init_rsynaptic()
        else:
            syn, mem = hidden.init_synaptic()
        spikes = []
        for t in range(case.steps):
            if case.recurrent:
                spk, syn, mem = hidden(current[t], spk, syn, mem)
            else:
                spk, syn, mem = hidden(current[t], syn, mem)
            spikes.append(spk)
        s = torch.stack(spikes)
        out_current = s @ w_out.t()
        syn_o, mem_o = readout.init_synaptic()
        trace = []
        for t in range(case.steps):
            _, syn_o, mem_o = readout(out_current[t], syn_o, mem_o)
            trace.append(mem_o)
        return _max_logits(torch.stack(trace), 0), s.detach().float().mean()

    return _train_step([w, w_out, *hidden.parameters()], forward, y)


def norse_step(case: Case, x: Tensor, y: Tensor, weights: dict[str, Tensor]) -> Step:
    import norse.torch as norse

    t = torch.as_tensor
    p = norse.LIFParameters(
        tau_syn_inv=t(1000.0 / TAU_SYN), tau_mem_inv=t(1000.0 / TAU_MEM), v_leak=t(0.0),
        v_th=t(1.0), v_reset=t(0.0), method="super", alpha=t(SLOPE),
    )
    w = nn.Parameter(weights["w"].clone())
    w_out = nn.Parameter(weights["w_out"].clone())
    if case.recurrent:
        hidden = norse.LIFRecurrent(case.inputs, case.hidden, p=p, dt=DT / 1000, autapses=True,
                                    input_weights=w, recurrent_weights=nn.Parameter(
                                        weights["v"].clone())).to(x.device)
    else:
        hidden = norse.LIF(p=p, dt=DT / 1000).to(x.device)
    readout = norse.LI(p=norse.LIParameters(tau_syn_inv=torch.as_tensor(1000.0 / TAU_SYN),
                                            tau_mem_inv=torch.as_tensor(1000.0 / TAU_OUT)),
                       dt=DT / 1000).to(x.device)
    x_tm = x.transpose(0, 1).contiguous()

    def forward():
        s, _ = hidden(x_tm) if case.recurrent else hidden(x_tm @ w.t())
        trace, _ = readout(s @ w_out.t())
        return _max_logits(trace, 0), s.detach().float().mean()

    params = [w_out, *hidden.parameters()] + ([] if case.recurrent else [w])
    return _train_step(params, forward, y)


def build_step(library: str, case: Case, x: Tensor, y: Tensor,
               weights: dict[str, Tensor]) -> Step:
    if library in ("fast", "reference"):
        return spikegrad_step(case, library, x, y, weights)
    return {"snntorch": snntorch_step, "norse": norse_step}[library](case, x, y, weights)


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_memory(device: torch.device) -> float | None:
    """Start tracking the peak; returns the memory in use now (bytes), None if unsupported."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return float(torch.cuda.memory_allocated(device))
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed memory back, so growth is visible
        base = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM
    except OSError:
        return None
    return None if base is None else base * 1024.0


def _peak_memory(device: torch.device) -> float | None:
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    peak = _rss_kib("VmHWM")
    return None if peak is None else peak * 1024.0


def timed(step: Step, device: torch.device) -> tuple[float, float]:
    """Milliseconds of one step and its hidden spike rate."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    rate = step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000, rate


def peak_memory_mib(step: Step, device: torch.device) -> float | None:
    """Extra memory (MiB) one more step needs at its peak; timed steps are not measured, as
    returning freed memory to the system first would slow the next step down."""
    base = _reset_peak_memory(device)
    step()
    peak = _peak_memory(device)
    return None if base is None or peak is None else (peak - base) / 2**20


def run_case(case: Case, libraries: list[str], repeats: int, warmup: int,
             device: torch.device, interleave: bool = True) -> dict[str, dict]:
    """Time ``repeats`` steps of each library: interleaved step by step (a drift of the
    machine's load hits all alike), or each library's steps in one run (under a constant
    background load: another library's threads then never run between two of its steps)."""
    x, y = make_data(case, device)
    weights = {k: v.to(device) for k, v in make_weights(case).items()}
    steps, results = {}, {}
    for library in libraries:
        try:
            steps[library] = build_step(library, case, x, y, weights)
        except ImportError as error:
            results[library] = {"status": "missing", "reason": first_line(error)}
    rates: dict[str, float] = {}
    times: dict[str, list[float]] = {library: [] for library in steps}
    threads = torch.get_num_threads()

    def measure(library: str, count: int, record: bool) -> None:
        for _ in range(count):
            # every library starts its step with the same threads (the fast engine may then
            # use fewer on a busy machine, see spikegrad.engine.threads)
            torch.set_num_threads(threads)
            ms, rates[library] = timed(steps[library], device)
            if record:
                times[library].append(ms)

    if interleave:
        for library in steps:
            measure(library, warmup, record=False)
        for _ in range(repeats):
            for library in steps:
                measure(library, 1, record=True)
    else:
        for library in steps:
            measure(library, warmup, record=False)
            measure(library, repeats, record=True)
    torch.set_num_threads(threads)
    for library, step in steps.items():
        results[library] = {
            "status": "ok",
            "ms_per_step": statistics.median(times[library]),
            "peak_memory_mib": peak_memory_mib(step, device),
            "hidden_spike_rate": rates.get(library),
            "times_ms": times[library],
        }
    fast = results.get("fast", {}).get("ms_per_step")
    for result in results.values():
        if fast and result.get("status") == "ok":
            result["time_vs_fast"] = result["ms_per_step"] / fast
    return results


def run_bench(cases: list[str], libraries: list[str], repeats: int, warmup: int,
              device: str = "cpu", long_repeats: int | None = None,
              interleave: bool = True) -> dict:
    dev = torch.device(device)
    report: dict = {
        "meta": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                 "device": str(dev), "repeats": repeats, "warmup": warmup,
                 "long_repeats": long_repeats},
        "cases": {name: asdict(CASES[name]) for name in cases},
    }
    for name in cases:
        # The long case runs the code the other cases have warmed up, at ten times the cost:
        # it gets its own (smaller) number of timed steps and no warm-up after another case.
        long = name == "long" and long_repeats
        reps = long_repeats if long else repeats
        report[name] = run_case(CASES[name], libraries, reps,
                                0 if long and len(cases) > 1 else warmup, dev, interleave)
    return report


BUSY_LOOP = "while True: pass"
"""The background load: one single-threaded busy process, as a browser tab or an editor on a
laptop would be."""


@contextlib.contextmanager
def background_load():
    """A single-threaded busy process for the time of the block."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # running, and seen by the scheduler
        yield busy.pid
    finally:
        busy.kill()
        busy.wait()


def run_with_background_load(cases: list[str], libraries: list[str], repeats: int, warmup: int,
                             device: str = "cpu", long_repeats: int | None = None) -> dict:
    """Every case idle, then again while one core is busy; adds per library the busy median,
    its ratio to the idle median and the slowest busy step's ratio to the idle median."""
    idle = run_bench(cases, libraries, repeats, warmup, device, long_repeats)
    with background_load():
        busy = run_bench(cases, libraries, repeats, warmup, device, long_repeats,
                         interleave=False)
    report = {**idle, "meta": {**idle["meta"], "background_load": BUSY_LOOP}}
    for name in cases:
        for library, result in report[name].items():
            loaded = busy[name].get(library, {})
            if result.get("status") != "ok" or loaded.get("status") != "ok":
                continue
            result["busy"] = {
                "ms_per_step": loaded["ms_per_step"],
                "times_ms": loaded["times_ms"],
                "median_vs_idle": loaded["ms_per_step"] / result["ms_per_step"],
                "slowest_vs_idle": max(loaded["times_ms"]) / result["ms_per_step"],
                "time_vs_fast": loaded.get("time_vs_fast"),
            }
    return report


def format_table(report: dict) -> str:
    lines = [f"{'case':8s} {'library':10s} {'ms/step':>9s} {'x fast':>7s} {'peak MiB':>9s} "
             f"{'hidden rate':>11s}"]
    for name in report["cases"]:
        for library, r in report[name].items():
            if r["status"] != "ok":
                lines.append(f"{name:8s} {library:10s} {'missing':>9s}")
                continue
            memory, rate = r["peak_memory_mib"], r["hidden_spike_rate"]
            lines.append(
                f"{name:8s} {library:10s} {r['ms_per_step']:9.1f} {r.get('time_vs_fast', 0):7.2f} "
                f"{'n/a' if memory is None else f'{memory:.0f}':>9s} "
                f"{'n/a' if rate is None else f'{rate:.4f}':>11s}"
            )
    meta = report["meta"]
    if "background_load" in meta:
        lines.append("")
        lines.append(f"{'case':8s} {'library':10s} {'busy ms':>9s} {'x fast':>7s} "
                     f"{'x idle':>7s} {'slowest x idle':>15s}")
        for name in report["cases"]:
            for library, r in report[name].items():
                if "busy" not in r:
                    continue
                b = r["busy"]
                lines.append(f"{name:8s} {library:10s} {b['ms_per_step']:9.1f} "
                             f"{b.get('time_vs_fast') or 0:7.2f} {b['median_vs_idle']:7.2f} "
                             f"{b['slowest_vs_idle']:15.2f}")
        lines.append("(second table: the same steps while one single-threaded busy process "
                     "runs, each library's steps in one run; 'x idle' = busy median / idle "
                     "median, 'slowest x idle' = slowest busy step / idle median)")
    lines.append(f"(median of {meta['repeats']} steps after {meta['warmup']} warm-up, long case: "
                 f"{meta['long_repeats']} step(s); "
                 f"torch {meta['torch']}, {meta['threads']} threads, {meta['device']}; "
                 "'x fast' = time / fast engine's time)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Study throughput

STUDY_GRID = {"surrogate.name": ["superspike", "sigmoid", "esser"],
              "surrogate.slope": [1.0, 10.0, 100.0, 1000.0]}
STUDY_SEEDS = [0, 1]
"""The study case: 3 shapes x 4 slopes x 2 seeds = 24 trials of the paper-size Randman."""


def study_spec(epochs: int, legacy: bool = False) -> dict:
    """The study case's spec: every trial the same fixed number of epochs (no patience), a
    network active from the start (N(0, (7/√fan_in)^2) weights) so that every release does
    the same work. ``legacy``: in the syntax of releases before per-matrix init and patience
    (their readout starts at 0, as set here for the current one)."""
    fixed = {"training.epochs": epochs, "training.learning_rate": 0.01,
             "model.hidden.0.activity.lower_strength": 100.0,
             "model.hidden.0.activity.lower_rate": 0.001, "data.spectrum_offset": 1.0}
    if legacy:
        fixed.update({"model.init.scheme": "gaussian", "model.init.scale": 7.0})
    else:
        fixed.update({"training.patience": None, "model.readout.initial_membrane": 0.0})
        fixed.update({f"model.init.{kind}": {"scheme": "gaussian", "scale": 7.0}
                      for kind in ("feedforward", "recurrent", "readout")})
    return {"name": "bench-study", "base": "randman", "set": fixed, "axes": STUDY_GRID,
            "seeds": STUDY_SEEDS}


class StudyCaseError(RuntimeError):
    """The study case failed with one of the installs it times (the message names its python
    and the last line the run printed)."""


def time_study(python: str, epochs: int, workers: int | None = None) -> dict:
    """Run the study case with the spikegrad installed for ``python`` (a fresh process and
    database, as a user would); its wall time and trials per hour."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="spikegrad-bench-") as folder:
        for legacy in (False, True):
            spec = Path(folder) / "spec.yaml"
            spec.write_text(yaml.safe_dump(study_spec(epochs, legacy)))
            command = [python, "-m", "spikegrad.cli", "study", "run", str(spec), "--db",
                       str(Path(folder) / f"db-{legacy}.sqlite"), "--quiet"]
            if workers:
                command += ["--workers", str(workers)]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode == 0:
                trials = len(STUDY_SEEDS) * math.prod(len(v) for v in STUDY_GRID.values())
                return {"python": python, "trials": trials, "epochs": epochs,
                        "wall_time_s": wall, "trials_per_hour": trials * 3600.0 / wall,
                        "spec_syntax": "legacy" if legacy else "current"}
            if "unknown key" not in done.stderr:  # not a matter of syntax: report it
                break
    raise StudyCaseError(f"{python}: the study case failed: "
                         f"{(done.stderr or done.stdout).strip().splitlines()[-1]}")


def run_study_case(epochs: int, baselines: list[str], workers: int | None) -> dict:
    """The study case with this spikegrad and with each baseline install, one after the
    other; ratios of trials per hour against this one."""
    rows = [{"version": "this", **time_study(sys.executable, epochs, workers)}]
    for python in baselines:
        rows.append({"version": python, **time_study(python, epochs, workers)})
    for row in rows:
        row["vs_this"] = row["trials_per_hour"] / rows[0]["trials_per_hour"]
    return {"study": rows, "meta": {"cores": os.cpu_count(), "epochs": epochs,
                                    "grid": STUDY_GRID, "seeds": STUDY_SEEDS}}


def format_study(report: dict) -> str:
    lines = [f"{'version':40s} {'trials':>6s} {'epochs':>6s} {'wall s':>8s} "
             f"{'trials/hour':>11s} {'x this':>7s}"]
    for row in report["study"]:
        lines.append(f"{row['version'][-40:]:40s} {row['trials']:6d} {row['epochs']:6d} "
                     f"{row['wall_time_s']:8.1f} {row['trials_per_hour']:11.0f} "
                     f"{row['vs_this']:7.2f}")
    lines.append("(study case: 24 trials of the paper-size Randman, 3 shapes x 4 slopes x 2 "
                 "seeds, a fixed number of epochs, run by `spikegrad study run` in a fresh "
                 "process with one worker per core; 'x this' = trials per hour / this "
                 "install's)")
    return "\n".join(lines)
