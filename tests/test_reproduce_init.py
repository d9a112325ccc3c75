"""The init study beyond the paper: its specs, its claims on hand-made trial tables, and
`spikegrad reproduce init` end to end on the smoke profile."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from spikegrad.cli import main
from spikegrad.reproduce import claims as rules
from spikegrad.reproduce import init_claims
from spikegrad.reproduce.studies import INIT_SCHEMES, PROFILES, study_specs
from spikegrad.studies import load_study_spec

SEEDS = range(6)
NOISE = [0.0, 0.004, -0.003, 0.002, -0.001, 0.003]  # per seed, shared by every condition
SIGMAS = (0.25, 1.0, 4.0)
_count = itertools.count()


def trial(accuracy, seed, depth, scheme, sigma=1.0, data="randman", status="completed",
          error=None):
    """A finished trial of the init study as the database returns it."""
    config = {"seed": seed, "data": {"name": data, "n_classes": 10},
              "training": {"epochs": 100, "learning_rate": 0.01},
              "model": {"hidden": [{"size": 100}] * depth,
                        "init": {"feedforward": {"scheme": scheme},
                                 "fluctuation": {"sigma_u": sigma}}}}
    return {"status": status, "test_accuracy": accuracy, "valid_accuracy": accuracy,
            "config": config, "config_hash": f"i{next(_count)}", "error": error,
            "best_epoch": 20, "epoch_budget": 100, "stop_reason": "patience"}


def table(accuracy, data="randman", depths=(1, 3, 5), noisy=()):
    """Trials of every condition on every seed: ``accuracy(depth, scheme, sigma)`` (None:
    left out); conditions in ``noisy`` get ±0.1 alternating from seed to seed."""
    roles: dict[str, list] = {}
    for depth in depths:
        trials = roles.setdefault(f"init/{data}/{depth}", [])
        for scheme, sigma in [("uniform", 1.0), ("gaussian", 1.0)] + [("fluctuation", s)
                                                                     for s in SIGMAS]:
            mean = accuracy(depth, scheme, sigma)
            if mean is None:
                continue
            jitter = 0.1 if (depth, scheme, sigma) in noisy else 0.0
            trials += [trial(mean + NOISE[s] + jitter * (-1) ** s, s, depth, scheme, sigma,
                             data) for s in SEEDS]
    return roles


def paper_like(depth, scheme, sigma):
    """Fluctuation init robust over σ_U 1..4 and depth; uniform and Gaussian fail when deep."""
    if scheme == "fluctuation":
        return 0.9 if sigma >= 1.0 else 0.5
    return 0.9 if depth == 1 else 0.1


def verdicts(data):
    return {rule.__name__: rule(data).verdict for rule in init_claims.CLAIMS}


def test_claims_hold_on_a_paper_like_table():
    assert set(verdicts(table(paper_like)).values()) == {"holds"}


def test_claims_do_not_hold_where_the_table_says_otherwise():
    def deep_fluctuation_fails(depth, scheme, sigma):
        if scheme == "fluctuation":
            return 0.9 if depth == 1 and sigma == 1.0 else 0.6 if depth == 1 else 0.4
        return 0.9 if depth == 1 else 0.7  # standard inits learn when deep

    found = verdicts(table(deep_fluctuation_fails))
    assert found == dict.fromkeys(found, "does not hold")


def test_claims_are_inconclusive_when_the_seeds_disagree():
    noisy = {(5, "fluctuation", s) for s in SIGMAS} | {(5, "uniform", 1.0)}
    data = table(lambda d, scheme, s: 0.88 if scheme == "fluctuation" and d == 5
                 else 0.15 if d == 5 else 0.9, noisy=noisy)
    found = verdicts(data)
    for name in ("depth_claim", "deep_randman_claim", "uniform_fails_claim"):
        assert found[name] == "inconclusive", name


def test_sigma_claim_needs_a_range_of_four():
    narrow = table(lambda d, scheme, s: 0.9 if s == 1.0 or scheme != "fluctuation" else 0.6)
    assert init_claims.sigma_claim(narrow).verdict == "does not hold"
    one_sigma = {role: [t for t in trials
                        if t["config"]["model"]["init"]["fluctuation"]["sigma_u"] == 1.0]
                 for role, trials in table(paper_like).items()}
    assert init_claims.sigma_claim(one_sigma).verdict == "inconclusive"  # not judged


def test_deep_randman_claim_compares_with_the_papers_network():
    # the 1-layer uniform network is 0.05 better than the 5-layer fluctuation one
    data = table(lambda d, scheme, s: 0.95 if (d, scheme) == (1, "uniform") else 0.9)
    claim = init_claims.deep_randman_claim(data)
    assert claim.verdict == "does not hold" and "1 layer uniform" in claim.evidence
    other = table(paper_like, data="spoken-digits-current")
    assert init_claims.deep_randman_claim(other).verdict == "inconclusive"  # no Randman


def test_a_failed_fluctuation_init_counts_at_chance():
    failed = trial(None, 0, 5, "fluctuation", status="failed",
                   error="FluctuationInitError: hidden layer 3: the layer's inputs are silent")
    crashed = trial(None, 0, 5, "fluctuation", status="failed", error="RuntimeError: boom")
    assert init_claims.accuracy(failed) == pytest.approx(0.1)
    assert init_claims.accuracy(crashed) is None
    assert init_claims.InitCondition((5, "fluctuation", 1.0), [failed]).by_seed() == {0: 0.1}


def test_judge_adds_undertrained_counts_and_stability():
    claims = rules.judge(init_claims.CLAIMS, table(paper_like))
    assert [c.verdict for c in claims] == ["holds"] * 5
    assert all(c.undertrained.startswith("0 of") and c.stability.startswith("stable")
               for c in claims)


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_init_spec_is_a_valid_study(profile):
    grid = PROFILES[profile].init
    specs = study_specs(profile, ["init"])["init"]
    assert sorted(specs) == sorted(f"init/{name}/{depth}" for name, plan in grid.data.items()
                                   for depth in plan.depths)
    for role, spec in specs.items():
        _, name, depth = role.split("/")
        study = load_study_spec(spec)
        conditions = study.conditions()
        assert len(conditions) == 2 + len(grid.data[name].sigma_u)
        assert {c["model.init.feedforward.scheme"] for c in conditions} == set(INIT_SCHEMES)
        for t in study.trials():
            assert len(t.model.hidden) == int(depth)
            if t.model.hidden[0].recurrent:  # V is initialised like W
                assert t.model.init.recurrent.scheme == t.model.init.feedforward.scheme
        assert sorted({t.seed for t in study.trials()}) == grid.seeds


def test_the_paper_studies_stay_the_default_and_init_takes_its_own_seeds():
    assert "init" not in study_specs("default")
    specs = study_specs("default", ["init"], seeds=[7, 8, 9])["init"]
    assert all(s["seeds"] == [7, 8, 9] and "seeds-7-8-9" in s["name"] for s in specs.values())
    own = study_specs("default", ["init"], seeds=PROFILES["default"].init.seeds)["init"]
    assert own["init/randman/1"]["name"] == "default-init-randman-1-layers"


def test_data_sets_that_cannot_be_built_are_skipped_with_the_reason(monkeypatch):
    import spikegrad.reproduce as reproduce

    monkeypatch.setattr(reproduce.shutil, "which", lambda name: None)
    found, skipped = reproduce.available_data_sets(["randman", "spoken-digits-current"])
    assert found == ["randman"] and "espeak-ng" in skipped["spoken-digits-current"]


def test_reproduce_init_end_to_end(tmp_path):
    result = CliRunner().invoke(main, [
        "reproduce", "init", "--profile", "smoke", "--db", str(tmp_path / "r.sqlite"),
        "--out", str(tmp_path / "report"), "--workers", "2", "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    statements = [c["statement"] for c in summary["claims"]]
    assert [c["study"] for c in summary["claims"]] == ["init"] * len(init_claims.CLAIMS)
    assert all(c["verdict"] in rules.VERDICTS and c["evidence"] for c in summary["claims"])
    assert "init.png" in summary["figures"]
    assert (tmp_path / "report" / "init.png").stat().st_size > 1000
    markdown = (tmp_path / "report" / "report.md").read_text()
    extension = markdown[markdown.index("## Beyond the paper"):]
    assert "](init.png)" in extension and all(s in extension for s in statements)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Beyond the paper" in page and 'id="init"' in page
