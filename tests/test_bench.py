"""``spikegrad bench`` runs end to end on a tiny case (speed itself is never a unit test)."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from spikegrad import bench
from spikegrad.cli import main


def test_bench_json_keyed_by_case_and_library(monkeypatch):
    tiny = bench.Case(12, 8, 3, 15, 4, True, 0.2, 8.0)
    monkeypatch.setattr(bench, "CASES", {"shd": tiny, "randman": tiny, "long": tiny})
    result = CliRunner().invoke(main, ["bench", "--json", "--case", "shd", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["shd"]) == set(bench.LIBRARIES)
    for library, entry in report["shd"].items():
        assert entry["status"] in ("ok", "missing"), library
        if entry["status"] == "ok":
            assert entry["ms_per_step"] > 0 and len(entry["times_ms"]) == 2
    assert report["shd"]["fast"]["time_vs_fast"] == 1.0


def test_table_lists_every_library(monkeypatch):
    tiny = bench.Case(6, 5, 2, 10, 3, False, 0.3, 8.0)
    monkeypatch.setattr(bench, "CASES", {"randman": tiny})
    report = bench.run_bench(["randman"], ["fast", "reference"], repeats=1, warmup=1)
    table = bench.format_table(report)
    assert "fast" in table and "reference" in table and "ms/step" in table


def test_trial_profile_accounts_for_the_whole_trial():
    from spikegrad import trial_profile

    report = trial_profile.profile_trial(epochs=1, startup_repeats=0)
    parts = report["parts_s"]
    assert list(parts) == [*trial_profile.PARTS, "the rest"]
    assert report["steps"] == 32  # 8000 training samples in batches of 250, one epoch
    for name in ("batches", "forward kernels", "forward", "loss", "backward kernels",
                 "backward", "optimiser", "checks", "evaluation"):
        assert parts[name] > 0, name
    assert parts["the rest"] > -1e-3  # the clocks never count a second twice
    assert abs(sum(parts.values()) - report["trial_s"]) < 1e-6
    assert 0 <= report["test_accuracy"] <= 1 and report["startup_s"] == {}
    table = trial_profile.format_profile(report)
    assert "backward pass: the compiled kernels" in table and "the whole trial" in table


def test_trial_clocks_time_each_part_without_the_parts_it_calls():
    from spikegrad.trial_profile import Clocks

    clocks = Clocks()
    inner = clocks.wrap("forward kernels", lambda: time.sleep(0.05))
    outer = clocks.wrap("forward", lambda: (time.sleep(0.02), inner()))
    hidden = clocks.wrap("evaluation", lambda: (inner(), outer()))
    outer()
    hidden()
    assert 0.05 <= clocks.seconds["forward kernels"] < 0.09
    assert 0.02 <= clocks.seconds["forward"] < 0.05
    assert clocks.calls == {**dict.fromkeys(clocks.calls, 0), "forward kernels": 1,
                            "forward": 1, "evaluation": 1}
    assert clocks.seconds["evaluation"] >= 0.12  # everything it called, as one part


def test_bench_trial_case_runs_alone_and_prints_json(monkeypatch):
    from spikegrad import trial_profile

    monkeypatch.setattr(trial_profile, "STARTUP", {"nothing": ("", "pass")})
    result = CliRunner().invoke(main, ["bench", "--case", "trial", "--study-epochs", "1",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["steps"] == 32 and set(report["startup_s"]) == {"nothing"}
    result = CliRunner().invoke(main, ["bench", "--case", "trial", "--case", "shd"])
    assert result.exit_code == 2 and "--case trial runs alone" in result.output
