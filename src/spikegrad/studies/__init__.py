"""Studies: grids of training runs declared once, run locally or on Ray, resumable, queried.

    from spikegrad.studies import ResultsDB, load_study_spec, run_study

    spec = load_study_spec("surrogates.yaml", ["training.epochs=5"])  # or a built-in name
    len(spec.trials())                       # 3 shapes x 8 slopes x 2 seeds = 48
    summary = run_study(spec, "surrogates.sqlite")             # one trial per core
    summary = run_study(spec, "surrogates.sqlite", address="head:6379")   # on Ray
    db = ResultsDB("surrogates.sqlite")
    db.trials(study=spec.name, status="completed")             # list of dicts
    db.epochs(trial["config_hash"])                            # per-epoch metrics
    db.to_dataframe()                                          # pandas, one row per trial

See :mod:`spikegrad.studies.spec` for the spec format, :mod:`spikegrad.studies.runner`
for execution and fault tolerance, :mod:`spikegrad.studies.db` for the database.
"""

from spikegrad.studies.db import FINISHED, ResultsDB
from spikegrad.studies.runner import best_trial, run_study
from spikegrad.studies.spec import (
    AxisRange,
    EarlyStopping,
    StudySpec,
    TrialConfig,
    builtin_study_names,
    load_study_spec,
)

__all__ = [
    "FINISHED", "AxisRange", "EarlyStopping", "ResultsDB", "StudySpec", "TrialConfig",
    "best_trial", "builtin_study_names", "load_study_spec", "run_study",
]
