"""Spike batches as sparse COO tensors (``EventDataset.batch(..., sparse=True)``): the same
values as the dense batch, the same network outputs and gradients on every engine and kernel
set (bit for bit where the same products run), and the same training."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from conftest import TINY
from spikegrad import engine, training
from spikegrad.config import load_config
from spikegrad.data.base import EVENT_DTYPE, EventDataset
from spikegrad.engine import cpp, torch_kernels
from spikegrad.engine.contract import Kernels
from spikegrad.model import SNN
from spikegrad.training import Trainer


def event_dataset(max_events: int, binary: bool, seed: int = 0) -> EventDataset:
    """40 samples of 30 bins x 12 units; events in no order, with repeats, some samples
    empty."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(40):
        k = int(rng.integers(0, max_events))
        sample = np.empty(k, dtype=EVENT_DTYPE)
        sample["t"], sample["x"] = rng.integers(0, 30, k), rng.integers(0, 12, k)
        events.append(sample)
    return EventDataset.from_events(events, rng.integers(0, 3, 40), 30, 12, binary=binary)


@pytest.mark.parametrize("binary", [False, True])
def test_sparse_batch_holds_the_dense_batchs_values(binary):
    data = event_dataset(60, binary)
    indices = np.random.default_rng(1).permutation(40)[:17]
    dense, labels = data.batch(indices)
    sparse, sparse_labels = data.batch(indices, sparse=True)
    assert sparse.is_sparse and sparse.is_coalesced() and sparse.shape == dense.shape
    assert torch.equal(sparse.to_dense(), dense) and torch.equal(sparse_labels, labels)
    assert float(dense.max()) == (1.0 if binary else float(dense.max()))
    assert binary or float(dense.max()) > 1  # repeated events add up
    empty, _ = data.batch(np.array([], dtype=np.int64), sparse=True)
    assert empty.shape == (0, 30, 12)


def _run(net_kwargs: dict, inputs: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    net = SNN.build(12, **net_kwargs, generator=torch.Generator().manual_seed(1))
    out = net(inputs, record_spikes=False, record_trace=False, reduction="max")
    loss = torch.nn.functional.cross_entropy(out.logits, labels)
    loss = loss + 1e-3 * sum(counts.sum() for counts in out.spike_counts)
    loss.backward()
    return [out.logits.detach()] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("max_events", [20, 90], ids=["sparse", "dense"])
@pytest.mark.parametrize("engine_name, kernels", [("fast", "cpp"), ("fast", "torch"),
                                                  ("reference", "auto")])
@pytest.mark.parametrize("hidden, recurrent", [([16], False), ([16], True), ([10, 8], True)])
def test_sparse_input_gives_the_dense_inputs_outputs_and_gradients(
        max_events, engine_name, kernels, hidden, recurrent):
    """The same products run on both (the compiled kernels read the sparse form either way;
    a batch too dense for it is multiplied densely either way), so the same bits."""
    if kernels == "cpp" and not cpp.available():
        pytest.skip("compiled kernels unavailable")
    data = event_dataset(max_events, binary=False)
    indices = np.arange(23)
    dense, labels = data.batch(indices)
    sparse, _ = data.batch(indices, sparse=True)
    kwargs = {"hidden_sizes": hidden, "n_outputs": 3, "recurrent": recurrent,
              "init_scale": 6.0, "engine": engine_name, "kernels": kernels}
    for a, b in zip(_run(kwargs, dense, labels), _run(kwargs, sparse, labels), strict=True):
        assert torch.equal(a, b)


def test_a_sparse_batch_too_dense_for_the_sparse_form_is_multiplied_densely():
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    sparse, _ = event_dataset(90, binary=False).batch(np.arange(23), sparse=True)
    assert cpp.sparse_form_of_coo(sparse, engine.MAX_SPARSE_DENSITY) is None
    assert not engine._readable(sparse, "cpp").is_sparse
    light, _ = event_dataset(20, binary=False).batch(np.arange(23), sparse=True)
    assert engine._readable(light, "cpp").is_sparse
    assert not engine._readable(light, "torch").is_sparse  # PyTorch's kernels: dense


def test_both_kernel_sets_provide_the_contract():
    members = [name for name in vars(Kernels) if not name.startswith("_")]
    members += list(typing.get_type_hints(Kernels))
    for kernels in (cpp, torch_kernels):
        missing = [name for name in members if not hasattr(kernels, name)]
        assert missing == [], f"{kernels.__name__} lacks {missing}"


def test_training_on_sparse_batches_is_training_on_dense_ones(monkeypatch):
    """The trainer asks for sparse spike batches; forced to dense ones it ends the same."""
    config = load_config({**TINY, "training": {**TINY["training"], "epochs": 2}})
    sparse_run = Trainer(config, progress=False)
    sparse_result = sparse_run.fit()
    iterate = training.iterate_batches
    monkeypatch.setattr(training, "iterate_batches",
                        lambda *args, sparse=False, **kwargs: iterate(*args, **kwargs))
    dense_run = Trainer(config, progress=False)
    dense_result = dense_run.fit()
    assert sparse_run.state.history and [
        {k: v for k, v in epoch.items() if k != "epoch_time_s"}
        for epoch in sparse_run.state.history] == [
        {k: v for k, v in epoch.items() if k != "epoch_time_s"}
        for epoch in dense_run.state.history]
    assert sparse_result["test_accuracy"] == dense_result["test_accuracy"]
