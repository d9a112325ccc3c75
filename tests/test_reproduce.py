"""The reproduction pipeline: claim rules on hand-made trials, specs, and a smoke run
rendered in headless Chromium."""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from spikegrad.reproduce import claims as rules
from spikegrad.reproduce import reproduce
from spikegrad.reproduce.studies import PROFILES, STUDY_NAMES, study_specs
from spikegrad.studies import load_study_spec


def trial(accuracy, status="completed", spikes=1.0, **fields):
    config = {"data": {"name": "randman", "n_classes": 10},
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
    return {"status": status, "test_accuracy": accuracy, "config": config,
            "hidden_spikes_per_neuron": [spikes]}


def shape_trials(best_by_shape):
    out = []
    for shape, best in best_by_shape.items():
        for slope, acc in ((0.1, best - 0.2), (1.0, best), (10.0, best), (100.0, best - 0.01)):
            for seed_noise in (0.0, 0.004):
                out.append(trial(acc + seed_noise, surrogate__name=shape, surrogate__slope=slope))
    return out


def test_shape_claim_holds_fails_and_inconclusive():
    controls = [trial(0.1, surrogate__name="true"), trial(0.5, surrogate__name="constant")]
    holds = rules.shape_slope_claims(shape_trials({"superspike": 0.9, "sigmoid": 0.88,
                                                   "esser": 0.87}), controls)
    assert [c.verdict for c in holds] == ["holds", "holds", "holds", "holds"]
    fails = rules.shape_slope_claims(shape_trials({"superspike": 0.9, "sigmoid": 0.6,
                                                   "esser": 0.87}), controls)
    assert fails[0].verdict == "does not hold"
    unlearned = rules.shape_slope_claims(shape_trials({"superspike": 0.15, "sigmoid": 0.15,
                                                       "esser": 0.15}), controls)
    assert unlearned[0].verdict == "inconclusive"
    learned_true = rules.shape_slope_claims(
        shape_trials({"superspike": 0.9, "sigmoid": 0.9, "esser": 0.9}),
        [trial(0.87, surrogate__name="true")])
    assert learned_true[2].verdict == "does not hold"
    readout_only = rules.shape_slope_claims(
        shape_trials({"superspike": 0.9, "sigmoid": 0.9, "esser": 0.9}),
        [trial(0.55, surrogate__name="true")])
    assert readout_only[2].verdict == "holds"


def test_diverged_trials_count_at_chance():
    assert rules.accuracy(trial(None, status="diverged")) == pytest.approx(0.1)
    assert rules.accuracy(trial(None, status="failed")) is None


def _scale_trials(drop_detached, drop_through):
    out = []
    for detach, drop in ((True, drop_detached), (False, drop_through)):
        for name, acc in (("superspike", 0.9), ("superspike_asymptotic", 0.9 - drop)):
            out.append(trial(acc, surrogate__name=name, surrogate__slope=100.0,
                             model__hidden__0__detach_reset=detach))
    return out


def test_scale_claim():
    assert rules.scale_claims(_scale_trials(0.0, 0.5))[0].verdict == "holds"
    assert rules.scale_claims(_scale_trials(0.3, 0.5))[0].verdict == "does not hold"
    assert rules.scale_claims(_scale_trials(0.0, 0.0))[0].verdict == "does not hold"


def test_readout_claim():
    alike = {"randman": [trial(0.9), trial(0.89, model__readout__reduction="sum")]}
    assert rules.readout_claims(alike)[0].verdict == "holds"
    apart = {"randman": [trial(0.9), trial(0.5, model__readout__reduction="sum")]}
    assert rules.readout_claims(apart)[0].verdict == "does not hold"


def test_regularisation_claims():
    key = "model__hidden__0__activity__upper_strength"
    trials = [trial(0.9, spikes=2.0, **{key: 0.0}), trial(0.89, spikes=0.1, **{key: 1.0}),
              trial(0.4, spikes=0.01, **{key: 100.0})]
    reduction, critical = rules.regularisation_claims(trials)
    assert reduction.verdict == "holds" and "×20.0" in reduction.evidence
    assert critical.verdict == "holds"
    weak = [trial(0.9, spikes=2.0, **{key: 0.0}), trial(0.9, spikes=1.5, **{key: 1.0})]
    reduction, critical = rules.regularisation_claims(weak)
    assert reduction.verdict == "does not hold" and critical.verdict == "inconclusive"


def test_gradient_claim():
    explode = {"FF, detached reset": {1.0: [1.0] * 5, 100.0: [100.0] * 5},
               "FF, reset in BPTT": {1.0: [1.0] * 5, 100.0: [1e6] * 5}}
    assert rules.gradient_claims(explode)[0].verdict == "holds"
    tame = {"FF, detached reset": {1.0: [1.0] * 5, 100.0: [100.0] * 5},
            "FF, reset in BPTT": {1.0: [1.0] * 5, 100.0: [120.0] * 5}}
    assert rules.gradient_claims(tame)[0].verdict == "does not hold"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_spec_is_a_valid_study(profile):
    specs = study_specs(profile, readout_data_sets=["randman", "digits"])
    assert list(specs) == list(STUDY_NAMES)
    for group in specs.values():
        for spec in group:
            assert load_study_spec(spec).trials()


def test_unknown_profile_and_study():
    with pytest.raises(ValueError, match="unknown profile"):
        study_specs("huge")
    with pytest.raises(ValueError, match="unknown study 'colour'"):
        study_specs("quick", ["colour"])


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
        assert claim["verdict"] in ("holds", "does not hold", "inconclusive")
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
