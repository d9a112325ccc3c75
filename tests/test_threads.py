"""The thread governor: fewer threads while other processes keep cores busy, never a look
at the load when there is one thread to give."""

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor

from spikegrad.engine import threads
from spikegrad.engine.threads import CONFIRM_FEWER, CONFIRM_MORE, ThreadGovernor


@pytest.fixture
def load(monkeypatch):
    """The other processes' runnable tasks the governor sees (a list to set), and how many
    times it looked."""
    state = {"others": 0, "looks": 0}

    def other_runnable_tasks():
        state["looks"] += 1
        return state["others"]

    monkeypatch.setattr(threads, "other_runnable_tasks", other_runnable_tasks)
    monkeypatch.setattr(threads, "CHECK_INTERVAL_S", 0.0)
    monkeypatch.delenv("SPIKEGRAD_THREADS", raising=False)
    before = torch.get_num_threads()
    yield state
    torch.set_num_threads(before)


def test_fewer_threads_under_load_and_back_when_it_ends(load):
    torch.set_num_threads(2)
    governor = ThreadGovernor(cores=2)
    assert governor.update() == 2
    load["others"] = 1  # one core busy
    counts = [governor.update() for _ in range(CONFIRM_FEWER)]
    assert counts[-1] == 1 and torch.get_num_threads() == 1
    assert all(c == 2 for c in counts[:-1])  # acted on once seen CONFIRM_FEWER times
    load["others"] = 0
    counts = [governor.update() for _ in range(CONFIRM_MORE)]
    assert counts[-1] == 2 and all(c == 1 for c in counts[:-1])
    assert governor.user_limit() == 2


def test_one_thread_never_looks_at_the_load(load):
    torch.set_num_threads(1)  # as a study worker with one core sets it
    governor = ThreadGovernor(cores=2)
    load["others"] = 1
    assert [governor.update() for _ in range(5)] == [1] * 5
    assert load["looks"] == 0


def test_a_fixed_count_wins(load, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_THREADS", "2")
    load["others"] = 1
    assert ThreadGovernor(cores=2).update() == 2
    monkeypatch.setenv("SPIKEGRAD_THREADS", "many")
    with pytest.raises(Exception, match="SPIKEGRAD_THREADS"):
        ThreadGovernor(cores=2).update()


def test_release_gives_the_users_count_back_and_adapting_goes_on(load):
    torch.set_num_threads(2)
    governor = ThreadGovernor(cores=2)
    load["others"] = 1
    assert [governor.update() for _ in range(CONFIRM_FEWER)][-1] == 1
    governor.release()
    assert torch.get_num_threads() == 2 and governor.user_limit() == 2
    assert [governor.update() for _ in range(CONFIRM_FEWER)][-1] == 1  # still busy
    torch.set_num_threads(3)  # the user's new count stays as it is
    governor.release()
    assert torch.get_num_threads() == 3 and governor.user_limit() == 3


def test_pytorchs_kernels_run_on_the_users_count_under_load(load, monkeypatch):
    """PyTorch's products may give other bits on other thread counts, so the engine never
    lowers the count for them: the same seed gives the same results under any load."""
    from spikegrad import engine
    from spikegrad.model import SNN

    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    monkeypatch.setattr(threads, "GOVERNOR", ThreadGovernor(cores=2))
    monkeypatch.setattr(engine, "GOVERNOR", threads.GOVERNOR)
    torch.set_num_threads(2)
    load["others"] = 1
    inputs = torch.rand(4, 10, 6)
    for kernels, expected in (("torch", 2), ("cpp", 1), ("torch", 2)):
        if kernels == "cpp" and not engine.cpp.available():
            continue
        net = SNN.build(6, hidden_sizes=[5], n_outputs=3, engine="fast", kernels=kernels)
        for _ in range(CONFIRM_FEWER):
            net(inputs, record_spikes=False, record_trace=False, reduction="max")
        assert torch.get_num_threads() == expected


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="Linux /proc only")
def test_a_busy_process_is_seen_as_another_runnable_task():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline, seen = time.monotonic() + 5.0, []
        while time.monotonic() < deadline and not any(n >= 1 for n in seen):
            seen.append(threads.other_runnable_tasks())
            time.sleep(0.01)
        assert all(isinstance(n, int) and n >= 0 for n in seen)
        assert seen[-1] >= 1
    finally:
        busy.kill()
        busy.wait()


def test_the_weight_gradient_of_a_dense_input_gives_the_idle_bits_under_load(load, monkeypatch):
    """The weight gradient of an input without a sparse form is summed by the compiled
    kernels, not by PyTorch's product (whose bits depend on the thread count for this shape
    in MKL), so a busy core, which lowers the count, changes no bit."""
    from spikegrad import engine
    from spikegrad.functional import ReadoutDynamics

    if not engine.cpp.available():
        pytest.skip("no compiled kernels")
    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(250, 100, 100, generator=generator)  # dense: no sparse form
    weight = torch.randn(10, 100, generator=generator)
    dynamics = ReadoutDynamics.from_time_constants(20.0, 5.0, 1.0)

    def weight_gradient(others: int) -> Tensor:
        torch.set_num_threads(2)
        governor = ThreadGovernor(cores=2)
        monkeypatch.setattr(threads, "GOVERNOR", governor)
        monkeypatch.setattr(engine, "GOVERNOR", governor)
        load["others"] = others
        for _ in range(CONFIRM_FEWER):  # the governor acts on a busy core once seen so often
            governor.update()
        assert torch.get_num_threads() == 2 - others
        w = weight.clone().requires_grad_()
        engine.readout_layer(inputs, w, dynamics, kernels="cpp").square().sum().backward()
        assert torch.get_num_threads() == 2 - others  # the governor's count again after
        return w.grad

    assert torch.equal(weight_gradient(1), weight_gradient(0))


def test_pytorchs_row_products_give_the_same_bits_on_one_and_two_threads():
    """What the compiled path's remaining PyTorch products rely on to follow the load without
    changing a bit: in a [M, K] @ [K, N] product with many rows (a dense input's projection
    x = S_in W^T, the gradient dx W sent to a layer's input) each element sums one row of
    K products, which the BLAS does not split across threads. (The weight gradient, a sum
    over the M rows, is split, and so summed by the kernels: dense_tmm.)"""
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    try:
        for rows, k, n in itertools.product((1000, 25000), (2, 20, 128, 700), (3, 10, 100, 256)):
            a = torch.randn(rows, k, generator=g)
            b = torch.randn(n, k, generator=g)
            results = []
            for count in (1, 2):
                torch.set_num_threads(count)
                results.append((a @ b.t(), a @ b.t().contiguous()))
            assert all(torch.equal(x, y) for x, y in zip(*results, strict=True)), (rows, k, n)
    finally:
        torch.set_num_threads(before)


def test_a_training_run_gives_the_users_count_back(load, monkeypatch, tmp_path):
    """The engine lowers the count while a core is busy; when the run ends the user's
    count is back, for what the process does next (a reference run, the user's own work)."""
    from spikegrad import engine
    from spikegrad.config import load_config
    from spikegrad.training import train

    if not engine.cpp.available():
        pytest.skip("no compiled kernels")
    from conftest import TINY

    governor = ThreadGovernor(cores=2)
    monkeypatch.setattr(threads, "GOVERNOR", governor)
    monkeypatch.setattr(engine, "GOVERNOR", governor)
    monkeypatch.setattr("spikegrad.training.GOVERNOR", governor)
    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    torch.set_num_threads(2)
    load["others"] = 1
    train(load_config({**TINY, "training": {**TINY["training"], "epochs": 1}}))
    assert governor.chosen == 2 and torch.get_num_threads() == 2
    assert load["looks"] >= CONFIRM_FEWER  # it looked, and so ran on one thread meanwhile
