"""Every script in examples/ runs as it is (on few epochs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(script, tmp_path):
    arguments = ["2"] + ([str(tmp_path / "rasters.png")] if script == "spike_rasters.py" else [])
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *arguments], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]  # e.g. from a worker process
    assert done.stdout.strip()
