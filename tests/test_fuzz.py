"""200 random mutations of valid YAML configs and study specs, SHD files and MNIST IDX files
(truncations, bit flips, values and datasets of other types): the library answers each with
a result or one of its own one-line errors; never another exception, a crash or a hang.

The cases run in a process of their own (``fuzz_inputs.py``), so that a crash or a hang
fails this test; ``SPIKEGRAD_FUZZ_SEED`` picks other mutations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

CASES = 200
SEED = int(os.environ.get("SPIKEGRAD_FUZZ_SEED", "20240611"))


def test_mutated_inputs_give_results_or_one_line_errors(tmp_path):
    driver = Path(__file__).with_name("fuzz_inputs.py")
    done = subprocess.run([sys.executable, str(driver), str(tmp_path), str(SEED), str(CASES)],
                          capture_output=True, text=True, timeout=600)
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    last = reports[-1]["case"] if reports else "none"
    assert done.returncode == 0, (f"the process ended with {done.returncode} after case "
                                  f"{len(reports)} (the one after: {last}): {done.stderr[-2000:]}")
    assert len(reports) == CASES
    failures = [f"{r['case']}: {r['traceback']}" for r in reports if "traceback" in r]
    assert not failures, "\n".join(failures[:5])
    for report in reports:
        if report["outcome"] == "error":
            message = report["message"]
            assert message and "\n" not in message, report
            if report["kind"] in ("shd", "idx") and report["type"] != "ConfigError":
                assert message.startswith(report["path"]) or \
                    message.startswith(str(tmp_path)), report
    outcomes = Counter((r["kind"], r["outcome"]) for r in reports)
    for kind in ("config", "spec", "shd", "idx"):  # the mutations do break files
        assert outcomes[kind, "error"] >= 10, outcomes
