import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from spikegrad.data.configs import RandmanConfig
from spikegrad.data.randman import (
    RandomManifold,
    build_randman,
    cutoff_frequency,
    randman_dataset,
    randman_spike_times,
)

CONFIG = RandmanConfig(n_classes=5, n_units=20, samples_per_class=200, alpha=1.0, seed=7)


def test_cutoff_rule():
    assert cutoff_frequency(1.0) == 1000
    assert cutoff_frequency(2.0) == 32  # ceil(1e-3^(-1/2)) = ceil(31.6)
    assert cutoff_frequency(0.5, max_cutoff=1000) == 1000


def test_exactly_one_spike_per_input_neuron_within_window():
    steps = 100
    dataset = randman_dataset(CONFIG, steps)
    x, y = dataset.batch(np.arange(len(dataset)))
    assert x.shape == (1000, steps, 20)
    assert torch.equal(x.sum(dim=1), torch.ones(1000, 20))
    active_steps = torch.nonzero(x.sum(dim=(0, 2)))[:, 0]
    assert int(active_steps.max()) < steps * CONFIG.step_frac
    times, _ = randman_spike_times(CONFIG, steps)
    assert times.min() >= 0 and times.max() <= steps * CONFIG.step_frac
    # min-max standardised per class and unit: each class spans the whole window per unit
    for label in range(CONFIG.n_classes):
        per_class = times[_ == label]
        assert np.allclose(per_class.min(axis=0), 0) and np.allclose(per_class.max(axis=0), 50)
    assert sorted(np.bincount(y.numpy()).tolist()) == [200] * 5


@pytest.mark.parametrize("alpha, least_accuracy", [(1.0, 0.45), (2.0, 0.8)])
def test_classes_are_linearly_separable_well_above_chance(alpha, least_accuracy):
    # chance is 0.2; rough manifolds (small alpha) are harder for a linear read-out
    times, labels = randman_spike_times(CONFIG.model_copy(update={"alpha": alpha}), 100)
    scaled = times / 50.0
    classifier = LogisticRegression(max_iter=5000).fit(scaled[:800], labels[:800])
    assert classifier.score(scaled[800:], labels[800:]) > least_accuracy


def test_reproducible_from_seed_without_touching_global_rng():
    torch.manual_seed(123)
    np.random.seed(123)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    a, la = randman_spike_times(CONFIG, 100)
    b, lb = randman_spike_times(CONFIG, 100)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert np.array_equal(np.random.get_state()[1], numpy_before)
    c, _ = randman_spike_times(CONFIG.model_copy(update={"seed": 8}), 100)
    assert not np.allclose(a, c)


def test_manifold_formula_paper_spectrum():
    manifold = RandomManifold(3, 2, alpha=2.0, n_cutoff=4, seed=0, spectrum="paper")
    points = np.array([[0.1, 0.7], [0.5, 0.25]])
    out = manifold(points)
    k = np.arange(1, 5)
    for s, x in enumerate(points):
        for i in range(3):
            expected = 1.0
            for j in range(2):
                a, b, c = (manifold.amplitude[i, j], manifold.frequency_jitter[i, j],
                           manifold.phase[i, j])
                expected *= np.sum(k**-2.0 * a * np.sin(2 * np.pi * (k * x[j] * b + c)))
            assert out[s, i] == pytest.approx(expected)


def test_generator_spectrum_drops_constant_term():
    manifold = RandomManifold(2, 1, alpha=1.0, n_cutoff=8, seed=0, spectrum_offset=0.0)
    assert np.all(manifold.amplitude[:, :, 0] == 0)
    assert manifold.spectrum[0] == pytest.approx(1.0) and manifold.spectrum[1] == pytest.approx(0.5)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_default_spectrum_is_the_labs_randman(alpha):
    """fzenke/randman's TorchRandman.init_spect: 1 / (|k + 1 - β|^α + 1), β = 0, k = 0..F-1;
    its NumpyRandman: 1 / (k + 1)^α (spectrum_offset = 0)."""
    k = np.arange(32)
    lab = RandomManifold(2, 1, alpha=alpha, n_cutoff=32, seed=0)
    assert np.allclose(lab.spectrum, 1.0 / (np.abs(k + 1.0 - 0.0) ** alpha + 1.0), rtol=1e-14)
    assert CONFIG.spectrum_offset == 1.0 and CONFIG.spectrum == "generator"
    numpy_variant = RandomManifold(2, 1, alpha=alpha, n_cutoff=32, seed=0, spectrum_offset=0.0)
    assert np.allclose(numpy_variant.spectrum, 1.0 / (k + 1.0) ** alpha, rtol=1e-14)


def test_split_sizes():
    splits = build_randman(CONFIG, n_steps=100, dt_ms=1.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (800, 100, 100)
    assert splits.n_inputs == 20 and splits.n_classes == 5


def test_firing_times_are_cached_exactly(tmp_path, monkeypatch):
    from spikegrad.data.randman import cached_spike_times

    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path))
    fresh = randman_spike_times(CONFIG, 100)
    first = cached_spike_times(CONFIG, 100)
    assert len(list((tmp_path / "prepared").glob("randman-*.npz"))) == 1
    again = cached_spike_times(CONFIG, 100)
    for a, b, c in zip(fresh, first, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    cached_spike_times(CONFIG.model_copy(update={"seed": 8}), 100)
    assert len(list((tmp_path / "prepared").glob("randman-*.npz"))) == 2
