"""Reproduce Zenke & Vogels (2021): run the built-in studies, then write figures and a report.

    from spikegrad.reproduce import reproduce
    summary = reproduce(profile="quick", db_path="results.sqlite", out_dir="report")

Trials live in the results database, so running again trains nothing twice; the
report is rebuilt from the database every time.
"""

from __future__ import annotations

import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikegrad.config import builtin_config_names, load_config
from spikegrad.reproduce import claims as rules
from spikegrad.reproduce import figures as plots
from spikegrad.reproduce.report import write_report
from spikegrad.reproduce.studies import (
    FF_DETACHED,
    FF_RESET,
    PROFILES,
    RC_RESET,
    RC_THROUGH,
    study_specs,
)

ALWAYS_READOUT_DATA = ["randman", "digits"]
SYNTHESISED_READOUT_DATA = ["spoken-digits", "spoken-digits-current"]
FILE_READOUT_DATA = ["mnist", "fashion-mnist", "shd"]


def readout_data_sets() -> list[str]:
    """Data sets for the readout study: offline ones always, spoken digits where espeak-ng
    can synthesise them, MNIST, Fashion-MNIST and SHD where their files are present."""
    names = [n for n in ALWAYS_READOUT_DATA if n in builtin_config_names()]
    if shutil.which("espeak-ng"):
        names += [n for n in SYNTHESISED_READOUT_DATA if n in builtin_config_names()]
    for name in FILE_READOUT_DATA:
        if name in builtin_config_names() and _files_present(name):
            names.append(name)
    return names


def _files_present(name: str) -> bool:
    from spikegrad.data import get_builder

    config = load_config(name)
    try:
        get_builder(config.data.name)(config.data, config.time.n_steps, config.time.dt_ms)
    except Exception:  # noqa: BLE001 - any missing or unreadable file means "not present"
        return False
    return True


def prepare_data(base: dict[str, Any]) -> None:
    """Build (and so cache) a data set once in the driver, before workers need it: the
    spoken digits are synthesised here, not once per worker."""
    from spikegrad.data import build_data

    config = load_config(base)
    if config.data.name != "randman":
        build_data(config.data, config.time.n_steps, config.time.dt_ms)


def gradient_norms(profile: str, seed: int = 0) -> dict[str, dict[float, list[float]]]:
    """‖dL/dU[n]‖ of the hidden layer at surrogate scale 1 and 100, per condition, for a
    freshly initialised network on one Randman batch (the same weights for both scales)."""
    from spikegrad.data import build_data
    from spikegrad.diagnostics import membrane_gradient_norms
    from spikegrad.training import build_model

    base = load_config("randman", PROFILES[profile].randman)
    data = build_data(base.data, base.time.n_steps, base.time.dt_ms)
    inputs, labels = data.train.batch(np.arange(min(200, len(data.train))))
    inputs = inputs.double()  # float64: exploding gradients stay measurable longer
    norms: dict[str, dict[float, list[float]]] = {}
    for condition in (FF_DETACHED, FF_RESET, RC_THROUGH, RC_RESET):
        name = rules.condition_name(condition)
        norms[name] = {}
        for scale in (1.0, 100.0):
            layer = {**base.model.hidden[0].model_dump(), **condition}
            config = load_config(base, {"model.hidden": [layer], "surrogate.scale": scale,
                                        "model.engine": "reference"})
            model = build_model(config, data.n_inputs, data.n_classes,
                                torch.Generator().manual_seed(seed)).double()
            per_layer = membrane_gradient_norms(model, inputs, labels,
                                                config.model.readout.reduction)
            norms[name][scale] = per_layer[0].tolist()
    return norms


def example_network(profile: str, out_dir: Path) -> tuple[Any, ...]:
    """A trained Randman network (cached in ``out_dir``) and one test sample through it."""
    from spikegrad.io import atomic_torch_save
    from spikegrad.training import Trainer

    config = load_config("randman", PROFILES[profile].randman)
    trainer = Trainer(config, progress=False)
    cache = out_dir / f"example-network-{config.config_hash()}.pt"
    if cache.exists():
        trainer.model.load_state_dict(torch.load(cache))
    else:
        trainer.fit()
        trainer.model.load_state_dict(trainer.state.best_model_state)
        atomic_torch_save(trainer.model.state_dict(), cache)
    inputs, labels = trainer.data.test.batch([0])
    trainer.model.eval()
    with torch.no_grad():
        output = trainer.model(inputs)
    return (inputs[0].numpy(), output.hidden_spikes[0][0].numpy(), output.readout[0].numpy(),
            int(labels[0]))


def manifold_curves(n_classes: int = 4) -> list[np.ndarray]:
    from spikegrad.data.randman import RandomManifold, cutoff_frequency

    config = load_config("randman").data
    x = np.linspace(0, 1, 400)[:, None]
    curves = []
    for k in range(n_classes):
        manifold = RandomManifold(config.n_units, 1, config.alpha,
                                  config.n_cutoff or cutoff_frequency(config.alpha), seed=k)
        curves.append(manifold(x)[:, :2])
    return curves


def _versions() -> str:
    names = ("spikegrad", "torch", "numpy", "matplotlib")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def reproduce(
    studies: list[str] | None = None,
    profile: str = "quick",
    db_path: str | Path = "spikegrad-results.sqlite",
    out_dir: str | Path = "spikegrad-report",
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the chosen studies (all by default) and write the report; returns a summary."""
    from spikegrad.studies import ResultsDB, run_study

    started = time.perf_counter()
    chosen = PROFILES[profile].readout_data if profile in PROFILES else None
    specs = study_specs(profile, studies, chosen or readout_data_sets())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in specs.get("readout", []):
        prepare_data(spec["base"])
    trained = 0
    for group in specs.values():
        for spec in group:
            trained += run_study(spec, db_path, workers=workers, address=address,
                                 progress=progress)["ran"]
    with ResultsDB(db_path) as db:
        trials = {spec["name"]: db.trials(study=spec["name"]) for g in specs.values()
                  for spec in g}
        table = [{"study": name, "trials": len(ts),
                  "counts": db.status(name)["counts"],
                  "wall_time_s": sum(t["trial_time_s"] or 0.0 for t in ts)}
                 for name, ts in trials.items()]
        best = plots.best_trials_by_study(trials)
        curves = {name: db.epochs(t["config_hash"]) for name, t in best.items()}

    claims: list[rules.Claim] = []
    figures: list[dict[str, str]] = []

    def add_figure(name: str, files: dict[str, str], title: str, caption: str) -> None:
        figures.append({"name": name, "title": title, "caption": caption, **files})

    p = profile
    if "shape-slope" in specs:
        slope_trials, controls = trials[f"{p}-shape-slope"], trials[f"{p}-controls"]
        claims += rules.shape_slope_claims(slope_trials, controls)
        add_figure("shape_slope", plots.shape_slope_figure(slope_trials, controls, out_dir),
                   "Accuracy vs surrogate slope per shape",
                   "Test accuracy (mean ± sd over seeds) on Randman against the slope β (log "
                   "axis) for SuperSpike, sigmoid' and Esser; dashed: the true-gradient and "
                   "constant-surrogate controls; dotted: chance.")
    if "scale" in specs:
        scale_trials = trials[f"{p}-scale"]
        claims += rules.scale_claims(scale_trials)
        add_figure("scale", plots.scale_figure(scale_trials, out_dir),
                   "Accuracy vs surrogate scale per condition",
                   "Normalised SuperSpike (peak 1) vs asymptotic SuperSpike (peak β) against "
                   "β, for feed-forward (FF) and recurrent (RC) networks, with the reset "
                   "detached or in BPTT, and gradients through the recurrent weights V or not.")
        norms = gradient_norms(profile)
        claims += rules.gradient_claims(norms)
        add_figure("gradients", plots.gradient_figure(norms, out_dir),
                   "Gradient norm through time",
                   "‖dL/dU[n]‖ of the hidden layer at surrogate scale 1 and 100 (SuperSpike, "
                   "β = 10), freshly initialised network, one Randman batch (log axis).")
    if "readout" in specs:
        readout_trials = {spec["name"].removeprefix(f"{p}-readout-"): trials[spec["name"]]
                          for spec in specs["readout"]}
        claims += rules.readout_claims(readout_trials)
        add_figure("readout", plots.readout_figure(readout_trials, out_dir),
                   "Max vs sum readout per data set",
                   "Test accuracy (mean ± sd over seeds) with the readout reduced by max or by "
                   "sum over time, feed-forward (FF) and recurrent (RC), per data set.")
    if "regularisation" in specs:
        reg_trials = trials[f"{p}-regularisation"]
        claims += rules.regularisation_claims(reg_trials)
        add_figure("regularisation", plots.regularisation_figure(reg_trials, out_dir),
                   "Accuracy vs hidden spikes",
                   "Each point a strength λ_upper of the upper-bound regulariser (ν_upper = 0, "
                   "L = 2, lower bound λ = 100, ν = 1e-3); spikes per hidden neuron per test "
                   "sample (log axis).")
    inputs, hidden, readout, label = example_network(profile, out_dir)
    add_figure("rasters", plots.raster_figure(inputs, hidden, readout, label, out_dir),
               "Activity of a trained network",
               "Input spikes, hidden spikes and readout membrane potentials (the true class "
               "in red) of the profile's Randman network (SuperSpike, β = 10) on a test sample.")
    add_figure("randman_manifolds", plots.manifold_figure(manifold_curves(), out_dir),
               "Randman manifold examples",
               "Four random 1-D manifolds with the built-in Randman parameters (α = 1), "
               "the first two of their 20 embedding coordinates.")
    add_figure("learning_curves", plots.learning_curve_figure(curves, out_dir),
               "Learning curves", "Train (dashed) and validation (solid) accuracy per epoch of "
               "the best trial of each study.")

    meta = {
        "profile": profile,
        "profile description": PROFILES[profile].description,
        "studies": ", ".join(specs),
        "results database": str(db_path),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "run time of this command (s)": f"{time.perf_counter() - started:.0f}",
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                   f"{torch.get_num_threads()} torch threads",
        "python": platform.python_version(),
        "packages": _versions(),
    }
    paths = write_report(out_dir, claims, figures, meta, specs, table)
    return {
        "report": paths,
        "claims": [c.__dict__ for c in claims],
        "figures": [f["png"] for f in figures],
        "trials_trained": trained,
        "wall_time_s": time.perf_counter() - started,
    }
