"""The fast engine against the reference path: same forward values, same gradients.

Every variant of the core (feed-forward / recurrent, detached / differentiable reset,
gradient through the recurrence or not, every registered surrogate, the readout, per-neuron
time constants fixed or learned) on both kernel sets (compiled CPU kernels and pure
PyTorch), in float64 and float32.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from spikegrad import engine, functional
from spikegrad.config import ConfigError, NetworkConfig, load_config
from spikegrad.engine import cpp, torch_kernels
from spikegrad.functional import LIFDynamics, ReadoutDynamics
from spikegrad.model import SNN
from spikegrad.surrogates import SURROGATES, Surrogate, register_surrogate

BACKENDS = ["cpp", "torch"]
TOLERANCE = 1e-5

if "test_triangle_squared" not in SURROGATES:  # a user-registered surrogate

    @register_surrogate("test_triangle_squared")
    def _triangle_squared(x, slope):
        return torch.clamp(1 - slope * x.abs(), min=0) ** 2


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "cpp":
        if not cpp.available():
            pytest.skip("compiled kernels unavailable")
        monkeypatch.setattr(engine, "kernels_for", lambda tensor, choice="auto": cpp)
    else:
        monkeypatch.setattr(engine, "kernels_for", lambda tensor, choice="auto": torch_kernels)
    return request.param


def assert_close(fast, ref, what):
    scale = ref.abs().max().item()
    error = (fast - ref).abs().max().item()
    assert error <= TOLERANCE * scale + 1e-12, f"{what}: max error {error:.3g}, scale {scale:.3g}"


def random_case(seed, dtype, recurrent, density=0.1, weight_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    batch, steps, n_in, n_hidden = (
        int(torch.randint(low, high, (), generator=g)) for low, high in ((1, 5), (5, 40), (1, 30),
                                                                         (1, 20))
    )
    inputs = (torch.rand(batch, steps, n_in, generator=g) < density).to(dtype)
    weight = torch.randn(n_hidden, n_in, generator=g, dtype=dtype) * weight_scale / n_in**0.5
    v = torch.randn(n_hidden, n_hidden, generator=g, dtype=dtype) * 0.5 if recurrent else None
    readout = torch.randn(3, n_hidden, generator=g, dtype=dtype)
    return inputs, weight, v, readout


def _run(impl: str, leaves, rec, dynamics, readout_dynamics, **engine_kwargs):
    """Spikes, readout trace and spike counts of the reference path, the engine's layer then
    readout, or the engine's fused layer and readout (whose counts come from the kernel)."""
    if impl == "reference":
        spikes = functional.lif_layer(leaves[0], leaves[1], dynamics, rec)
        trace = functional.readout_layer(spikes, leaves[2], readout_dynamics)
        return spikes, trace, spikes.sum(1)
    if impl == "separate":
        spikes = engine.lif_layer(leaves[0], leaves[1], dynamics, rec, **engine_kwargs)
        trace = engine.readout_layer(spikes, leaves[2], readout_dynamics)
        return spikes, trace, spikes.sum(1)
    spikes, trace, counts, _ = engine.lif_readout(leaves[0], leaves[1], dynamics, leaves[2],
                                                  readout_dynamics, rec, **engine_kwargs)
    assert torch.equal(counts, spikes.sum(1))
    return spikes, trace, counts


def compare(inputs, weight, v, readout, dynamics, input_grad=True, spike_loss="weighted",
            taus=None, learn_taus=False, **engine_kwargs):
    """Forward values and gradients of the fast engine (layer and readout apart, and fused)
    equal the reference path's. ``spike_loss``: a weighted sum of the spikes (a gradient
    that differs at every step), spike counts squared (one that is the same at every step,
    as an activity regulariser's; through the trains or the counts output), the counts'
    total (one gradient value, expanded) or none. ``taus``: per-neuron (τ_mem, τ_syn) ([N]
    each, dt = 1) replacing the decays of ``dynamics``; with ``learn_taus`` their gradients
    (through β = exp(-dt/τ)) are compared too."""
    readout_dynamics = ReadoutDynamics(0.95, 0.8, initial_membrane=-0.01)
    results = []
    for impl in ("reference", "separate", "fused"):
        leaves = [t.detach().clone().requires_grad_() for t in (inputs, weight, readout)]
        leaves[0].requires_grad_(input_grad)
        rec = None if v is None else v.detach().clone().requires_grad_()
        tau_leaves, layer_dynamics = [], dynamics
        if taus is not None:
            tau_leaves = [t.detach().clone().requires_grad_(learn_taus) for t in taus]
            layer_dynamics = dynamics.with_time_constants(*tau_leaves, dt_ms=1.0)
        kwargs = engine_kwargs if impl != "reference" else {}
        spikes, trace, counts = _run(impl, leaves, rec, layer_dynamics, readout_dynamics,
                                     **kwargs)
        loss = trace.max(1).values.pow(2).sum() + trace.sum()
        if spike_loss == "weighted":
            loss = loss + (spikes * torch.linspace(-1, 1, spikes.shape[-1],
                                                   dtype=spikes.dtype)).sum()
        elif spike_loss == "counts":  # through the spike trains
            loss = loss + spikes.sum(1).pow(2).sum() * 0.1
        elif spike_loss == "fused counts":  # through the counts output
            loss = loss + counts.pow(2).sum() * 0.1
        elif spike_loss == "fused count total":  # one gradient value expanded to [B, N]
            loss = loss + counts.sum() * 0.1
        params = leaves[int(not input_grad):] + ([rec] if rec is not None else [])
        params += tau_leaves if learn_taus else []
        results.append((spikes, trace, torch.autograd.grad(loss, params)))
    s_ref, y_ref, g_ref = results[0]
    for name, (s_fast, y_fast, g_fast) in zip(("separate", "fused"), results[1:], strict=True):
        assert torch.equal(s_fast, s_ref), f"{name}: spikes differ"
        assert_close(y_fast, y_ref, f"{name}: readout")
        for i, (a, b) in enumerate(zip(g_fast, g_ref, strict=True)):
            assert_close(a, b, f"{name}: gradient {i}")
    return s_ref


VARIANTS = list(itertools.product([False, True], [True, False], [True, False]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("recurrent,detach_reset,recurrent_gradient", VARIANTS)
def test_variants_match_reference(backend, dtype, recurrent, detach_reset, recurrent_gradient):
    for seed, spike_loss in zip(range(6), ("weighted", "none", "counts", "weighted",
                                           "fused counts", "fused count total"), strict=True):
        inputs, weight, v, readout = random_case(seed, dtype, recurrent)
        dynamics = LIFDynamics(0.9, 0.8, Surrogate("superspike", 10.0, 1.0), detach_reset,
                               recurrent_gradient)
        compare(inputs, weight, v, readout, dynamics, input_grad=seed != 0,
                spike_loss=spike_loss)


def random_time_constants(seed, n, dtype):
    """Per-neuron (τ_mem, τ_syn) in ms for dt = 1: spread over [2, 40) and [1.5, 20)."""
    g = torch.Generator().manual_seed(1000 + seed)
    return (2.0 + 38.0 * torch.rand(n, generator=g, dtype=dtype),
            1.5 + 18.5 * torch.rand(n, generator=g, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("recurrent,detach_reset", [(False, True), (True, True), (False, False),
                                                    (True, False)])
def test_per_neuron_time_constants_match_reference(backend, dtype, learn, recurrent,
                                                   detach_reset):
    """Heterogeneous τ, fixed or learned: same spikes, traces and gradients (weights, inputs
    and, when learned, every neuron's τ_mem and τ_syn), on random shapes and seeds."""
    for seed, spike_loss in zip(range(4), ("weighted", "counts", "none", "fused counts"),
                                strict=True):
        inputs, weight, v, readout = random_case(20 + seed, dtype, recurrent)
        taus = random_time_constants(seed, weight.shape[0], dtype)
        dynamics = LIFDynamics(0.9, 0.8, Surrogate("superspike", 10.0, 1.0), detach_reset)
        compare(inputs, weight, v, readout, dynamics, input_grad=seed != 1,
                spike_loss=spike_loss, taus=taus, learn_taus=learn)


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("surrogate", ["superspike", "test_triangle_squared"])
def test_learned_time_constants_with_recompute(backend, recurrent, surrogate):
    """Recomputing U (and I) in the backward pass gives the same τ gradients, for a built-in
    surrogate (recomputed inside the kernels) and a registered one (one more forward pass)."""
    for seed in range(2):
        inputs, weight, v, readout = random_case(30 + seed, torch.float64, recurrent)
        taus = random_time_constants(seed, weight.shape[0], torch.float64)
        dynamics = LIFDynamics(0.9, 0.8, Surrogate(surrogate, 5.0, 1.0), detach_reset=False)
        compare(inputs, weight, v, readout, dynamics, taus=taus, learn_taus=True,
                recompute=True)


def test_learned_time_constants_on_real_valued_input(backend):
    """The current paradigm (dense input, projected outside the loop) with learned τ."""
    inputs, weight, v, readout = random_case(5, torch.float64, True, density=0.5)
    noisy = inputs * torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0),
                                dtype=inputs.dtype) * 3
    taus = random_time_constants(5, weight.shape[0], torch.float64)
    compare(noisy, weight, v, readout, LIFDynamics(0.9, 0.8), taus=taus, learn_taus=True)


def test_only_the_time_constants_learn(backend):
    """Fixed weights, learned τ: the decays' gradients alone are asked for and are right."""
    inputs, weight, v, readout = random_case(13, torch.float64, True)
    taus = [t.requires_grad_() for t in random_time_constants(13, weight.shape[0],
                                                              torch.float64)]
    grads = []
    for run in (functional.lif_layer, engine.lif_layer):
        spikes = run(inputs, weight * 3, LIFDynamics(0.9, 0.8).with_time_constants(*taus, 1.0),
                     v)
        loss = (spikes * torch.linspace(-1, 1, spikes.shape[-1], dtype=spikes.dtype)).sum()
        grads.append(torch.autograd.grad(loss, taus))
    for a, b in zip(*grads, strict=True):
        assert b.abs().max() > 0
        assert_close(b, a, "τ gradient")


@pytest.mark.parametrize("bad", [torch.full((3,), 0.9), torch.full((4,), 0.9, dtype=torch.float64),
                                 torch.full((4, 1), 0.9)])
@pytest.mark.parametrize("run", [functional.lif_layer, engine.lif_layer])
def test_per_neuron_decays_of_the_wrong_shape_or_dtype(run, bad):
    inputs, weight = torch.zeros(2, 5, 3), torch.zeros(4, 3)
    with pytest.raises(functional.InputError, match=r"dynamics.beta_mem: expected a number or "
                       r"\[4\] float32 on cpu, got"):
        run(inputs, weight, LIFDynamics(bad, 0.8))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_every_surrogate(backend, dtype, name):
    inputs, weight, v, readout = random_case(7, dtype, recurrent=True)
    dynamics = LIFDynamics(0.9, 0.8, Surrogate(name, 5.0, 0.7), detach_reset=False)
    compare(inputs, weight, v, readout, dynamics)


@pytest.mark.parametrize("recurrent", [False, True])
def test_no_spikes_at_all(backend, recurrent):
    inputs, weight, v, readout = random_case(3, torch.float64, recurrent)
    dynamics = LIFDynamics(0.9, 0.8, detach_reset=False)
    spikes = compare(inputs * 0, weight, v, readout, dynamics)
    assert spikes.sum() == 0


@pytest.mark.parametrize("recurrent", [False, True])
def test_spikes_at_every_step(backend, recurrent):
    """Every input spikes at every step (dense path); the layer fires as fast as it can."""
    inputs, weight, v, readout = random_case(4, torch.float64, recurrent)
    dynamics = LIFDynamics(0.9, 0.8, detach_reset=False)
    spikes = compare(torch.ones_like(inputs), weight.abs() * 10, v, readout, dynamics)
    assert (spikes[:, 2::2].mean() > 0.9) and (spikes[:, 1:].sum(1) > 0).all()


@pytest.mark.parametrize("density", [0.05, 1.0])
def test_real_valued_input_current(backend, density):
    """First layer in the current paradigm: real-valued input, sparse or dense."""
    inputs, weight, v, readout = random_case(5, torch.float64, True, density=density)
    noisy = inputs * torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0),
                                dtype=inputs.dtype) * 3
    compare(noisy, weight, v, readout, LIFDynamics(0.9, 0.8))


def test_recompute_matches(backend):
    inputs, weight, v, readout = random_case(6, torch.float32, True)
    compare(inputs, weight, v, readout, LIFDynamics(0.9, 0.8, detach_reset=False),
            recompute=True)


def _network_gradients(recompute, recurrent, reset, taus, batch, steps, seed,
                       hidden=(40, 30), reduction="max", classes=4):
    """Logits, spike counts and every parameter's gradient of a float32 network (the first
    hidden layer recurrent when ``recurrent``), with learned per-neuron τ when ``taus``."""
    g = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(batch, steps, 20, generator=g) < 0.05).float()
    labels = torch.randint(classes, (batch,), generator=g)
    net = SNN.build(20, list(hidden), classes, recurrent=[recurrent] + [False] * (len(hidden) - 1),
                    detach_reset=not reset, engine="fast", recompute=recompute, init_scale=12.0,
                    generator=torch.Generator().manual_seed(seed + 1))
    if taus:
        for layer in net.hidden:
            layer.set_time_constants(*random_time_constants(seed, layer.out_features,
                                                            torch.float32), 1.0, learn=True)
    out = net(inputs, record_spikes=False, record_trace=False, reduction=reduction)
    loss = (torch.nn.functional.cross_entropy(out.logits, labels)
            + 1e-3 * sum(c.pow(2).mean() for c in out.spike_counts))
    loss.backward()
    assert all(c.sum() > 0 for c in out.spike_counts)
    return ([out.logits.detach()] + [c.detach() for c in out.spike_counts]
            + [p.grad for p in net.parameters()])


@pytest.mark.parametrize("recurrent, reset, taus", [(False, False, False), (True, True, False),
                                                    (False, True, True), (True, False, True)])
def test_recomputing_and_keeping_the_state_give_the_same_bits(backend, recurrent, reset, taus):
    """``recompute`` changes time and memory, never results: the kernels recompute U a
    block of batch entries at a time and sum the weight gradients in the same order as when
    U is kept (a short batch and a long one, B = 250 and T = 300, both)."""
    for batch, steps, seed in ((3, 30, 0), (250, 300, 1)):
        kept, again, auto = (_network_gradients(setting, recurrent, reset, taus, batch, steps,
                                                seed) for setting in (False, True, "auto"))
        for a, b, c in zip(kept, again, auto, strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_two_layer_network(backend, dtype):
    """Whole networks: gradients flow into the spikes of the first layer as well."""
    g = torch.Generator().manual_seed(11)
    inputs = (torch.rand(6, 50, 40, generator=g) < 0.1).to(dtype)
    grads = []
    for engine_name in ("reference", "fast"):
        net = SNN.build(40, [30, 20], 5, recurrent=[True, False], detach_reset=False,
                        engine=engine_name, init_scale=6.0,
                        generator=torch.Generator().manual_seed(1)).to(dtype)
        out = net(inputs)
        loss = out.readout.max(1).values.logsumexp(-1).sum()
        loss.backward()
        grads.append([p.grad for p in net.parameters()])
        assert out.hidden_spikes[0].sum() > 0
    for a, b in zip(*grads, strict=True):
        assert_close(b, a, "network gradient")


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_network_with_heterogeneous_learned_time_constants(backend, dtype, recompute):
    """A two-layer network of gamma-distributed, learned τ built from its config: the fast
    engine's gradients of every parameter (τ as log τ included) equal the reference's."""
    inputs = (torch.rand(6, 50, 40, generator=torch.Generator().manual_seed(11)) < 0.1)
    grads = []
    for engine_name in ("reference", "fast"):
        config = NetworkConfig.model_validate({
            "n_inputs": 40, "n_outputs": 5,
            "model": {"hidden": [{"size": 30, "recurrent": True, "detach_reset": False},
                                 {"size": 20}],
                      "init": {kind: {"scale": 6.0} for kind in ("feedforward", "recurrent",
                                                                 "readout")},
                      "time_constants": {"distribution": "gamma", "learn": True},
                      "engine": engine_name, "recompute": recompute}})
        net = SNN.from_config(config, generator=torch.Generator().manual_seed(1)).to(dtype)
        out = net(inputs.to(dtype), reduction="max")
        loss = out.logits.logsumexp(-1).sum() + 0.01 * sum(c.pow(2).sum() for c in out.spike_counts)
        loss.backward()
        grads.append(dict(net.named_parameters()))
        assert out.hidden_spikes[0].sum() > 0
    assert {name for name in grads[0] if "tau" in name} == {
        f"hidden.{i}.log_tau_{kind}" for i in (0, 1) for kind in ("mem", "syn")}
    for name, reference in grads[0].items():
        assert grads[1][name].grad.abs().max() > 0, name
        assert_close(grads[1][name].grad, reference.grad, name)


@pytest.mark.parametrize("recurrent", [False, True])
def test_no_gradient_reaches_the_layer(backend, recurrent):
    """A loss that does not depend on the spikes gives zero gradients, not an error."""
    inputs, weight, v, readout = random_case(8, torch.float32, recurrent)
    leaves = [t.clone().requires_grad_() for t in (weight, readout)]
    rec = None if v is None else v.clone().requires_grad_()
    spikes = engine.lif_layer(inputs, leaves[0], LIFDynamics(0.9, 0.8), rec)
    trace = engine.readout_layer(spikes, leaves[1], ReadoutDynamics(0.95, 0.8))
    params = leaves + ([rec] if rec is not None else [])
    grads = torch.autograd.grad((trace * 0).sum(), params)
    assert all(g is not None and not g.any() for g in grads)


def test_spikes_are_stored_time_major(backend):
    """The layer's spikes are [B, T, N] with each step contiguous; they carry no copy."""
    inputs, weight, v, _ = random_case(9, torch.float32, True)
    spikes = engine.lif_layer(inputs, weight, LIFDynamics(0.9, 0.8), v)
    assert spikes.shape == (*inputs.shape[:2], weight.shape[0])
    assert spikes.transpose(0, 1).is_contiguous()


@pytest.mark.parametrize("recurrent", [False, True])
def test_no_gradient_reaches_the_fused_layer(backend, recurrent):
    """Fused layer and readout: a loss of neither output gives zero gradients."""
    inputs, weight, v, readout = random_case(8, torch.float32, recurrent)
    leaves = [t.clone().requires_grad_() for t in (weight, readout)]
    rec = None if v is None else v.clone().requires_grad_()
    spikes, trace, *_ = engine.lif_readout(inputs, leaves[0], LIFDynamics(0.9, 0.8),
                                           leaves[1], ReadoutDynamics(0.95, 0.8), rec)
    params = leaves + ([rec] if rec is not None else [])
    grads = torch.autograd.grad((trace * 0).sum() + (spikes * 0).sum(), params)
    assert all(g is not None and not g.any() for g in grads)


@pytest.mark.parametrize("recompute", [False, True])
def test_no_state_is_kept_without_a_backward_pass(backend, recompute, monkeypatch):
    """Under torch.no_grad (evaluation) the forward loop keeps no U for a backward pass that
    cannot come, though the weights require gradients; with gradients it keeps U unless
    recompute. The outputs are the same either way."""
    kernels = engine.kernels_for(torch.zeros(0))
    kept, forward = [], kernels.lif_forward
    monkeypatch.setattr(kernels, "lif_forward",
                        lambda *args, **kwargs: kept.append(args[7]) or forward(*args, **kwargs))
    inputs, weight, v, readout = random_case(3, torch.float32, True)
    weight, readout = weight.requires_grad_(), readout.requires_grad_()

    def run():
        return engine.lif_readout(inputs, weight, LIFDynamics(0.9, 0.8), readout,
                                  ReadoutDynamics(0.95, 0.8), v, recompute=recompute,
                                  reduction="max")

    with torch.no_grad():
        evaluated = run()
    trained = run()
    assert kept == [False, not recompute]
    assert torch.equal(evaluated.logits, trained.logits.detach())
    assert torch.equal(evaluated.spikes, trained.spikes.detach())


@pytest.mark.parametrize("learned_taus, dense_input", [(False, False), (True, False),
                                                       (False, True)])
def test_same_bits_for_any_thread_count(learned_taus, dense_input):
    """Work is split into blocks set by the batch size alone and partial sums are added in
    block order: one thread and two give identical spikes, traces and gradients (of learned
    per-neuron time constants too; and of a dense input's weights, which have no sparse
    form to be summed over)."""
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    g = torch.Generator().manual_seed(5)
    inputs = (torch.randn(37, 60, 50, generator=g) if dense_input
              else (torch.rand(37, 60, 50, generator=g) < 0.05).float())
    outcomes = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            net = SNN.build(50, [40, 30], 7, recurrent=[True, False], engine="fast",
                            init_scale=6.0, generator=torch.Generator().manual_seed(2))
            if learned_taus:
                for i, layer in enumerate(net.hidden):
                    layer.set_time_constants(*random_time_constants(i, layer.out_features,
                                                                    torch.float32),
                                             1.0, learn=True)
            out = net(inputs)
            loss = out.readout.max(1).values.logsumexp(-1).sum() + out.hidden_spikes[0].sum()
            loss.backward()
            outcomes.append([out.readout, *out.hidden_spikes,
                             *(p.grad for p in net.parameters())])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outcomes, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_weight_gradient_is_the_product_whatever_the_thread_count(dtype):
    """The compiled kernels' x^T g (the weight gradient of an input without a sparse form):
    PyTorch's product to rounding, and the same bits on 1, 2 and 3 threads, for row counts
    across the block and stretch boundaries and column counts that are not whole vectors,
    with rows of x apart in memory (a slice of a wider tensor)."""
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    g = torch.Generator().manual_seed(3)
    before = torch.get_num_threads()
    try:
        for rows, columns, n in [(1, 3, 5), (17, 20, 100), (300, 9, 10), (4100, 37, 13)]:
            x = torch.randn(rows, columns + 3, generator=g, dtype=dtype)[:, 1:-2]
            grad = torch.randn(rows, n, generator=g, dtype=dtype)
            results = []
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                results.append(cpp.dense_tmm(x, grad))
            expected = x.double().t() @ grad.double()
            tolerance = 1e-4 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(results[0].double(), expected, rtol=tolerance,
                                       atol=tolerance * rows ** 0.5)
            assert all(torch.equal(results[0], r) for r in results[1:])
    finally:
        torch.set_num_threads(before)


def test_stale_build_lock_does_not_hang(tmp_path):
    """A build killed mid-way leaves torch's ``lock`` file behind; the next process must not
    wait for it forever (the kernels' own lock is released by the system on death)."""
    import subprocess
    import sys

    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    from torch.utils.cpp_extension import _get_build_directory

    stale = Path(_get_build_directory(cpp.build_name(), False)) / "lock"
    stale.write_text("")
    code = "from spikegrad.engine import cpp; assert cpp.available()"
    done = subprocess.run([sys.executable, "-c", code], timeout=90, capture_output=True,
                          text=True)
    # without the fix torch's builder waits for the stale lock forever (the timeout fails
    # the test); other processes may build in the shared folder meanwhile, so the lock file
    # itself is not looked at afterwards
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("reduction", ["max", "sum", "mean", "last"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_logits_from_the_kernels_match_the_reference(backend, reduction, recurrent):
    """The fused layer's logits, and every gradient through them (with a spike-count
    regulariser beside), equal reduce_readout of the reference trace."""
    from spikegrad.losses import classification_loss, reduce_readout

    inputs, weight, v, readout = random_case(12, torch.float64, recurrent)
    dynamics = LIFDynamics(0.9, 0.8, Surrogate("superspike", 10.0, 1.0))
    readout_dynamics = ReadoutDynamics(0.95, 0.8)
    labels = torch.arange(inputs.shape[0]) % readout.shape[0]
    results = []
    for fused in (False, True):
        leaves = [t.detach().clone().requires_grad_() for t in (inputs, weight, readout)]
        rec = None if v is None else v.detach().clone().requires_grad_()
        if fused:
            out = engine.lif_readout(leaves[0], leaves[1], dynamics, leaves[2],
                                     readout_dynamics, rec, spikes=False, trace=False,
                                     reduction=reduction)
            assert out.spikes is None and out.trace is None
            logits, counts = out.logits, out.counts
        else:
            spikes = functional.lif_layer(leaves[0], leaves[1], dynamics, rec)
            trace = functional.readout_layer(spikes, leaves[2], readout_dynamics)
            logits, counts = reduce_readout(trace, reduction), spikes.sum(1)
        loss = classification_loss(logits, labels) + 0.01 * counts.pow(2).mean()
        params = leaves + ([rec] if rec is not None else [])
        results.append((logits, torch.autograd.grad(loss, params)))
    (ref, ref_grads), (fast, fast_grads) = results
    assert_close(fast, ref, "logits")
    for i, (a, b) in enumerate(zip(fast_grads, ref_grads, strict=True)):
        assert_close(a, b, f"gradient {i}")


def test_two_environments_never_share_a_build(monkeypatch, tmp_path):
    """A build command names the include folders of its environment's torch: two
    environments sharing one build folder would each find the other's build out of date and
    rebuild it on every start."""
    import torch as torch_module

    here = cpp.build_name()
    assert cpp.build_name() == here
    monkeypatch.setattr(torch_module, "__file__", str(tmp_path / "other-env" / "__init__.py"))
    assert cpp.build_name() != here


def test_kernels_and_recompute_settings_and_their_environment_overrides(monkeypatch):
    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    monkeypatch.delenv("SPIKEGRAD_RECOMPUTE", raising=False)
    x = torch.zeros(2, 3)
    assert engine.kernels_for(x, "torch") is torch_kernels
    assert engine.kernels_for(x.half(), "auto") is torch_kernels
    with pytest.raises(ValueError, match="kernels 'cpp': the compiled kernels take"):
        engine.kernels_for(x.half(), "cpp")
    assert engine.kernel_setting("cpp") == "cpp" and not engine.recompute_setting(False)
    assert engine.recompute_setting(True) and not engine.recompute_setting(None)
    assert engine.recompute_setting() == engine.recompute_setting("auto") == "auto"
    monkeypatch.setenv("SPIKEGRAD_ENGINE", "torch")
    monkeypatch.setenv("SPIKEGRAD_RECOMPUTE", "1")
    assert engine.kernel_setting("cpp") == "torch" and engine.kernels_for(x, "cpp") is torch_kernels
    assert engine.recompute_setting(False)
    monkeypatch.setenv("SPIKEGRAD_RECOMPUTE", "0")
    assert not engine.recompute_setting(True)
    monkeypatch.setenv("SPIKEGRAD_RECOMPUTE", "auto")
    assert engine.recompute_setting(False) == "auto"
    monkeypatch.setenv("SPIKEGRAD_RECOMPUTE", "0")
    model = load_config({"data": {"name": "randman"}, "model": {"kernels": "cpp"}}).model
    assert engine.engine_info(model) == {"kernels": "torch", "recompute": False}
    monkeypatch.setenv("SPIKEGRAD_ENGINE", "gpu")
    with pytest.raises(ValueError, match="SPIKEGRAD_ENGINE='gpu': expected one of auto, cpp"):
        engine.kernel_setting()
    model = load_config({"data": {"name": "randman"}, "model": {"engine": "reference"}}).model
    assert engine.engine_info(model) == {"kernels": None, "recompute": None}


def test_the_network_passes_its_kernels_and_recompute_to_the_engine(monkeypatch):
    monkeypatch.delenv("SPIKEGRAD_ENGINE", raising=False)
    monkeypatch.delenv("SPIKEGRAD_RECOMPUTE", raising=False)
    asked, recomputed = [], []
    choose = engine.kernels_for
    monkeypatch.setattr(engine, "kernels_for", lambda tensor, choice="auto":
                        asked.append(choice) or choose(tensor, choice))
    prepare = engine._prepare
    monkeypatch.setattr(engine, "_prepare",
                        lambda inputs, recompute, kernels: recomputed.append(recompute)
                        or prepare(inputs, recompute, kernels))
    inputs = (torch.rand(2, 10, 4, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    for fused in (True, False):
        net = SNN.build(4, [5, 6], 3, engine="fast", kernels="torch", recompute=True)
        if fused:
            net(inputs)
        else:
            net.readout(net.hidden[1](net.hidden[0](inputs)))
    # asked once per operation, and again by each layer operation for its thread count
    assert set(asked) == {"torch"} and set(recomputed) == {True}
    assert len(recomputed) == 4 and len(asked) == 5 + len(recomputed)
    with pytest.raises(ConfigError, match="model.kernels: Input should be"):
        SNN.build(4, [5], 3, kernels="gpu")


def test_the_kernels_exponential_is_within_one_unit_and_the_same_in_vectors():
    """The sigmoid, exponential and Gaussian surrogates' exp: the kernels' own, so that the
    scalar and vector code (and every build) give the same bits: within 1 unit in the last
    place of exp over [-110, 95], exact at the edges (0 below the subnormals, +inf above the
    largest float), NaN for NaN."""
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    x = torch.cat([torch.linspace(-110.0, 95.0, 2_000_003),
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 88.72283, 88.7229,
                                 -87.33655, -103.9721, -103.28, 1e-30, -1e-30])])
    lane_by_lane, vectors = cpp._ops().exp_float_both(x)
    assert torch.equal(lane_by_lane, vectors)
    exact = torch.exp(x.double())
    rounded = exact.float()
    normal = torch.isfinite(rounded) & (rounded.abs() >= torch.finfo(torch.float32).tiny)
    unit = (torch.nextafter(rounded.abs(), torch.tensor(float("inf"))) - rounded.abs()).double()
    assert ((lane_by_lane.double() - exact).abs() / unit)[normal].max() < 1.0
    subnormal = ~normal & torch.isfinite(rounded) & (rounded != 0)
    assert ((lane_by_lane.double() - exact)[subnormal].abs() < 2.0 ** -149).all()
    edges = (rounded == 0) | torch.isinf(rounded)
    assert torch.equal(lane_by_lane[edges], rounded[edges])
    nan = cpp._ops().exp_float_both(torch.full((20,), float("nan")))
    assert all(torch.isnan(t).all() for t in nan)
