"""The AVX-512 kernels where the CPU has no AVX-512 (as on most laptops, and on this
project's CI machine): the engine's tests again (test_engine.py, test_engine_inputs.py,
test_sparse_batches.py) on the kernels' AVX-512 branch with SIMDe's portable intrinsics
(tests/avx512_emulation.py), and the same bits from both vector widths.
Skipped without SIMDe's headers, and on CPUs with AVX-512 (test_engine.py runs that branch
natively there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avx512_emulation import simde_include
from spikegrad.engine import cpp
from test_engine import _network_gradients

TESTS = Path(__file__).parent


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                 if line.startswith("flags")), set())


pytestmark = [
    pytest.mark.skipif(simde_include() is None, reason="SIMDe headers not found"),
    pytest.mark.skipif("avx512f" in cpu_flags(), reason="AVX-512 runs natively here"),
]


def _emulated(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, *args], cwd=TESTS.parent, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_engine_tests_pass_on_the_avx512_kernels():
    done = _emulated("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "avx512_emulation",
                     "tests/test_engine.py", "tests/test_engine_inputs.py",
                     "tests/test_sparse_batches.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def network_results() -> list[torch.Tensor]:
    """test_engine's network results on widths that fill whole vectors of 8 and 16 and ones
    that do not, feed-forward and recurrent, each readout reduction, with and without learned
    per-neuron time constants."""
    results = []
    for seed, (hidden, recurrent, reduction, taus) in enumerate([
            ((37, 19), False, "max", False), ((100,), False, "sum", True),
            ((256,), True, "max", False), ((130, 64), True, "mean", True),
            ((24,), True, "last", False), ((16, 48), False, "max", True)]):
        results += _network_gradients("auto", recurrent, seed % 2 == 1, taus, 5 + seed,
                                      40 + 3 * seed, seed, hidden, reduction, 10 + seed)
    return results


@pytest.mark.skipif(not {"avx2", "fma"} <= cpu_flags(), reason="no AVX2 kernels here")
def test_avx2_and_avx512_kernels_give_the_same_bits(tmp_path):
    """Each element sees the same operations in the same order with vectors of 8 (AVX2) and
    of 16 (AVX-512)."""
    if not cpp.available():
        pytest.skip("compiled kernels unavailable")
    native = network_results()
    saved = tmp_path / "emulated.pt"
    done = _emulated("-c", "import sys, torch, avx512_emulation, test_engine_avx512 as t; "
                     "avx512_emulation.use_emulated_kernels(); "
                     "torch.save(t.network_results(), sys.argv[1])", str(saved))
    assert done.returncode == 0, done.stderr[-3000:]
    emulated = torch.load(saved)
    assert len(emulated) == len(native)
    for a, b in zip(native, emulated, strict=True):
        assert torch.equal(a, b)
