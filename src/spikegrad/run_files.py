"""The files of a run folder, written atomically (a temporary file renamed into place: a
reader never sees half a file, a crash never loses the previous one)::

    config.yaml     the validated config of the run (written when training starts)
    metrics.jsonl   one line per finished epoch
    checkpoint.pt   everything needed to continue bit for bit (after every epoch)
    result.json     the final metrics (when the run ends)
    .lock           held by the process that trains into the folder

:class:`RunFolder` writes and reads them for :class:`~spikegrad.training.Trainer`;
:func:`run_files` finds the checkpoint and config of a run (its folder, or its checkpoint
file) and :func:`read_best_weights` reads its weights, for readers such as the NIR export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spikegrad.config import ConfigError, ExperimentConfig
from spikegrad.errors import RunFolderError
from spikegrad.io import (
    ExclusiveLock,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    make_folder,
    strict_json,
)

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
LOCK = ".lock"


class RunFolder:
    """The folder of one run; every write replaces its file atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def holds_run(self) -> bool:
        """Whether a run has written its checkpoint, metrics or result here (a config alone
        is what a run writes before its first epoch)."""
        return any((self.path / name).exists() for name in (CHECKPOINT, METRICS, RESULT))

    def lock(self) -> ExclusiveLock:
        """The folder's lock, for the time of a training (created with the folder)."""
        make_folder(self.path)
        busy = RunFolderError(self.path, "another run is training into this folder")
        return ExclusiveLock(self.path / LOCK, busy)

    def write_config(self, config: ExperimentConfig) -> None:
        atomic_write_text(self.path / CONFIG, config.to_yaml())

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path / METRICS, "".join(strict_json(r) + "\n" for r in history))

    def write_result(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.path / RESULT, result)

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        atomic_torch_save(checkpoint, self.checkpoint)

    def read_checkpoint(self, config_hash: str) -> dict[str, Any] | None:
        """The checkpoint written by the config of hash ``config_hash`` (None when there is
        none); one written by another config is a :class:`ConfigError`."""
        if not self.checkpoint.exists():
            return None
        saved = read_checkpoint(self.checkpoint)
        if "config_hash" not in saved:
            raise unreadable_checkpoint(self.checkpoint, KeyError("config_hash"))
        if saved["config_hash"] != config_hash:
            raise RunFolderError(
                self.checkpoint, f"was written by a different config "
                f"({saved['config_hash']} != {config_hash})"
            )
        return saved


def read_checkpoint(path: Path, map_location: str | None = None) -> dict[str, Any]:
    """A checkpoint file's content; an unreadable file is a :class:`ConfigError`."""
    try:
        saved = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file is reported the same way
        raise unreadable_checkpoint(path, error) from None
    if not isinstance(saved, dict):
        raise unreadable_checkpoint(
            path, TypeError(f"holds a {type(saved).__name__}, not a checkpoint"))
    return saved


def read_best_weights(path: Path) -> dict[str, torch.Tensor] | None:
    """The best-validation weights a checkpoint holds, on the CPU (None before an epoch has
    finished)."""
    saved = read_checkpoint(path, map_location="cpu")
    try:
        return saved["state"]["best_model_state"]
    except (KeyError, TypeError) as error:
        raise unreadable_checkpoint(path, error) from None


def unreadable_checkpoint(path: Path, error: BaseException) -> ConfigError:
    """The one-line error of a checkpoint file that cannot be read or lacks what it should
    hold."""
    return ConfigError(f"{path}: cannot read checkpoint "
                       f"({type(error).__name__}: {error})".splitlines()[0])


def run_files(source: str | Path) -> tuple[Path, Path]:
    """The checkpoint and config of a run: ``source`` is its folder, or its checkpoint file
    with ``config.yaml`` beside it. Missing files are :class:`ConfigError` s."""
    source = Path(source)
    if source.is_dir():
        checkpoint, config = source / CHECKPOINT, source / CONFIG
    elif source.is_file():
        checkpoint, config = source, source.absolute().parent / CONFIG
    else:
        raise ConfigError(f"{source}: no such run folder or checkpoint")
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: no such checkpoint (a run keeps one when trained "
                          "with an out_dir)")
    if not config.is_file():
        raise ConfigError(f"{config}: no such file (a run folder holds {CONFIG} beside "
                          f"{CHECKPOINT})")
    return checkpoint, config
