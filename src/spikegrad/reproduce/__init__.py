"""Reproduce Zenke & Vogels (2021): run the built-in studies, then write figures and a report.

    from spikegrad.reproduce import reproduce
    summary = reproduce(profile="default", db_path="results.sqlite", out_dir="report")

Trials live in the results database, so running again trains nothing twice; the
report is rebuilt from the database every time.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from spikegrad.config import builtin_config_names, load_config
from spikegrad.errors import ArgumentError, first_line
from spikegrad.reproduce import claims as rules
from spikegrad.reproduce import init_claims
from spikegrad.reproduce.report import write_report
from spikegrad.reproduce.studies import (
    EXTENSION_NAMES,
    FF_DETACHED,
    FF_RESET,
    PROFILES,
    RC_RESET,
    RC_THROUGH,
    STUDY_NAMES,
    Profile,
    study_specs,
)
from spikegrad.studies.runner import available_cores

ALWAYS_READOUT_DATA = ["randman", "digits"]
SYNTHESISED_READOUT_DATA = ["spoken-digits", "spoken-digits-current"]
FILE_READOUT_DATA = ["mnist", "fashion-mnist", "shd"]


def _plots():
    """The figures module (imported when a figure is drawn: matplotlib takes a while to
    load, and the command line imports this package for its choices)."""
    from spikegrad.reproduce import figures

    return figures


def readout_data_sets() -> tuple[list[str], dict[str, str]]:
    """Data sets for the readout study, and those skipped with the reason: offline ones
    always, spoken digits where espeak-ng can synthesise them, MNIST, Fashion-MNIST and SHD
    where their files are present."""
    names = [n for n in ALWAYS_READOUT_DATA if n in builtin_config_names()]
    return available_data_sets(names + SYNTHESISED_READOUT_DATA + FILE_READOUT_DATA)


def available_data_sets(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Those of ``names`` that can be built here, and the others with the reason."""
    found: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        problem = _unavailable(name)
        if problem is None:
            found.append(name)
        else:
            skipped[name] = problem
    return found, skipped


def _unavailable(name: str) -> str | None:
    """None when the data set can be built here, else why not."""
    if name in SYNTHESISED_READOUT_DATA:
        return (None if shutil.which("espeak-ng") else
                "espeak-ng is not installed (apt-get install espeak-ng)")
    if name in FILE_READOUT_DATA:
        return _files_missing(name)
    return None


def _files_missing(name: str) -> str | None:
    """None when the data set's files are present and readable, else why not."""
    from spikegrad.data import build_data

    config = load_config(name)
    try:
        build_data(config.data, config.time.n_steps, config.time.dt_ms)
    except Exception as error:  # noqa: BLE001 - any missing or unreadable file means "absent"
        return (f"files not found or unreadable ({first_line(error)}); "
                f"spikegrad data download {name}")
    return None


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
    import torch

    from spikegrad.data import build_data
    from spikegrad.diagnostics import membrane_gradient_norms
    from spikegrad.model import SNN

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
            model = SNN.from_config(config, data.n_inputs, data.n_classes,
                                    generator=torch.Generator().manual_seed(seed)).double()
            per_layer = membrane_gradient_norms(model, inputs, labels,
                                                config.model.readout.reduction)
            norms[name][scale] = per_layer[0].tolist()
    return norms


def example_network(config: dict[str, Any], out_dir: Path) -> tuple[Any, ...]:
    """The network of ``config`` trained (cached in ``out_dir`` by config hash) and one test
    sample through it: inputs, hidden spikes, readout trace and label."""
    import torch

    from spikegrad.io import atomic_torch_save
    from spikegrad.training import Trainer

    trainer = Trainer(load_config(config), progress=False)
    cache = out_dir / f"example-network-{trainer.config.config_hash()}.pt"
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


def selected_trials(db, spec) -> list[dict[str, Any]]:
    """The finished trials of a study at the values its selection chose (all, without one)."""
    from spikegrad.studies import FINISHED
    from spikegrad.studies.spec import condition_key

    trials = db.trials(study=spec.name, status=FINISHED)
    if spec.select is None:
        return trials
    chosen = {key: v["value"] for key, v in db.selections(spec.name).items()}
    excluded = {"seed", spec.select.axis}
    return [t for t in trials
            if chosen.get(condition_key({k: v for k, v in t["axes"].items()
                                         if k not in excluded})) == t["axes"][spec.select.axis]]


@dataclass(frozen=True)
class Figure:
    """A figure of the report: drawn from the selected trials of its study's roles."""

    study: str
    name: str
    title: str
    caption: str
    draw: Callable[..., dict[str, str]]

    @property
    def part(self) -> str:
        """``paper`` or ``extension`` (a study beyond the paper)."""
        return "extension" if self.study in EXTENSION_NAMES else "paper"


FIGURES = [
    Figure("shape-slope", "shape_slope", "Accuracy vs surrogate slope per shape",
           "Test accuracy (mean ± sd over seeds, each condition at its chosen learning rate) on "
           "Randman against the slope β (log axis) for SuperSpike, sigmoid' and Esser; dashed: "
           "the true-gradient and constant-surrogate controls; dotted: chance.",
           lambda data, out: _plots().shape_slope_figure(data["shape-slope"], data["controls"],
                                                      out)),
    Figure("scale", "scale", "Accuracy with a large surrogate scale per condition",
           "Normalised SuperSpike (peak 1) vs asymptotic SuperSpike (peak β), for feed-forward "
           "(FF) and recurrent (RC) networks, with the reset detached or in BPTT, and gradients "
           "through the recurrent weights V or not (mean ± sd over seeds).",
           lambda data, out: _plots().scale_figure(data["scale"], out)),
    Figure("readout", "readout", "Max vs sum readout per data set",
           "Test accuracy (mean ± sd over seeds) with the readout reduced by max or by sum over "
           "time, each at its own chosen learning rate, feed-forward (FF) and recurrent (RC), "
           "per data set.",
           lambda data, out: _plots().readout_figure(
               {role.removeprefix("readout/"): trials for role, trials in data.items()
                if role.startswith("readout/")}, out)),
    Figure("regularisation", "regularisation", "Accuracy vs hidden spikes",
           "Each point a strength λ_upper of the upper-bound regulariser (ν_upper = 0, L = 2; "
           "the lower bound λ = 100, ν = 1e-3 on everywhere); spikes per hidden neuron per test "
           "sample (log axis).",
           lambda data, out: _plots().regularisation_figure(data["regularisation"], out)),
    Figure("init", "init", "Accuracy over σ_U and depth per initialisation",
           "Mean test accuracy over seeds (sd below it) of networks with 1, 3 and 5 hidden "
           "layers (rows) under the uniform (the paper's), Gaussian N(0, 1/fan_in) and "
           "fluctuation-driven initialisation at each target σ_U (columns, μ_U = 0), each "
           "condition at its chosen learning rate; one panel per data set.",
           lambda data, out: _plots().init_figure(init_claims.by_data_set(data), out)),
]


def reproduce(
    studies: list[str] | None = None,
    profile: str = "default",
    db_path: str | Path = "spikegrad-results.sqlite",
    out_dir: str | Path = "spikegrad-report",
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Run the chosen studies (the paper's by default; ``init``, beyond the paper, when
    named) and write the report; returns a summary. ``seeds`` replace the profile's (a
    second run on other seeds).

    The steps: choose the data sets, train every study (one pool of workers for all), read
    back the trials each claim and figure needs, judge the claims, draw the figures, write
    the report."""
    from spikegrad.studies import load_study_spec
    from spikegrad.studies.runner import run_studies

    started = time.perf_counter()
    if profile not in PROFILES:
        raise ArgumentError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    chosen = studies or list(STUDY_NAMES)
    data_sets, skipped = (_readout_data_sets(PROFILES[profile]) if "readout" in chosen
                          else ([], {}))
    init_grid = PROFILES[profile].init
    init_data, init_skipped = available_data_sets(
        list(init_grid.data) if init_grid and "init" in chosen else [])
    specs = study_specs(profile, studies, data_sets, seeds, init_data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for spec in [*specs.get("readout", {}).values(), *specs.get("init", {}).values()]:
        prepare_data(spec["base"])
    loaded = {role: load_study_spec(spec) for group in specs.values()
              for role, spec in group.items()}
    summaries = run_studies(list(loaded.values()), db_path, workers=workers, address=address,
                            progress=progress)
    trained = sum(s["ran"] for s in summaries)
    data, table, curves = _read_back(db_path, loaded)

    seed = (seeds or PROFILES[profile].seeds)[0]
    norms = gradient_norms(profile, seed) if "scale" in specs else None
    extension = {role: trials for role, trials in data.items()
                 if role.split("/")[0] in EXTENSION_NAMES}
    claims = rules.evaluate({r: t for r, t in data.items() if r not in extension}, norms)
    extension_claims = rules.judge(init_claims.CLAIMS, extension)
    figures = _draw_figures(specs, data, norms, curves, out_dir)
    paper_run = any(name in specs for name in STUDY_NAMES)
    descriptions = [PROFILES[profile].description] if paper_run else []
    if "init" in specs and init_grid is not None:
        descriptions.append(f"Init study: {init_grid.description}")
    meta: dict[str, Any] = {"profile": profile, "profile description": " ".join(descriptions),
                            "studies": ", ".join(specs)}
    if paper_run:
        meta["seeds"] = ", ".join(str(s) for s in (seeds or PROFILES[profile].seeds))
    if "readout" in specs:
        meta |= {
            "data sets (readout study)": ", ".join(data_sets),
            "data sets skipped": "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none",
        }
    if "init" in specs and init_grid is not None:
        meta |= {
            "seeds (init study)": ", ".join(str(s) for s in (seeds or init_grid.seeds)),
            "data sets (init study)": ", ".join(init_data),
            "data sets skipped (init study)": "; ".join(f"{k}: {v}" for k, v in
                                                        init_skipped.items()) or "none",
        }
    meta |= {
        "results database": str(db_path),
        "trials trained by this command": trained,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "run time of this command (s)": f"{time.perf_counter() - started:.0f}",
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                   f"{available_cores()} cores",
        "python": platform.python_version(),
        "packages": _versions(),
    }
    paths = write_report(out_dir, claims, figures, meta, specs, table, extension_claims)
    return {
        "report": paths,
        "claims": [c.__dict__ for c in claims + extension_claims],
        "figures": [f["png"] for f in figures],
        "trials_trained": trained,
        "data_sets": data_sets,
        "skipped_data_sets": skipped,
        "wall_time_s": time.perf_counter() - started,
    }


def _readout_data_sets(profile: Profile) -> tuple[list[str], dict[str, str]]:
    """The readout study's data sets under ``profile`` and the skipped ones with the reason."""
    if profile.readout_data is not None:
        return list(profile.readout_data), {}
    data_sets, skipped = readout_data_sets()
    for name, reason in profile.readout_skip.items():
        if name in data_sets:
            data_sets.remove(name)
            skipped[name] = reason
    return data_sets, skipped


def _read_back(db_path: str | Path, loaded: dict[str, Any]):
    """From the database: each study's selected trials (by role), the table of studies for
    the report, and the learning curves of each study's best trial."""
    from spikegrad.studies import ResultsDB

    with ResultsDB(db_path) as db:
        data = {role: selected_trials(db, spec) for role, spec in loaded.items()}
        table = [{"study": spec.name, "trials": len(db.trials(study=spec.name)),
                  "counts": db.status(spec.name)["counts"],
                  "selections": len(db.selections(spec.name)),
                  "wall_time_s": sum(t["trial_time_s"] or 0.0
                                     for t in db.trials(study=spec.name))}
                 for spec in loaded.values()]
        best = _plots().best_trials_by_study(data)
        curves = {name: db.epochs(t["config_hash"]) for name, t in best.items()}
    return data, table, curves


def _draw_figures(specs: dict[str, Any], data: dict[str, Any], norms, curves,
                  out_dir: Path) -> list[dict[str, str]]:
    """Every figure of the report: the studies' (:data:`FIGURES`), then the gradient norms,
    a trained network's activity, Randman's manifolds and the learning curves."""
    figures: list[dict[str, str]] = []

    def add_figure(name: str, files: dict[str, str], title: str, caption: str,
                   part: str = "paper") -> None:
        figures.append({"name": name, "title": title, "caption": caption, "part": part,
                        **files})

    for figure in FIGURES:
        if figure.study in specs:
            add_figure(figure.name, figure.draw(data, out_dir), figure.title, figure.caption,
                       figure.part)
    if norms is not None:
        add_figure("gradients", _plots().gradient_figure(norms, out_dir),
                   "Gradient norm through time",
                   "‖dL/dU[n]‖ of the hidden layer at surrogate scale 1 and 100 (SuperSpike, "
                   "β = 10), freshly initialised network, one Randman batch (log axis).")
    if data.get("shape-slope"):
        example = max(data["shape-slope"], key=lambda t: t["valid_accuracy"] or 0.0)
        inputs, hidden, readout, label = example_network(example["config"], out_dir)
        add_figure("rasters", _plots().raster_figure(inputs, hidden, readout, label, out_dir),
                   "Activity of a trained network",
                   "Input spikes, hidden spikes and readout membrane potentials (the true class "
                   "in red) on a test sample, of the Randman network with the best validation "
                   f"accuracy ({example['config']['surrogate']['name']}, slope "
                   f"{example['config']['surrogate']['slope']:g}).")
    add_figure("randman_manifolds", _plots().manifold_figure(manifold_curves(), out_dir),
               "Randman manifold examples",
               "Four random 1-D manifolds with the built-in Randman parameters (α = 1, the lab's "
               "spectrum), the first two of their 20 embedding coordinates.")
    add_figure("learning_curves", _plots().learning_curve_figure(curves, out_dir),
               "Learning curves", "Train (dashed) and validation (solid) accuracy per epoch of "
               "the best trial of each study.")
    return figures
