"""``spikegrad bench`` runs end to end on a tiny case (speed itself is never a unit test)."""

from __future__ import annotations

import json

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
