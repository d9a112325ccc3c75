"""The reproduction pipeline: claim rules on hand-made trials, specs, and a smoke run
rendered in headless Chromium."""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from spikegrad.reproduce import claims as rules
from spikegrad.reproduce import reproduce
from spikegrad.reproduce.studies import PROFILES, STUDY_NAMES, study_specs
from spikegrad.studies import load_study_spec

SEEDS = range(6)
NOISE = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003]  # per seed, shared by every condition


def trial(accuracy, seed=0, status="completed", spikes=1.0, valid=None, best_epoch=20,
          stop_reason="patience", **fields):
    """A finished trial as the database returns it; ``fields`` set config paths (a__b)."""
    config = {"seed": seed, "data": {"name": "randman", "n_classes": 10},
              "training": {"epochs": 100, "learning_rate": 0.05},
              "surrogate": {"name": "superspike", "slope": 10.0, "scale": 1.0},
              "model": {"hidden": [{"recurrent": False, "detach_reset": True,
                                    "recurrent_gradient": True,
                                    "activity": {"upper_strength": 0.0}}],
                        "readout": {"reduction": "max"}}}
    for path, value in fields.items():
        node = config
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[parts[-1]] = value
    trial.count += 1
    return {"status": status, "test_accuracy": accuracy, "config": config,
            "valid_accuracy": accuracy if valid is None else valid,
            "hidden_spikes_per_neuron": [spikes], "config_hash": f"h{trial.count}",
            "best_epoch": best_epoch, "epoch_budget": 100, "stop_reason": stop_reason}


trial.count = 0


def seeded(accuracy, noise=0.0, **fields):
    """One trial per seed at ``accuracy`` (plus the shared per-seed noise, plus ``noise``
    alternating in sign from seed to seed: a difference that the seeds do not agree on)."""
    return [trial(accuracy + NOISE[s] + noise * (-1) ** s, seed=s, **fields) for s in SEEDS]


def shape_grid(best_by_shape, slope_drop=0.0, slopes=(0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)):
    """Each shape: accuracy `best` at slopes 1..100 (10 best), `best - 0.3` at the ends;
    ``slope_drop`` lowers the slopes next to 10."""
    out = []
    for shape, best in best_by_shape.items():
        for slope in slopes:
            acc = best if 1.0 <= slope <= 100.0 else best - 0.3
            if slope in (3.16, 31.6):
                acc -= slope_drop
            bonus = 0.001 if slope == 10.0 else 0.0  # slope 10 is best on validation
            out += [t | {"valid_accuracy": t["valid_accuracy"] + bonus}
                    for t in seeded(acc, surrogate__name=shape, surrogate__slope=slope)]
    return out


def controls(true=0.1, constant=0.7):
    return (seeded(true, surrogate__name="true", surrogate__slope=10.0)
            + seeded(constant, surrogate__name="constant", surrogate__slope=10.0))


def verdict(rule, **data):
    return rule({k.replace("_", "-").replace("readout-", "readout/"): v
                 for k, v in data.items()}).verdict


def test_statistics_against_scipy():
    from scipy import stats

    from spikegrad.reproduce.stats import Paired, Summary

    values = [0.91, 0.93, 0.92, 0.95, 0.90]
    summary = Summary.of(values)
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert summary.sd == pytest.approx(np.std(values, ddof=1))
    assert (summary.low, summary.high) == (pytest.approx(low), pytest.approx(high))
    a, b = dict(enumerate(values)), {i: v - 0.01 for i, v in enumerate(values)}
    paired = Paired.of(a, b)
    assert paired.mean == pytest.approx(0.01) and paired.sd == pytest.approx(0.0, abs=1e-12)
    assert paired.greater(0.0) and paired.equivalent(0.02) and not paired.equivalent(0.005)
    assert not Paired.of({0: 1.0}, {0: 0.0}).greater(0.0)  # one pair decides nothing


def test_shape_claim_on_both_sides_of_its_margin():
    same = shape_grid({"superspike": 0.95, "sigmoid": 0.95, "esser": 0.945})
    assert verdict(rules.shape_claim, shape_slope=same) == "holds"
    apart = shape_grid({"superspike": 0.95, "sigmoid": 0.90, "esser": 0.95})
    assert verdict(rules.shape_claim, shape_slope=apart) == "does not hold"
    noisy = [t | {"test_accuracy": t["test_accuracy"] + 0.03 * (-1) ** t["config"]["seed"]}
             if t["config"]["surrogate"]["name"] == "esser" else t
             for t in shape_grid({"superspike": 0.95, "sigmoid": 0.95, "esser": 0.95})]
    assert verdict(rules.shape_claim, shape_slope=noisy) == "inconclusive"


def test_slope_claim_on_both_sides_of_a_decade():
    wide = shape_grid({"superspike": 0.95, "sigmoid": 0.95, "esser": 0.95})
    assert verdict(rules.slope_claim, shape_slope=wide) == "holds"  # 1..100: ×100
    narrow = shape_grid({"superspike": 0.95, "sigmoid": 0.95, "esser": 0.95}, slope_drop=0.2)
    assert verdict(rules.slope_claim, shape_slope=narrow) == "does not hold"  # 10 alone


def test_control_claims():
    grid = shape_grid({"superspike": 0.95, "sigmoid": 0.95, "esser": 0.95})
    assert verdict(rules.true_gradient_claim, shape_slope=grid,
                   controls=controls(true=0.1)) == "holds"
    assert verdict(rules.true_gradient_claim, shape_slope=grid,
                   controls=controls(true=0.6)) == "does not hold"
    assert verdict(rules.constant_claim, shape_slope=grid,
                   controls=controls(constant=0.7)) == "holds"
    assert verdict(rules.constant_claim, shape_slope=grid,
                   controls=controls(constant=0.12)) == "does not hold"  # does not learn
    assert verdict(rules.constant_claim, shape_slope=grid,
                   controls=controls(constant=0.96)) == "does not hold"  # not worse


def _scale_trials(drop_detached, drop_through, noise=0.0):
    out = []
    for detach, drop in ((True, drop_detached), (False, drop_through)):
        for name, acc in (("superspike", 0.9), ("superspike_asymptotic", 0.9 - drop)):
            out += seeded(acc, noise if name != "superspike" and not detach else 0.0,
                          surrogate__name=name, surrogate__slope=100.0,
                          model__hidden__0__detach_reset=detach)
    return out


def test_scale_claim():
    assert verdict(rules.scale_claim, scale=_scale_trials(0.0, 0.5)) == "holds"
    assert verdict(rules.scale_claim, scale=_scale_trials(0.3, 0.5)) == "does not hold"
    assert verdict(rules.scale_claim, scale=_scale_trials(0.0, 0.0)) == "does not hold"
    # a drop just beyond the margin that the seeds disagree on
    assert verdict(rules.scale_claim, scale=_scale_trials(0.0, 0.025, noise=0.03)) == \
        "inconclusive"


def test_readout_claim():
    alike = seeded(0.9) + seeded(0.895, model__readout__reduction="sum")
    assert verdict(rules.readout_claim, readout_randman=alike) == "holds"
    apart = seeded(0.9) + seeded(0.6, model__readout__reduction="sum")
    assert verdict(rules.readout_claim, readout_randman=apart) == "does not hold"


def _regularisation(levels):
    """levels: (strength, accuracy, spikes)."""
    key = "model__hidden__0__activity__upper_strength"
    return [t for strength, acc, spikes in levels
            for t in seeded(acc, spikes=spikes, **{key: strength})]


def test_regularisation_claims():
    curve = _regularisation([(0.0, 0.95, 4.0), (1.0, 0.945, 0.2), (10.0, 0.94, 0.1),
                             (100.0, 0.5, 0.01)])
    assert verdict(rules.sparsity_claim, regularisation=curve) == "holds"
    assert verdict(rules.critical_count_claim, regularisation=curve) == "holds"
    costly = _regularisation([(0.0, 0.95, 4.0), (1.0, 0.8, 0.2), (100.0, 0.5, 0.01)])
    assert verdict(rules.sparsity_claim, regularisation=costly) == "does not hold"
    flat = _regularisation([(0.0, 0.95, 4.0), (1.0, 0.95, 3.0)])
    assert verdict(rules.critical_count_claim, regularisation=flat) == "inconclusive"
    assert verdict(rules.sparsity_claim, regularisation=flat) == "inconclusive"
    jumbled = _regularisation([(0.0, 0.95, 4.0), (1.0, 0.5, 2.0), (10.0, 0.95, 0.1)])
    assert verdict(rules.critical_count_claim, regularisation=jumbled) == "does not hold"


def test_gradient_claim():
    explode = {"FF, detached reset": {1.0: [1.0] * 5, 100.0: [100.0] * 5},
               "FF, reset in BPTT": {1.0: [1.0] * 5, 100.0: [1e6] * 5}}
    assert rules.gradient_claim(explode).verdict == "holds"
    tame = {"FF, detached reset": {1.0: [1.0] * 5, 100.0: [100.0] * 5},
            "FF, reset in BPTT": {1.0: [1.0] * 5, 100.0: [120.0] * 5}}
    assert rules.gradient_claim(tame).verdict == "does not hold"


def test_diverged_trials_count_at_chance():
    assert rules.accuracy(trial(None, status="diverged")) == pytest.approx(0.1)
    assert rules.accuracy(trial(None, status="failed")) is None


def test_undertrained_trials_make_a_claim_inconclusive():
    alike = seeded(0.9) + seeded(0.895, model__readout__reduction="sum")
    late = [t | {"stop_reason": "epochs", "best_epoch": 97} if i < 2 else t
            for i, t in enumerate(alike)]  # 2 of 12 trials: above 10 %
    claim = next(c for c in rules.evaluate({"readout/randman": late}) if c.study == "readout")
    assert claim.verdict == "inconclusive (undertrained)" and claim.undertrained == "2 of 12 trials"
    claim = next(c for c in rules.evaluate({"readout/randman": alike}) if c.study == "readout")
    assert claim.verdict == "holds" and claim.undertrained == "0 of 12 trials"


def test_stability_over_halves_of_the_seeds():
    alike = seeded(0.9) + seeded(0.895, model__readout__reduction="sum")
    claim = next(c for c in rules.evaluate({"readout/randman": alike}) if c.study == "readout")
    assert claim.stability.startswith("stable")
    # the first half of the seeds sees a large difference, the second none
    split = [t | {"test_accuracy": t["test_accuracy"] - 0.3}
             if t["config"]["model"]["readout"]["reduction"] == "sum" and t["config"]["seed"] < 3
             else t
             for t in alike]
    claim = next(c for c in rules.evaluate({"readout/randman": split}) if c.study == "readout")
    assert claim.stability.startswith("unstable")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_spec_is_a_valid_study(profile):
    specs = study_specs(profile, readout_data_sets=["randman", "digits"])
    assert list(specs) == list(STUDY_NAMES)
    for group in specs.values():
        for spec in group.values():
            assert load_study_spec(spec).trials()


def test_unknown_profile_and_study():
    with pytest.raises(ValueError, match="unknown profile"):
        study_specs("huge")
    with pytest.raises(ValueError, match="unknown study 'colour'"):
        study_specs("default", ["colour"])


@pytest.fixture(scope="module")
def smoke_report():
    folder = Path(tempfile.mkdtemp(prefix="spikegrad-reproduce-"))
    summary = reproduce(profile="smoke", db_path=folder / "results.sqlite",
                        out_dir=folder / "report", workers=2, progress=False)
    yield folder, summary
    shutil.rmtree(folder, ignore_errors=True)


def test_smoke_run_writes_report_with_claims_and_figures(smoke_report):
    folder, summary = smoke_report
    page = (folder / "report" / "report.html").read_text()
    markdown = (folder / "report" / "report.md").read_text()
    assert len(summary["claims"]) >= 8
    for claim in summary["claims"]:
        assert claim["verdict"] in rules.VERDICTS
        assert claim["evidence"] and html.escape(claim["statement"]) in page
        assert claim["statement"] in markdown
    for png in summary["figures"]:
        assert (folder / "report" / png).stat().st_size > 1000
        assert (folder / "report" / png.replace(".png", ".svg")).exists()
        assert f"]({png})" in markdown
    assert page.count("data:image/png;base64,") == len(summary["figures"])


def test_rerun_trains_nothing_again(smoke_report):
    folder, first = smoke_report
    again = reproduce(["shape-slope"], profile="smoke", db_path=folder / "results.sqlite",
                      out_dir=folder / "again", progress=False)
    assert first["trials_trained"] > 0 and again["trials_trained"] == 0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(smoke_report, tmp_path):
    folder, summary = smoke_report
    page = (folder / "report" / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,3000",
                    page], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", page], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    n = len(summary["figures"])
    assert f'data-images="{n} 0"' in dom  # every image loaded, none broken
    assert dom.count('data-loaded="yes"') == n and 'data-loaded="no"' not in dom


def test_other_seeds_make_their_own_studies():
    specs = study_specs("default", ["shape-slope"], seeds=[5, 6, 7, 8, 9])
    for spec in specs["shape-slope"].values():
        assert spec["name"].startswith("default-seeds-5-6-7-8-9-")
        assert spec["seeds"] == [5, 6, 7, 8, 9]
    assert study_specs("default", ["scale"], seeds=PROFILES["default"].seeds)["scale"][
        "scale"]["name"] == "default-scale"
    with pytest.raises(ValueError, match="different seeds"):
        study_specs("default", seeds=[3, 3])
