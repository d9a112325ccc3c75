"""The report's figures (matplotlib, PNG and SVG), each drawn from measured results."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spikegrad.io import atomic_write_bytes  # noqa: E402
from spikegrad.reproduce.claims import (  # noqa: E402
    accuracy,
    chance,
    condition_name,
    conditions,
    hidden_spikes,
)
from spikegrad.reproduce.stats import Summary  # noqa: E402


def group(trials, keys: list[str], value=accuracy) -> dict[tuple, Summary]:
    """Mean, sd and interval over seeds of ``value(trial)`` per condition (config ``keys``)."""
    return {k: c.summary(value) for k, c in conditions(trials, keys).items()}

SCHEME_ORDER = {"uniform": 0, "gaussian": 1, "fluctuation": 2}
COLOURS = {"superspike": "C0", "sigmoid": "C1", "esser": "C2",
           "superspike_asymptotic": "C3", "max": "C0", "sum": "C1"}


def save_figure(figure, out_dir: Path, name: str) -> dict[str, str]:
    """Write ``name``.png and ``name``.svg atomically; returns their file names."""
    files = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=fmt, dpi=110, bbox_inches="tight")
        atomic_write_bytes(out_dir / f"{name}.{fmt}", buffer.getvalue())
        files[fmt] = f"{name}.{fmt}"
    plt.close(figure)
    return files


def _errorbar(ax, xs, stats, **style):
    means = np.array([s.mean for s in stats])
    sds = np.nan_to_num(np.array([s.sd for s in stats]))
    ax.plot(xs, means, marker="o", **style)
    ax.fill_between(xs, means - sds, means + sds, alpha=0.2, color=style.get("color"))


def shape_slope_figure(trials, controls, out_dir: Path) -> dict[str, str]:
    stats = group(trials, ["surrogate.name", "surrogate.slope"])
    figure, ax = plt.subplots(figsize=(6, 4))
    for shape in sorted({k[0] for k in stats}):
        slopes = sorted(k[1] for k in stats if k[0] == shape)
        _errorbar(ax, slopes, [stats[(shape, s)] for s in slopes], label=shape,
                  color=COLOURS.get(shape))
    for (name,), stat in sorted(group(controls, ["surrogate.name"]).items()):
        ax.axhline(stat.mean, linestyle="--", color="grey" if name == "true" else "k",
                   label=f"{name} ({stat.mean:.2f})")
    if trials:
        ax.axhline(chance(trials[0]), linestyle=":", color="r", label="chance")
    ax.set_xscale("log")
    ax.set(xlabel="surrogate slope β", ylabel="test accuracy", ylim=(0, 1),
           title="Surrogate shape × slope (Randman)")
    ax.legend(fontsize=8)
    return save_figure(figure, out_dir, "shape_slope")


def scale_figure(trials, out_dir: Path) -> dict[str, str]:
    """Per slope, grouped bars: normalised vs asymptotic SuperSpike for each architecture."""
    slopes = sorted({t["config"]["surrogate"]["slope"] for t in trials})
    archs = sorted({condition_name(t) for t in trials})
    figure, axes = plt.subplots(1, max(len(slopes), 1), figsize=(1.6 * len(archs) + 2, 3.8),
                                sharey=True, squeeze=False)
    x = np.arange(len(archs))
    for ax, slope in zip(axes[0], slopes, strict=False):
        at_slope = [t for t in trials if t["config"]["surrogate"]["slope"] == slope]
        for offset, shape, label in ((-0.2, "superspike", "normalised (peak 1)"),
                                     (0.2, "superspike_asymptotic", "asymptotic (peak β)")):
            stats = [Summary.of([a for t in at_slope if condition_name(t) == arch
                                 and t["config"]["surrogate"]["name"] == shape
                                 and (a := accuracy(t)) is not None]) for arch in archs]
            ax.bar(x + offset, [s.mean for s in stats], 0.4, label=label, color=COLOURS[shape],
                   yerr=np.nan_to_num([s.sd for s in stats]), capsize=3)
        ax.set_xticks(x, [a.replace(", ", "\n") for a in archs], fontsize=7)
        ax.set(ylim=(0, 1), title=f"slope β = {slope:g}")
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("Surrogate scale")
    return save_figure(figure, out_dir, "scale")


def readout_figure(trials_by_data: dict[str, list[dict[str, Any]]], out_dir: Path):
    labels, max_stats, sum_stats = [], [], []
    for data_set, trials in sorted(trials_by_data.items()):
        stats = group(trials, ["model.readout.reduction", "model.hidden.0.recurrent"])
        for recurrent in (False, True):
            if ("max", recurrent) in stats and ("sum", recurrent) in stats:
                labels.append(f"{data_set}\n{'RC' if recurrent else 'FF'}")
                max_stats.append(stats[("max", recurrent)])
                sum_stats.append(stats[("sum", recurrent)])
    figure, ax = plt.subplots(figsize=(max(4, 1.3 * len(labels)), 3.6))
    x = np.arange(len(labels))
    for offset, name, stats in ((-0.2, "max", max_stats), (0.2, "sum", sum_stats)):
        ax.bar(x + offset, [s.mean for s in stats], 0.4,
               yerr=np.nan_to_num([s.sd for s in stats]),
               label=f"{name} over time", color=COLOURS[name], capsize=3)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="test accuracy", ylim=(0, 1), title="Readout: max vs sum over time")
    ax.legend(fontsize=8)
    return save_figure(figure, out_dir, "readout")


def regularisation_figure(trials, out_dir: Path) -> dict[str, str]:
    key = "model.hidden.0.activity.upper_strength"
    accuracy_by = group(trials, [key])
    spikes_by = group(trials, [key], value=hidden_spikes)
    figure, ax = plt.subplots(figsize=(5.5, 4))
    points = [t for t in trials if accuracy(t) is not None and hidden_spikes(t) is not None]
    ax.scatter([hidden_spikes(t) for t in points], [accuracy(t) for t in points], s=12,
               color="grey", alpha=0.6, label="single runs")
    strengths = sorted(k for k in accuracy_by if k in spikes_by)
    ax.errorbar([spikes_by[k].mean for k in strengths], [accuracy_by[k].mean for k in strengths],
                xerr=np.nan_to_num([spikes_by[k].sd for k in strengths]),
                yerr=np.nan_to_num([accuracy_by[k].sd for k in strengths]), marker="o", color="C0",
                label="mean ± sd over seeds")
    for k in strengths:
        ax.annotate(f"λ={k[0]:g}", (spikes_by[k].mean, accuracy_by[k].mean), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="hidden spikes per neuron per sample", ylabel="test accuracy", ylim=(0, 1),
           title="Activity regularisation")
    ax.legend(fontsize=8)
    return save_figure(figure, out_dir, "regularisation")


def init_figure(grids: dict[str, dict[tuple, Any]], out_dir: Path) -> dict[str, str]:
    """Per data set, a heat map of mean test accuracy: depth (rows) × initialisation
    (columns: uniform, Gaussian, then fluctuation-driven at each σ_U). ``grids`` maps a data
    set to its conditions keyed (depth, scheme, σ_U or None)."""
    figure, axes = plt.subplots(1, max(len(grids), 1), figsize=(5.2 * max(len(grids), 1), 3.6),
                                squeeze=False)
    image = None
    for ax, (name, grid) in zip(axes[0], sorted(grids.items()), strict=False):
        depths = sorted({depth for depth, _, _ in grid})
        columns = sorted({(scheme, sigma) for _, scheme, sigma in grid},
                         key=lambda c: (SCHEME_ORDER.get(c[0], len(SCHEME_ORDER)), c[1] or 0.0))
        means = np.full((len(depths), len(columns)), np.nan)
        for i, depth in enumerate(depths):
            for j, (scheme, sigma) in enumerate(columns):
                condition = grid.get((depth, scheme, sigma))
                if condition is None:
                    continue
                stat = condition.summary()
                means[i, j] = stat.mean
                sd = f"\n±{stat.sd:.2f}" if np.isfinite(stat.sd) else ""
                ax.text(j, i, f"{stat.mean:.2f}{sd}", ha="center", va="center", fontsize=7,
                        color="white" if stat.mean < 0.6 else "black")
        image = ax.imshow(means, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(columns)),
                      [f"fluct.\nσ_U {sigma:g}" if scheme == "fluctuation" else scheme
                       for scheme, sigma in columns], fontsize=7)
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set(ylabel="hidden layers", title=name)
    if image is not None:
        figure.colorbar(image, ax=axes[0].tolist(), label="test accuracy", shrink=0.9)
    figure.suptitle("Initialisation: accuracy over σ_U and depth", y=1.03)
    return save_figure(figure, out_dir, "init")


def gradient_figure(norms: dict[str, dict[float, list[float]]], out_dir: Path):
    figure, axes = plt.subplots(1, len(norms), figsize=(3.6 * len(norms), 3.4), squeeze=False)
    for ax, (condition, by_scale) in zip(axes[0], norms.items(), strict=True):
        for scale, values in sorted(by_scale.items()):
            ax.plot(np.arange(len(values)), np.maximum(values, 1e-30), label=f"scale {scale:g}")
        ax.set_yscale("log")
        ax.set_title(condition, fontsize=8)
        ax.set_xlabel("time step n")
    axes[0][0].set_ylabel("‖dL/dU[n]‖, hidden layer")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("Gradient norm through time")
    return save_figure(figure, out_dir, "gradients")


def raster_figure(inputs, hidden, readout, label: int, out_dir: Path) -> dict[str, str]:
    """One sample of a trained network: input spikes, hidden spikes, readout membranes."""
    figure, axes = plt.subplots(3, 1, figsize=(6, 6.5), sharex=True)
    t, unit = np.nonzero(inputs)
    axes[0].scatter(t, unit, s=4, color="k")
    axes[0].set(ylabel="input unit", title=f"A trained network on one sample (class {label})")
    t, unit = np.nonzero(hidden)
    axes[1].scatter(t, unit, s=2, color="C0")
    axes[1].set(ylabel="hidden neuron")
    for k in range(readout.shape[1]):
        axes[2].plot(readout[:, k], lw=2.0 if k == label else 0.8,
                     color="C3" if k == label else "grey")
    axes[2].set(ylabel="readout U_out", xlabel="time step")
    return save_figure(figure, out_dir, "rasters")


def manifold_figure(curves: list[np.ndarray], out_dir: Path) -> dict[str, str]:
    """Randman classes: the first two embedding coordinates of each 1-D manifold."""
    figure, ax = plt.subplots(figsize=(4.5, 4))
    for k, points in enumerate(curves):
        ax.plot(points[:, 0], points[:, 1], lw=1, label=f"class {k}")
    ax.set(xlabel="coordinate 1 (spike time)", ylabel="coordinate 2 (spike time)",
           title="Random manifolds (D = 1), first two of M units")
    ax.legend(fontsize=7)
    return save_figure(figure, out_dir, "randman_manifolds")


def learning_curve_figure(curves: dict[str, list[dict[str, Any]]], out_dir: Path):
    figure, ax = plt.subplots(figsize=(6, 4))
    for i, (label, epochs) in enumerate(sorted(curves.items())):
        if not epochs:
            continue
        x = [e["epoch"] for e in epochs]
        ax.plot(x, [e["train_accuracy"] for e in epochs], color=f"C{i}", lw=1, ls="--")
        ax.plot(x, [e["valid_accuracy"] for e in epochs], color=f"C{i}", lw=1.5, label=label)
    ax.set(xlabel="epoch", ylabel="accuracy (solid: valid, dashed: train)", ylim=(0, 1),
           title="Learning curves of the best trial of each study")
    ax.legend(fontsize=7)
    return save_figure(figure, out_dir, "learning_curves")


def best_trials_by_study(trials_by_study: dict[str, list[dict[str, Any]]]):
    best = {}
    for study, trials in trials_by_study.items():
        scored = [t for t in trials if t["status"] == "completed" and t.get("valid_accuracy")]
        if scored:
            best[study] = max(scored, key=lambda t: t["valid_accuracy"])
    return best
