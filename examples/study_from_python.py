"""A study from Python: a grid of runs into a results database, then a table of it.

    python examples/study_from_python.py [EPOCHS]

The study's workers are new processes that import this file again, so the work sits under
``if __name__ == "__main__":`` (as with any use of ``multiprocessing``'s spawn).
"""

import sys
import tempfile
from pathlib import Path

from spikegrad.studies import ResultsDB, load_study_spec, run_study


def main(epochs: int) -> None:
    spec = load_study_spec({
        "name": "slopes",
        "base": "randman",
        "set": {"training.epochs": epochs, "data.samples_per_class": 300},
        "axes": {"surrogate.slope": [1.0, 10.0, 100.0]},
        "seeds": [0, 1],
    })
    with tempfile.TemporaryDirectory() as folder:
        db_path = Path(folder) / "slopes.sqlite"
        run_study(spec, db_path, progress=False)  # one worker per core; again: nothing retrained
        with ResultsDB(db_path) as db:
            table = db.to_dataframe(study="slopes")
    print(table.groupby("surrogate.slope")["test_accuracy"].agg(["mean", "std", "count"]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
