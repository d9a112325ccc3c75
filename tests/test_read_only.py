"""Commands on read-only folders and files: one-line errors naming the path for what must be
written (--out, --db, the cache, an export), and reading a database in a read-only folder
works. The commands run in a process that the folder's permissions bind (as root: without
the capabilities that override them)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikegrad.studies import ResultsDB, load_study_spec
from test_data_shd import write_raw_shd

TINY = ["--set", "training.epochs=1", "--set", "time.n_steps=20", "--set", "data.n_classes=3",
        "--set", "data.samples_per_class=30", "--set", "model.hidden.0.size=8", "--quiet"]

DRIVER = """
import json, os, sys
from click.testing import CliRunner
from spikegrad.cli import main
for case in json.loads(sys.argv[1]):
    env = {k: v for k, v in case.get("env", {}).items()}
    result = CliRunner().invoke(main, case["args"], env=env)
    print(json.dumps({"exit_code": result.exit_code, "stderr": result.stderr,
                      "stdout": result.stdout, "exception": None if result.exception is None
                      or isinstance(result.exception, SystemExit) else repr(result.exception)}))
"""


def bound_by_permissions() -> list[str]:
    """A command prefix under which folder permissions apply (root overrides them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot bind")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def read_only(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(item.stat().st_mode)
        item.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def contents(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def folders(tmp_path):
    ro = tmp_path / "ro"
    (ro / "shd").mkdir(parents=True)
    times, units = [np.array([0.001, 0.002])] * 5, [np.array([1, 2])] * 5
    for split in ("train", "test"):
        write_raw_shd(ro / "shd" / f"shd_{split}.h5", times, units, np.zeros(5, int))
    spec = load_study_spec("randman-smoke")
    with ResultsDB(ro / "results.sqlite") as db:
        db.register_study(spec.name, spec.to_dict(), spec.trials())
        for i, trial in enumerate(spec.trials()):
            db.record_result(trial.config_hash(), {"status": "completed",
                                                   "result": {"test_accuracy": i / 10}})
    writable = tmp_path / "rw"
    writable.mkdir()
    shutil.copy(ro / "results.sqlite", writable / "locked.sqlite")
    read_only(writable / "locked.sqlite")
    read_only(ro)
    yield ro, writable
    for item in [ro, *ro.rglob("*"), writable, *writable.rglob("*")]:
        item.chmod(stat.S_IMODE(item.stat().st_mode) | stat.S_IWUSR)


def test_read_only_paths(folders):
    ro, rw = folders
    cases = [
        (["train", "randman", *TINY, "--out", f"{ro}/run"], {},
         f"{ro}/run: cannot create this folder (Permission denied)"),
        (["study", "run", "randman-smoke", "--quiet", "--db", f"{ro}/new.sqlite"], {},
         f"{ro}/new.sqlite.lock: cannot create the lock file (Permission denied)"),
        (["study", "run", "randman-smoke", "--quiet", "--db", f"{rw}/locked.sqlite"], {},
         f"{rw}/locked.sqlite: cannot use this database (attempt to write a readonly database)"),
        (["train", "shd", "--set", f"data.path={ro}/shd", "--set", "time.n_steps=20",
          "--quiet"], {"SPIKEGRAD_CACHE": f"{ro}/cache"},
         f"{ro}/cache/prepared: cannot create this folder (Permission denied)"),
        (["study", "export", "--db", f"{ro}/results.sqlite", "--out", f"{ro}/table.csv"], {},
         f"{ro}/table.csv: cannot write (Permission denied)"),
        (["study", "status", "--db", f"{ro}/results.sqlite"], {}, None),
        (["study", "best", "--db", f"{ro}/results.sqlite"], {}, None),
        (["study", "export", "--db", f"{ro}/results.sqlite"], {}, None),
    ]
    before = {**contents(ro), rw / "locked.sqlite": (rw / "locked.sqlite").read_bytes()}
    command = [*bound_by_permissions(), sys.executable, "-c", DRIVER,
               json.dumps([{"args": args, "env": env} for args, env, _ in cases])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SPIKEGRAD_CACHE": str(rw / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(cases)
    for (args, _, message), result in zip(cases, results, strict=True):
        assert result["exception"] is None, (args, result)
        if message is None:
            assert result["exit_code"] == 0, (args, result)
            assert result["stdout"].strip(), args
            continue
        assert result["exit_code"] == 2, (args, result)
        assert result["stderr"].splitlines() == [f"spikegrad: error: {message}"], args
    assert "randman-smoke: 4 trials, 4 finished" in results[5]["stdout"]
    assert {**contents(ro), rw / "locked.sqlite": (rw / "locked.sqlite").read_bytes()} == before
    assert sorted(p.name for p in ro.iterdir()) == ["results.sqlite", "shd"]
