"""The results database: one SQLite file (WAL mode) that only the study driver writes.

Tables:

- ``trials``: one row per config hash: the full config (JSON), status, final metrics
  (JSON), error, attempts, timings, host and package versions.
- ``study_trials``: which trials belong to which study, with their axis values and
  grid position (a config shared by two studies is trained once).
- ``epochs``: per-epoch metrics of every finished trial.
- ``studies``: the spec of every study run into the file.
- ``selections``: for studies with a ``select`` section, the value chosen for each
  condition and the validation scores it was chosen by.

A trial's result and its epochs are written in one transaction, so a driver killed at
any moment leaves either all of a trial or none of it.

    db = ResultsDB("study.sqlite")
    for trial in db.trials(study="randman-smoke", status="completed"):
        print(trial["axes"], trial["test_accuracy"])
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spikegrad.errors import SpikegradError
from spikegrad.io import (
    atomic_write_bytes,
    atomic_write_text,
    finite_values,
    make_folder,
    strict_json,
)

SCHEMA_VERSION = 1

# statuses a trial ends with; any other (pending, running, paused) means "run it (again)"
FINISHED = ("completed", "diverged", "stopped", "failed", "crashed")
# statuses that come with metrics of a trained network (a paused trial: of its rung)
WITH_METRICS = ("completed", "stopped", "diverged", "paused")
METRIC_KEYS = (
    "train_accuracy", "valid_accuracy", "test_accuracy", "train_loss", "valid_loss", "test_loss",
    "hidden_spikes_per_neuron", "epochs_completed", "epoch_budget", "best_epoch", "stop_reason",
    "diverged_epoch", "divergence_reason",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY, spec_json TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    config_hash TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    metrics_json TEXT,
    test_accuracy REAL, valid_accuracy REAL, train_accuracy REAL,
    started_at REAL, finished_at REAL, wall_time_s REAL, trial_time_s REAL,
    host TEXT, versions_json TEXT
);
CREATE TABLE IF NOT EXISTS study_trials (
    study TEXT NOT NULL, config_hash TEXT NOT NULL, position INTEGER NOT NULL,
    axes_json TEXT NOT NULL,
    PRIMARY KEY (study, config_hash)
);
CREATE TABLE IF NOT EXISTS epochs (
    config_hash TEXT NOT NULL, epoch INTEGER NOT NULL, metrics_json TEXT NOT NULL,
    valid_accuracy REAL,
    PRIMARY KEY (config_hash, epoch)
);
CREATE TABLE IF NOT EXISTS selections (
    study TEXT NOT NULL, condition_json TEXT NOT NULL, axis TEXT NOT NULL,
    value_json TEXT NOT NULL, scores_json TEXT NOT NULL,
    PRIMARY KEY (study, condition_json)
);
CREATE INDEX IF NOT EXISTS trials_status ON trials (status);
"""


def _json(value: Any) -> str:
    """JSON with NaN/inf as null (SQLite and other readers need strict JSON)."""
    return strict_json(value, sort_keys=False)


class ResultsDBError(SpikegradError, ValueError):
    """A file that is not a results database this version can use; one line naming it."""


class MissingResultsDBError(ResultsDBError, FileNotFoundError):
    """A results database that does not exist (and is not to be created)."""


class ResultsDB:
    """A study results file. Reading is safe while a driver writes (WAL).

    ``create``: make the file and its tables if missing (else the file must exist).
    ``read_only``: open without writing anything (also on a read-only disk). A SQLite file
    that another program made (tables, but not ours) is refused before anything is written
    to it, and so is a results database of another schema version.
    """

    def __init__(self, path: str | Path, create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ResultsDBError(f"{self.path}: is a folder, not a results database")
        if not create and not self.path.is_file():
            raise MissingResultsDBError(f"{self.path}: no such results database")
        if create and not read_only:
            make_folder(self.path.parent)
        self.conn = self._connect(read_only)
        try:
            empty = self._check_ours()
            if not read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            if create and not read_only:  # tables a file of this version may lack
                self.conn.executescript(_SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (str(SCHEMA_VERSION),))
            elif empty:
                raise ResultsDBError(f"{self.path}: an empty database, no results yet")
        except sqlite3.OperationalError as error:  # a read-only file, a locked one ...
            self.conn.close()
            raise ResultsDBError(f"{self.path}: cannot use this database ({error})") from None
        except sqlite3.DatabaseError as error:
            self.conn.close()
            raise ResultsDBError(f"{self.path}: not a results database ({error})") from None
        except ResultsDBError:
            self.conn.close()
            raise

    @classmethod
    def check(cls, path: str | Path) -> None:
        """Refuse (:class:`ResultsDBError`) a file at ``path`` that is not a results database
        of this version, without writing to it; a missing or empty file passes."""
        path = Path(path)
        if path.is_file() and path.stat().st_size > 0:
            try:
                cls(path, create=False, read_only=True).close()
            except ResultsDBError as error:
                if "an empty database" not in str(error):
                    raise

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        """A connection (read-only: by URI, and on a read-only disk without its shared-memory
        file, as an immutable file when no write-ahead log is waiting to be merged)."""
        try:
            if not read_only:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            else:
                uri = self.path.resolve().as_uri()
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0,
                                       isolation_level=None)
                try:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:
                    conn.close()
                    if Path(f"{self.path}-wal").exists():
                        raise
                    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True,
                                           isolation_level=None)
        except sqlite3.OperationalError as error:
            raise ResultsDBError(f"{self.path}: cannot open the database ({error})") from None
        except sqlite3.DatabaseError as error:
            raise ResultsDBError(f"{self.path}: not a results database ({error})") from None
        conn.row_factory = sqlite3.Row
        return conn

    def _check_ours(self) -> bool:
        """Whether the file holds no tables yet; a file with tables must hold ours, of this
        schema version."""
        tables = {row[0] for row in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        if not tables:
            return True
        version = None
        if "meta" in tables:
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row[0] if row is not None else None
        if version is None:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise ResultsDBError(f"{self.path}: not a spikegrad results database (it holds "
                                 f"other tables: {shown}); choose another file")
        if version != str(SCHEMA_VERSION):
            raise ResultsDBError(f"{self.path}: a results database of schema version "
                                 f"{version}; this spikegrad reads version {SCHEMA_VERSION}")
        return False

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self.conn)

    # -- writing (the driver only) -------------------------------------------------------

    def register_study(self, name: str, spec: dict[str, Any], trials: Iterable[Any]) -> None:
        """Record a study and its trials (pending unless already known), in one transaction.

        The study's membership becomes exactly ``trials``; results of trials that were in
        an earlier version of the study stay in the file.
        """
        now = time.time()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "spec_json = excluded.spec_json, updated_at = excluded.updated_at",
                (name, _json(spec), now, now),
            )
            cur.execute("DELETE FROM study_trials WHERE study = ?", (name,))
            for position, trial in enumerate(trials):
                digest = trial.config_hash()
                cur.execute(
                    "INSERT OR IGNORE INTO trials (config_hash, config_json) VALUES (?, ?)",
                    (digest, _json(trial.to_dict())),
                )
                cur.execute(
                    "INSERT INTO study_trials VALUES (?, ?, ?, ?)",
                    (name, digest, position, _json(trial.axes)),
                )

    def mark_running(self, config_hash: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE trials SET status = 'running', attempts = attempts + 1, error = NULL, "
                "started_at = ? WHERE config_hash = ?",
                (time.time(), config_hash),
            )

    def record_result(self, config_hash: str, outcome: dict[str, Any]) -> None:
        """Write a trial's end (status, metrics, epochs, timings) in one transaction."""
        metrics = outcome.get("result") or {}
        history = outcome.get("history") or []
        row = {
            "status": outcome["status"],
            "error": outcome.get("error"),
            "metrics_json": _json({k: metrics[k] for k in METRIC_KEYS if k in metrics}),
            "test_accuracy": finite_values(metrics.get("test_accuracy")),
            "valid_accuracy": finite_values(metrics.get("valid_accuracy")),
            "train_accuracy": finite_values(metrics.get("train_accuracy")),
            "started_at": outcome.get("started_at"),
            "finished_at": outcome.get("finished_at", time.time()),
            "wall_time_s": finite_values(metrics.get("wall_time_s")),
            "trial_time_s": outcome.get("trial_time_s"),
            "host": outcome.get("host"),
            "versions_json": _json(outcome.get("versions") or {}),
        }
        assignments = ", ".join(f"{k} = ?" for k in row)
        with self._transaction() as cur:
            cur.execute(f"UPDATE trials SET {assignments} WHERE config_hash = ?",
                        (*row.values(), config_hash))
            cur.execute("DELETE FROM epochs WHERE config_hash = ?", (config_hash,))
            cur.executemany(
                "INSERT INTO epochs VALUES (?, ?, ?, ?)",
                [(config_hash, int(r["epoch"]), _json(r), finite_values(r.get("valid_accuracy")))
                 for r in history],
            )

    def record_selection(self, study: str, condition_key: str, axis: str, value: Any,
                         scores: dict[str, float | None]) -> None:
        """Store the value chosen for one condition of a study, with the scores per value."""
        with self._transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO selections VALUES (?, ?, ?, ?, ?)",
                        (study, condition_key, axis, _json(value), _json(scores)))

    def selections(self, study: str) -> dict[str, dict[str, Any]]:
        """{condition key: {"axis", "value", "scores"}} of a study's selections."""
        rows = self.conn.execute(
            "SELECT condition_json, axis, value_json, scores_json FROM selections "
            "WHERE study = ?", (study,)).fetchall()
        return {r[0]: {"axis": r[1], "value": json.loads(r[2]), "scores": json.loads(r[3])}
                for r in rows}

    def reset_trials(self, config_hashes: Iterable[str]) -> None:
        with self._transaction() as cur:
            cur.executemany("UPDATE trials SET status = 'pending' WHERE config_hash = ?",
                            [(h,) for h in config_hashes])

    # -- reading -------------------------------------------------------------------------

    def studies(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM studies ORDER BY created_at").fetchall()
        return [{"name": r["name"], "spec": json.loads(r["spec_json"]),
                 "created_at": r["created_at"], "updated_at": r["updated_at"]} for r in rows]

    def statuses(self, config_hashes: Iterable[str]) -> dict[str, str]:
        wanted = set(config_hashes)
        rows = self.conn.execute("SELECT config_hash, status FROM trials").fetchall()
        return {r[0]: r[1] for r in rows if r[0] in wanted}

    def trials(self, study: str | None = None, status: str | Iterable[str] | None = None
               ) -> list[dict[str, Any]]:
        """Trials (of one study, or of all), in grid order, each a flat dict.

        Keys: ``config_hash``, ``study``, ``position``, ``axes`` (dict), ``config``
        (the full config dict), ``status``, ``error``, ``attempts``, the final metrics
        (``test_accuracy``, ``valid_accuracy``, ``train_accuracy``, the losses,
        ``hidden_spikes_per_neuron``, ``epochs_completed``, ``best_epoch``, ...;
        None where a trial has none), ``wall_time_s`` (training), ``trial_time_s``
        (including data), ``started_at``, ``finished_at``, ``host``, ``versions``.
        """
        query = ("SELECT s.study, s.position, s.axes_json, t.* FROM study_trials s "
                 "JOIN trials t ON t.config_hash = s.config_hash")
        clauses, params = [], []
        if study is not None:
            clauses.append("s.study = ?")
            params.append(study)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            clauses.append(f"t.status IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY s.study, s.position"
        return [self._trial_dict(r) for r in self.conn.execute(query, params).fetchall()]

    @staticmethod
    def _trial_dict(row: sqlite3.Row) -> dict[str, Any]:
        metrics = json.loads(row["metrics_json"]) if row["metrics_json"] else {}
        trial = {
            "config_hash": row["config_hash"],
            "study": row["study"],
            "position": row["position"],
            "axes": json.loads(row["axes_json"]),
            "status": row["status"],
            "error": row["error"],
            "attempts": row["attempts"],
        }
        for key in METRIC_KEYS:
            trial[key] = metrics.get(key)
        trial.update({
            "wall_time_s": row["wall_time_s"], "trial_time_s": row["trial_time_s"],
            "started_at": row["started_at"], "finished_at": row["finished_at"],
            "host": row["host"],
            "versions": json.loads(row["versions_json"]) if row["versions_json"] else {},
            "config": json.loads(row["config_json"]),
        })
        return trial

    def epochs(self, config_hash: str) -> list[dict[str, Any]]:
        """Per-epoch metrics of one trial (epoch, losses, accuracies, spikes, epoch_time_s)."""
        rows = self.conn.execute(
            "SELECT metrics_json FROM epochs WHERE config_hash = ? ORDER BY epoch", (config_hash,)
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def all_epochs(self, study: str | None = None) -> list[dict[str, Any]]:
        """Per-epoch metrics of every trial of a study, each with its ``config_hash``."""
        query = ("SELECT DISTINCT e.config_hash, e.metrics_json FROM epochs e "
                 "JOIN study_trials s ON s.config_hash = e.config_hash")
        params: list[Any] = []
        if study is not None:
            query += " WHERE s.study = ?"
            params.append(study)
        query += " ORDER BY e.config_hash, e.epoch"
        return [{"config_hash": r[0], **json.loads(r[1])}
                for r in self.conn.execute(query, params).fetchall()]

    def status(self, study: str | None = None) -> dict[str, Any]:
        """Counts per status, progress and the failed trials of a study (or all)."""
        trials = self.trials(study=study)
        counts = Counter(t["status"] for t in trials)
        # a paused trial is a finished rung of a selection (its value was not chosen, or it
        # runs again in full)
        finished = sum(counts[s] for s in (*FINISHED, "paused"))
        problems = [
            {"config_hash": t["config_hash"], "study": t["study"], "axes": t["axes"],
             "status": t["status"],
             "error": t["error"] or t.get("divergence_reason")}
            for t in trials if t["status"] in ("failed", "crashed", "diverged")
        ]
        return {
            "studies": sorted({t["study"] for t in trials}),
            "total": len(trials),
            "finished": finished,
            "progress": finished / len(trials) if trials else 1.0,
            "counts": {s: counts[s] for s in ("pending", "running", "paused", *FINISHED)
                       if counts[s]},
            "failures": problems,
        }

    def to_dataframe(self, study: str | None = None, epochs: bool = False):
        """A pandas DataFrame: one row per trial (axes and metrics as columns), or per epoch."""
        import pandas as pd

        if epochs:
            rows = self.all_epochs(study)
            for row in rows:
                _split_layers(row)
            return pd.DataFrame(rows)
        rows = []
        for trial in self.trials(study=study):
            row = {"study": trial["study"], "config_hash": trial["config_hash"],
                   "position": trial["position"]}
            row.update(trial["axes"])
            for key, value in trial.items():
                if key in ("study", "config_hash", "position", "axes", "config", "versions"):
                    continue
                row[key] = value
            _split_layers(row)
            row["versions"] = json.dumps(trial["versions"], sort_keys=True)
            row["config"] = json.dumps(trial["config"], sort_keys=True)
            rows.append(row)
        return pd.DataFrame(rows)

    def write_table(self, path: str | Path, fmt: str = "csv", study: str | None = None,
                    epochs: bool = False) -> tuple[int, int]:
        """Write :meth:`to_dataframe` to ``path`` as ``csv`` or ``parquet`` (to a temporary
        file, then renamed); its numbers of rows and columns."""
        import io

        frame = self.to_dataframe(study=study, epochs=epochs)
        if fmt == "csv":
            atomic_write_text(path, frame.to_csv(index=False))
        elif fmt == "parquet":
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            atomic_write_bytes(path, buffer.getvalue())
        else:
            raise ValueError(f"unknown table format {fmt!r} (csv, parquet)")
        return frame.shape

    def ranking_metric(self, study: str | None = None) -> str:
        """The metric ``study`` ranks its trials by (its spec's ``metric``); without a study,
        the first study's; ``test_accuracy`` when the database holds no study."""
        specs = {s["name"]: s["spec"] for s in self.studies()}
        chosen = specs.get(study) if study else next(iter(specs.values()), None)
        return (chosen or {}).get("metric", "test_accuracy")


def _split_layers(row: dict[str, Any]) -> None:
    """hidden_spikes_per_neuron [a, b] -> columns hidden_spikes_per_neuron.0, .1 (flat tables)."""
    spikes = row.pop("hidden_spikes_per_neuron", None)
    for i, value in enumerate(spikes or []):
        row[f"hidden_spikes_per_neuron.{i}"] = value


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Cursor:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn.cursor()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
