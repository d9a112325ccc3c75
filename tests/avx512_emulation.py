"""A pytest plugin (``-p avx512_emulation``, with ``tests/`` on ``PYTHONPATH``) that runs the
fast engine's AVX-512 kernels on a CPU without AVX-512: the kernels are built from a copy of
``kernels.cpp`` whose AVX-512 branch is taken and whose ``_mm512`` intrinsics are SIMDe's
portable versions (https://github.com/simd-everywhere/simde; Debian: ``libsimde-dev``). The
portable fused multiply-add is the CPU's own where it has FMA, so the results are those of
real AVX-512 kernels. ``SIMDE_INCLUDE`` names the folder that holds ``simde/``."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from spikegrad.engine import cpp

# what SIMDe 0.7.4 lacks, lane by lane (masked-off lanes of memory are never touched)
SHIMS = """
static inline simde__m512 simde_mm512_maskz_loadu_ps(simde__mmask16 k, const void* p) {
  float v[16]; const float* f = static_cast<const float*>(p);
  for (int j = 0; j < 16; ++j) v[j] = ((k >> j) & 1) ? f[j] : 0.0f;
  return simde_mm512_loadu_ps(v);
}
static inline simde__m512i simde_mm512_maskz_loadu_epi32(simde__mmask16 k, const void* p) {
  int32_t v[16]; const int32_t* f = static_cast<const int32_t*>(p);
  for (int j = 0; j < 16; ++j) v[j] = ((k >> j) & 1) ? f[j] : 0;
  return simde_mm512_loadu_si512(v);
}
static inline void simde_mm512_mask_storeu_ps(void* p, simde__mmask16 k, simde__m512 a) {
  float v[16]; simde_mm512_storeu_ps(v, a); float* f = static_cast<float*>(p);
  for (int j = 0; j < 16; ++j) if ((k >> j) & 1) f[j] = v[j];
}
static inline void simde_mm512_mask_storeu_epi32(void* p, simde__mmask16 k, simde__m512i a) {
  int32_t v[16]; simde_mm512_storeu_si512(v, a); int32_t* f = static_cast<int32_t*>(p);
  for (int j = 0; j < 16; ++j) if ((k >> j) & 1) f[j] = v[j];
}
#define simde_mm512_mask_cmp_ps_mask(k, a, b, pred) \\
  static_cast<simde__mmask16>((k) & simde_mm512_cmp_ps_mask((a), (b), (pred)))
"""


def simde_include() -> Path | None:
    """The folder holding SIMDe's ``simde/x86/avx512.h``, or None."""
    for folder in (os.environ.get("SIMDE_INCLUDE"), "/usr/include", "/usr/local/include"):
        if folder and (Path(folder) / "simde" / "x86" / "avx512.h").is_file():
            return Path(folder)
    return None


def emulated_source(source: str) -> str:
    """kernels.cpp with its AVX-512 branch taken and every intrinsic of it SIMDe's."""
    source = source.replace("defined(__AVX512F__)", "1")
    source = source.replace("#include <vector>\n",
                            "#include <vector>\n#include <simde/x86/avx512.h>\n" + SHIMS, 1)
    for pattern, name in ((r"\b_mm512_", "simde_mm512_"), (r"\b__m512i\b", "simde__m512i"),
                          (r"\b__m512\b", "simde__m512"), (r"\b__mmask16\b", "simde__mmask16"),
                          (r"\b_CMP_(\w+)\b", r"SIMDE_CMP_\1")):
        source = re.sub(pattern, name, source)
    return source


def use_emulated_kernels() -> str:
    """Build (or load) the emulated kernels and make the engine use them; their build name."""
    include = simde_include()
    if include is None:
        raise RuntimeError("SIMDe headers not found (apt install libsimde-dev, or SIMDE_INCLUDE)")
    folder = Path(tempfile.gettempdir()) / "spikegrad_avx512_emulation"
    folder.mkdir(exist_ok=True)
    text = emulated_source(cpp.SOURCE.read_text())
    source, partial = folder / "kernels.cpp", folder / f"kernels.cpp.{os.getpid()}"
    partial.write_text(text)
    partial.replace(source)
    cpp.SOURCE = source
    cpp.COMPILE_FLAGS = [*cpp.COMPILE_FLAGS, f"-I{include}"]
    cpp.available.cache_clear()
    if not cpp.available():
        raise RuntimeError("the emulated AVX-512 kernels did not build")
    return cpp._ops.name


def pytest_configure(config):
    use_emulated_kernels()
