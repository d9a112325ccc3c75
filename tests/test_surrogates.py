import math

import pytest
import torch

from spikegrad import engine
from spikegrad.functional import LIFDynamics, lif_layer
from spikegrad.surrogates import SURROGATES, Surrogate, heaviside, register_surrogate, spike

X = torch.linspace(-3, 3, 601, dtype=torch.float64)


def _formula(name: str, x: torch.Tensor, b: float) -> torch.Tensor:
    if name == "superspike":
        return 1 / (b * x.abs() + 1) ** 2
    if name == "sigmoid":
        s = 1 / (1 + torch.exp(-b * x))
        return s * (1 - s)
    if name == "esser":
        return torch.clamp(1 - b * x.abs(), min=0)
    if name == "superspike_asymptotic":
        return b / (b * x.abs() + 1) ** 2
    if name == "exponential":
        return torch.exp(-b * x.abs())
    if name == "arctan":
        return 1 / (1 + (math.pi * b * x / 2) ** 2)
    if name == "gaussian":
        return torch.exp(-((b * x) ** 2) / 2)
    if name == "true":
        return torch.zeros_like(x)
    if name == "constant":
        return torch.ones_like(x)
    raise AssertionError(name)


BUILT_IN = ["superspike", "sigmoid", "esser", "superspike_asymptotic", "exponential", "arctan",
            "gaussian", "true", "constant"]
PEAKS = {"superspike": lambda b: 1.0, "sigmoid": lambda b: 0.25, "esser": lambda b: 1.0,
         "superspike_asymptotic": lambda b: b, "exponential": lambda b: 1.0,
         "arctan": lambda b: 1.0, "gaussian": lambda b: 1.0, "true": lambda b: 0.0,
         "constant": lambda b: 1.0}


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("slope", [0.5, 10.0, 100.0])
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_backward_is_scaled_formula(name, slope, scale):
    x = X.clone().requires_grad_(True)
    spike(x, Surrogate(name, slope, scale)).sum().backward()
    torch.testing.assert_close(x.grad, scale * _formula(name, X, slope), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("slope", [1.0, 25.0])
def test_peak_height_and_location(name, slope):
    surrogate = Surrogate(name, slope, scale=2.0)
    assert surrogate.peak == pytest.approx(2.0 * PEAKS[name](slope))
    values = surrogate.derivative(X)
    assert float(values.max()) == pytest.approx(surrogate.peak)
    if name not in ("true", "constant"):
        assert float(X[values.argmax()]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["superspike", "sigmoid", "esser", "exponential", "gaussian"])
def test_larger_slope_is_narrower(name):
    near = torch.tensor([0.2], dtype=torch.float64)
    wide = Surrogate(name, 1.0).derivative(near) / Surrogate(name, 1.0).peak
    narrow = Surrogate(name, 10.0).derivative(near) / Surrogate(name, 10.0).peak
    assert float(narrow) < float(wide)


@pytest.mark.parametrize("name", BUILT_IN)
def test_forward_is_exact_step(name):
    x = torch.tensor([-2.0, -1e-7, 0.0, 1e-7, 3.0], requires_grad=True)
    out = spike(x, Surrogate(name, 10.0, 5.0))
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert torch.equal(out, heaviside(x.detach()))


def test_register_custom_surrogate():
    @register_surrogate("user_triangle_squared")
    def triangle_squared(x, slope):
        """Squared triangle."""
        return torch.clamp(1 - slope * x.abs(), min=0) ** 2

    try:
        x = torch.tensor([0.0, 0.05, 0.5], dtype=torch.float64, requires_grad=True)
        spike(x, Surrogate("user_triangle_squared", 10.0)).sum().backward()
        assert x.grad.tolist() == pytest.approx([1.0, 0.25, 0.0])
        assert SURROGATES["user_triangle_squared"].description == "Squared triangle."
        with pytest.raises(ValueError, match="already registered"):
            register_surrogate("user_triangle_squared")(triangle_squared)
    finally:
        SURROGATES.pop("user_triangle_squared")


def test_a_config_names_a_registered_surrogate_and_no_other():
    """The config layer knows the built-in names without torch, and a user's registered ones
    from the registry."""
    from spikegrad.config import ConfigError, load_config

    @register_surrogate("user_config_triangle")
    def triangle(x, slope):
        return torch.clamp(1 - slope * x.abs(), min=0)

    try:
        config = load_config("randman", ["surrogate.name=user_config_triangle"])
        assert config.surrogate.name == "user_config_triangle"
    finally:
        SURROGATES.pop("user_config_triangle")
    with pytest.raises(ConfigError, match="unknown surrogate 'user_config_triangle'"):
        load_config("randman", ["surrogate.name=user_config_triangle"])


def test_the_config_layer_lists_the_builtin_surrogates_in_kernel_order():
    from spikegrad.schema import BUILTIN_SURROGATES

    builtin = sorted((shape.kernel_id, name) for name, shape in SURROGATES.items()
                     if shape.kernel_id)
    assert [name for _, name in builtin] == list(BUILTIN_SURROGATES)
    assert [kernel_id for kernel_id, _ in builtin] == list(range(1, len(builtin) + 1))


def test_unknown_surrogate_is_rejected():
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        Surrogate("nope")


def test_register_surrogate_refuses_what_is_not_a_surrogate():
    with pytest.raises(ValueError, match="surrogate name: expected a non-empty string"):
        register_surrogate("")
    with pytest.raises(TypeError, match="expected a function fn"):
        register_surrogate("user_number")(42)
    with pytest.raises(TypeError, match="must take \\(x, slope\\)"):
        register_surrogate("user_no_arguments")(lambda: 1.0)
    assert "user_number" not in SURROGATES and "user_no_arguments" not in SURROGATES


@pytest.mark.parametrize("returned", ["number", "per neuron", "float64", "wrong shape"])
def test_user_surrogate_results_read_alike_by_both_engines(returned):
    """The compiled kernels read σ' as a [steps, B, N] array: what a user's function returns
    is broadcast to it as the reference path's product would, or refused; before, a wrong
    shape was read past its end (NaN gradients) and a number or float64 raised inside."""
    from spikegrad.engine import cpp

    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    functions = {"number": lambda x, s: 0.5, "per neuron": lambda x, s: torch.ones(x.shape[-1]),
                 "float64": lambda x, s: torch.ones_like(x, dtype=torch.float64),
                 "wrong shape": lambda x, s: torch.ones(3)}
    name = "user_returns_" + returned.replace(" ", "_")
    register_surrogate(name)(functions[returned])
    try:
        dynamics = LIFDynamics(0.9, 0.8, surrogate=Surrogate(name))
        x = (torch.rand(2, 10, 5, generator=torch.Generator().manual_seed(0)) < 0.3).float()
        grads = []
        for run in (lambda w: lif_layer(x, w, dynamics),
                    lambda w: engine.lif_layer(x, w, dynamics, kernels="cpp")):
            w = torch.full((6, 5), 3.0, requires_grad=True)
            if returned == "wrong shape":
                with pytest.raises((RuntimeError, ValueError)):
                    run(w).sum().backward()
                continue
            run(w).sum().backward()
            grads.append(w.grad)
        if grads:
            torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
        if returned == "wrong shape":
            w = torch.full((6, 5), 3.0, requires_grad=True)
            with pytest.raises(ValueError, match=f"surrogate '{name}': its derivative"):
                engine.lif_layer(x, w, dynamics, kernels="cpp").sum().backward()
    finally:
        SURROGATES.pop(name)
