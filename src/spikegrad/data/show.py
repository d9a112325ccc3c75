"""Pictures of data samples: the input spike raster, or the Mel spectrogram (current)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from spikegrad.data.base import DataSplits
from spikegrad.errors import ArgumentError
from spikegrad.io import atomic_write_bytes


def save_sample_picture(data: DataSplits, path: str | Path, index: int = 0,
                        split: str = "train", dt_ms: float = 1.0) -> Path:
    """Save a picture of sample ``index`` of ``split`` to ``path`` (png, pdf, svg...; written
    to a temporary file, then renamed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    fmt = path.suffix.removeprefix(".").lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()  # no figure made (or closed) to ask
    if fmt not in formats:
        raise ArgumentError(f"{path}: matplotlib cannot save a picture as '.{fmt}' (formats: "
                            f"{', '.join(sorted(formats))})")
    dataset = getattr(data, split)
    if not 0 <= index < len(dataset):
        raise ArgumentError(f"index: {split} split has {len(dataset)} samples, got {index}")
    inputs, label = dataset[index]
    x = inputs.numpy()  # [T, C]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    extent_t = data.n_steps * dt_ms
    if data.input_kind == "current":
        image = ax.imshow(x.T, origin="lower", aspect="auto", cmap="magma",
                          extent=(0, extent_t, -0.5, x.shape[1] - 0.5), interpolation="nearest")
        fig.colorbar(image, ax=ax, label="input current")
        ax.set_ylabel("Mel band")
        kind = "Mel spectrogram (input current)"
    else:
        steps, units = np.nonzero(x)
        size = 12 if len(steps) < 2000 else 1.5  # sparse rasters need visible dots
        ax.scatter(steps * dt_ms, units, s=size, c="k", marker="." if size > 2 else "|",
                   linewidths=0.5)
        ax.set_xlim(0, extent_t)
        ax.set_ylim(-0.5, x.shape[1] - 0.5)
        ax.set_ylabel("input unit")
        kind = f"input spikes ({int(x.sum())} in {len(steps)} (step, unit) bins)"
    ax.set_xlabel("time (ms)")
    ax.set_title(f"{data.name}: {split} sample {index}, label {int(label)}: {kind}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
