"""Training and evaluation of a spiking network from an :class:`ExperimentConfig`.

    from spikegrad import load_config, train
    result = train(load_config("randman", ["training.epochs=30"]), out_dir="runs/randman")
    result["test_accuracy"]

One run: build the data and the network from the config, train with Adam (or
SGD) on the training split, keep the weights of the epoch with the best
validation accuracy, and report train/valid/test metrics of those weights.
After every epoch a checkpoint is written atomically to ``out_dir`` (the run folder's
files: :mod:`spikegrad.run_files`), so a killed run resumed with ``resume=True`` ends with
exactly the metrics of an uninterrupted one. A NaN or inf in the loss or the weights ends
the run with status ``"diverged"`` (and the epoch), not with an exception. One process at a
time trains into an ``out_dir`` (a lock on ``out_dir/.lock``); a second one is refused
before it writes.

Determinism on CPU: the same config and seed give the same bits on the same machine, with
the same torch build. On the fast engine's compiled path they do so on any thread count:
its loops split work into fixed blocks whose partial sums are added in block order
(``engine/kernels.cpp``), it sums the weight gradient of a dense input itself, and the
PyTorch operations left in a step are element-wise (Adam) or sum over rows that no thread
count splits (a dense input's projection, the gradient sent back to a layer's input) or too
few elements to be split (the loss, the activity penalties):
``tests/test_training_reliability.py`` trains on 1 and 2 threads to the same weights. So
the engine may use fewer threads while other processes keep cores busy
(:mod:`spikegrad.engine.threads`; ``SPIKEGRAD_THREADS`` fixes the count), and gives the
user's count back when the run ends. PyTorch's kernels (``model.kernels: torch``, the
reference engine) run on the user's count throughout, and their products may give other
last bits on another count. Every run records the count (``threads`` and
``thread_setting`` in its result).

A run whose memory need is plainly beyond the machine (:func:`memory_need`) is refused
before any data is built.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, TypedDict, get_args, get_origin, get_type_hints

import torch
from torch import Tensor
from tqdm.auto import tqdm

from spikegrad.config import ConfigError, ExperimentConfig
from spikegrad.data import DataSplits, build_data, iterate_batches
from spikegrad.data.base import SampleDataset
from spikegrad.engine import engine_info, recompute_setting, recomputes
from spikegrad.engine.threads import GOVERNOR, thread_info
from spikegrad.errors import RunFolderError, first_line
from spikegrad.losses import (
    classification_loss,
    lower_rate_penalty,
    upper_rate_penalty,
)
from spikegrad.model import SNN
from spikegrad.run_files import RunFolder, unreadable_checkpoint

SHUFFLE_SEED_OFFSET = 1_000_003


BYTES_PER_VALUE = 4  # float32
KERNEL_BLOCKS = 16
"""The fast engine's compiled kernels cut a batch into at most this many blocks of entries
(``kMaxBlocks`` in its kernels), each with buffers of its own: its partial sums of the weight
gradients and, when it recomputes U, its entries' U."""


def memory_need(config: ExperimentConfig, n_inputs: int | None = None) -> int:
    """About how many bytes a run of ``config`` needs at least: the weights with their
    gradients, optimiser state and best copy (and, in the fast engine, the per-block partial
    sums of the weight gradients), plus the larger of a training batch (dense inputs
    [B, T, C] and one [B, T, N] state per hidden layer that keeps it for the backward pass:
    every layer with ``model.recompute`` false, none with true, the recurrent ones with
    auto, as :func:`spikegrad.engine.recomputes` decides for the compiled kernels; a layer
    that recomputes it, the [T, N] state of a block of entries per thread) and an evaluation
    batch (dense inputs and the spikes of every hidden layer but the last)."""
    n_inputs = n_inputs or config.data.input_width()
    sizes = [layer.size for layer in config.model.hidden]
    widths = [n_inputs, *sizes]
    n_classes = getattr(config.data, "n_classes", None) or 10
    weights = sum(widths[i] * size + (size * size if layer.recurrent else 0)
                  for i, (size, layer) in enumerate(zip(sizes, config.model.hidden, strict=True)))
    weights += sizes[-1] * n_classes
    copies = 5 if config.training.optimizer == "adam" else 4  # weights, grads, state, best
    if config.model.engine == "fast":
        copies += KERNEL_BLOCKS
    steps, t = config.time.n_steps, config.training
    recompute = recompute_setting(config.model.recompute)
    keeps = [not recomputes(recompute, layer.recurrent, in_backward_loop=True)
             for layer in config.model.hidden]
    kept = sum(size for size, keep in zip(sizes, keeps, strict=True) if keep)
    # a layer that recomputes its state does so for one block of entries per thread
    block = math.ceil(t.batch_size / min(t.batch_size, KERNEL_BLOCKS))
    recomputing = max((size for size, keep in zip(sizes, keeps, strict=True) if not keep),
                      default=0) * torch.get_num_threads() * block
    train = t.batch_size * steps * (n_inputs + kept) + steps * recomputing
    evaluate = t.eval_batch_size * steps * (n_inputs + sum(sizes[:-1]))
    return BYTES_PER_VALUE * (copies * weights + max(train, evaluate))


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or its control group's limit
    when lower (None when unknown)."""
    try:
        limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, OSError, ValueError):
        limits = []
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(path).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return min(limits) if limits else None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_memory(config: ExperimentConfig, n_inputs: int | None = None) -> None:
    """Refuse (a :class:`ConfigError` with the estimate) a run that needs more memory than
    the machine has (:func:`memory_need`, :func:`machine_memory`)."""
    available = machine_memory()
    need = memory_need(config, n_inputs)
    if available is None or need <= available:
        return
    sizes = ", ".join(str(layer.size) for layer in config.model.hidden)
    raise ConfigError(
        f"time.n_steps, training.batch_size, model.hidden: this run needs about {_gib(need)} "
        f"of memory ({config.time.n_steps} steps, batches of {config.training.batch_size}, "
        f"hidden sizes [{sizes}]), more than the {_gib(available)} of this machine")


def activity_penalty(config: ExperimentConfig, spike_counts: list[torch.Tensor]) -> torch.Tensor:
    """Sum of the configured upper and lower activity regularisers over hidden layers, from
    each layer's spike counts per neuron and sample ([B, N], ``SNNOutput.spike_counts``)."""
    total = spike_counts[0].new_zeros(()) if spike_counts else torch.zeros(())
    for spec, counts in zip(config.model.hidden, spike_counts, strict=True):
        a = spec.activity
        if a.upper_strength > 0:
            total = total + upper_rate_penalty(counts, a.upper_strength, a.upper_rate,
                                               a.upper_exponent)
        if a.lower_strength > 0:
            total = total + lower_rate_penalty(counts, a.lower_strength, a.lower_rate)
    return total


class SplitMetrics(TypedDict):
    """Metrics of a pass over one split: mean loss, accuracy, and each hidden layer's
    spikes per neuron per sample."""

    loss: float
    accuracy: float
    hidden_spikes_per_neuron: list[float]


class MetricSums:
    """Running sums over the batches of one pass (training or evaluation), in batch order;
    :meth:`means` gives the :class:`SplitMetrics`."""

    def __init__(self, n_layers: int) -> None:
        self.loss, self.correct, self.n = 0.0, 0, 0
        self.spikes = [0.0] * n_layers

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor,
            spike_counts: Iterable[Tensor]) -> None:
        """One batch: its mean loss, logits [B, K], labels [B] and per-layer spike counts
        [B, N]."""
        self.loss += float(loss.detach()) * len(labels)
        self.correct += int((logits.argmax(dim=1) == labels).sum())
        self.n += len(labels)
        for i, counts in enumerate(spike_counts):
            self.spikes[i] += float(counts.detach().mean(dim=1).sum())

    def means(self) -> SplitMetrics:
        n = max(self.n, 1)
        return SplitMetrics(loss=self.loss / n, accuracy=self.correct / n,
                            hidden_spikes_per_neuron=[s / n for s in self.spikes])


@torch.no_grad()
def evaluate(
    model: SNN, dataset: SampleDataset, reduction: str = "max", batch_size: int = 1000
) -> SplitMetrics:
    """Loss, accuracy and hidden spikes per neuron per sample (one value per layer)."""
    model.eval()
    sums = MetricSums(len(model.hidden))
    for inputs, labels in iterate_batches(dataset, batch_size, sparse=True):
        output = model(inputs, record_spikes=False, record_trace=False, reduction=reduction)
        sums.add(classification_loss(output.logits, labels), output.logits, labels,
                 output.spike_counts)
    return sums.means()


@dataclass(frozen=True)
class Divergence:
    """Why a training epoch stopped early: the loss or the weights are not finite."""

    reason: str


@dataclass
class EpochRecord:
    """One finished epoch: the training pass's metrics and the validation split's (a line
    of ``metrics.jsonl``)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    hidden_spikes_per_neuron: list[float]
    epoch_time_s: float


@dataclass
class TrainingState:
    """Everything a checkpoint holds: enough to continue bit for bit."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid_accuracy: float = -1.0
    best_model_state: dict[str, torch.Tensor] | None = None
    status: str = "running"
    diverged_epoch: int | None = None
    divergence_reason: str | None = None
    elapsed_s: float = 0.0
    # early stopping: the accuracy an improvement must beat by min_delta, and epochs since
    patience_reference: float = -1.0
    epochs_without_improvement: int = 0
    stop_reason: str | None = None  # "patience", "epochs", "callback" or None (running)


def training_state(saved: dict[str, Any]) -> TrainingState:
    """The :class:`TrainingState` a checkpoint holds, each field of the type it should have
    (a TypeError names the first that has not)."""
    if not isinstance(saved, dict):
        raise TypeError(f"state is a {type(saved).__name__}, not a dict")
    state = TrainingState(**saved)
    for name, hint in get_type_hints(TrainingState).items():
        value = getattr(state, name)
        allowed = tuple(get_origin(t) or t for t in (get_args(hint) if get_origin(hint) is
                                                     UnionType else (hint,)))
        if float in allowed:
            allowed += (int,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise TypeError(f"state.{name} is {value!r}")
    return state


def check_splits(data: DataSplits) -> None:
    """Every split must hold samples: training needs some, and so do the validation (the
    best epoch) and test metrics."""
    sizes = {split: len(getattr(data, split)) for split in ("train", "valid", "test")}
    empty = [split for split, n in sizes.items() if n == 0]
    if empty:
        counts = ", ".join(f"{split} {n}" for split, n in sizes.items())
        raise ConfigError(f"data: the {empty[0]} split of {data.name} has no samples ({counts}); "
                          f"the data set is too small for its split settings")


def init_batch(config: ExperimentConfig, train: SampleDataset) -> Tensor | None:
    """The inputs a data-dependent init (``model.init.*.scheme: fluctuation``) estimates its
    statistics from: the first ``model.init.fluctuation.batch_size`` training samples (None
    when no matrix needs data)."""
    if not config.model.init.data_dependent:
        return None
    n = min(config.model.init.fluctuation.batch_size, len(train))
    return train.batch(torch.arange(n))[0]


def _weights_finite(model: SNN) -> bool:
    """Whether every weight is finite: a NaN makes a tensor's minimum and maximum NaN, an
    infinity makes one of them infinite (one reduction; no boolean mask is built)."""
    return all(math.isfinite(float(low)) and math.isfinite(float(high))
               for low, high in (torch.aminmax(p.detach()) for p in model.parameters()))


class Trainer:
    """Trains the network of one config; ``fit()`` returns the final metrics.

    An epoch (:meth:`_train_epoch`) is a pass over the shuffled training split and one over
    the validation split: an :class:`EpochRecord`, or a :class:`Divergence`. After each,
    :meth:`_end_epoch` keeps the record, the best weights and the patience count and asks the
    epoch callback; then the checkpoint and the metrics go to the run folder
    (:class:`~spikegrad.run_files.RunFolder`), if there is one.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: str | Path | None = None,
        data: DataSplits | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run = RunFolder(self.out_dir) if self.out_dir is not None else None
        self.progress = progress
        check_memory(config, data.n_inputs if data is not None else None)
        self.data = data or build_data(config.data, config.time.n_steps, config.time.dt_ms)
        if self.data.n_steps != config.time.n_steps:
            raise ConfigError(
                f"time.n_steps: data set has {self.data.n_steps} steps, config says "
                f"{config.time.n_steps}"
            )
        check_splits(self.data)
        self.model = SNN.from_config(config, self.data.n_inputs, self.data.n_classes,
                                     inputs=init_batch(config, self.data.train))
        self.optimizer = self._make_optimizer()
        self.dale = bool(self.model.sign_constraints())  # signs to keep after each step
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + SHUFFLE_SEED_OFFSET)
        self.state = TrainingState()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        t = self.config.training
        if t.optimizer == "adam":
            return torch.optim.Adam(self.model.parameters(), lr=t.learning_rate)
        return torch.optim.SGD(self.model.parameters(), lr=t.learning_rate, momentum=t.momentum)

    # -- checkpoints -------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write the checkpoint (weights, optimiser, batch order and state) to the run
        folder; without one, nothing."""
        if self.run is None:
            return
        self.run.write_checkpoint({
            "config_hash": self.config.config_hash(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "state": asdict(self.state),
        })

    def load_checkpoint(self) -> bool:
        """Continue from the run folder's checkpoint; False when there is none."""
        saved = self.run.read_checkpoint(self.config.config_hash()) if self.run else None
        if saved is None:
            return False
        try:  # a checkpoint of another version, or damaged: one line naming the file
            state = training_state(saved["state"])
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.shuffle_generator.set_state(saved["shuffle_generator"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise unreadable_checkpoint(self.run.checkpoint, error) from None
        self.state = state
        return True

    # -- training ----------------------------------------------------------------------

    def fit(
        self, resume: bool = False, stop_after: int | None = None,
        epoch_callback: Callable[[TrainingState], bool] | None = None,
    ) -> dict[str, Any]:
        """Train for ``training.epochs`` epochs, or until the patience rule ends it
        (continuing a checkpoint if ``resume``).

        ``stop_after``: pause after that many epochs (status ``paused``; ``fit`` again with
        ``resume`` continues, with the result of an uninterrupted run). ``epoch_callback``
        is called with the state after every epoch; when it returns True training stops
        (status ``stopped``, the metrics of the best epoch so far).

        With an ``out_dir``, the folder is locked for the time of the call: a second run into
        it, while this one trains, is a :class:`ConfigError` before it writes anything. The
        thread count, which the engine lowers while other processes keep cores busy, is the
        user's again when the call returns.
        """
        try:
            if self.run is None:
                return self._fit(stop_after, epoch_callback)
            self._check_fresh(resume)
            with self.run.lock():
                self._check_fresh(resume)
                if resume:
                    self.load_checkpoint()
                self.run.write_config(self.config)
                return self._fit(stop_after, epoch_callback)
        finally:  # the count the engine lowered while other processes were busy
            GOVERNOR.release()

    def _check_fresh(self, resume: bool) -> None:
        if not resume and self.run.holds_run():
            raise RunFolderError(self.out_dir, "already holds a run", resumable=True)
        if resume and self.run.holds_run() and not self.run.checkpoint.exists():
            raise RunFolderError(self.out_dir, "holds a run's metrics or result but no "
                                 "checkpoint.pt to continue from")

    def _fit(self, stop_after: int | None,
             epoch_callback: Callable[[TrainingState], bool] | None) -> dict[str, Any]:
        epochs = self.config.training.epochs
        with tqdm(total=epochs, initial=self.state.epoch, desc=self.config.name, unit="epoch",
                  disable=not self.progress, leave=False) as bar:
            while self.state.status == "running" and self.state.epoch < epochs:
                started = time.perf_counter()
                outcome = self._train_epoch()
                if isinstance(outcome, Divergence):
                    self._diverged(outcome)
                else:
                    self._end_epoch(outcome, epoch_callback)
                self.state.elapsed_s += time.perf_counter() - started
                self._save_progress()
                if isinstance(outcome, Divergence):
                    break
                bar.update(1)
                bar.set_postfix(loss=f"{outcome.train_loss:.3f}",
                                train=f"{outcome.train_accuracy:.3f}",
                                valid=f"{outcome.valid_accuracy:.3f}",
                                spikes="/".join(f"{s:.2f}"
                                                for s in outcome.hidden_spikes_per_neuron))
                if stop_after is not None and self.state.epoch >= stop_after and \
                        self.state.status == "running" and self.state.epoch < epochs:
                    return {**self.final_metrics(evaluate_splits=False), "status": "paused"}
        if self.state.status == "running":
            self.state.status = "completed"
            self.state.stop_reason = self.state.stop_reason or "epochs"
            self.save_checkpoint()
        result = self.final_metrics()
        if self.run is not None:
            self.run.write_metrics(self.state.history)
            self.run.write_result(result)
        return result

    def _train_epoch(self) -> EpochRecord | Divergence:
        """One pass over the training set and one over the validation set: the epoch's
        record, or why training diverged (then the weights are not to be used)."""
        started = time.perf_counter()
        self.model.train()
        reduction = self.config.model.readout.reduction
        sums = MetricSums(len(self.model.hidden))
        for inputs, labels in iterate_batches(
            self.data.train, self.config.training.batch_size, shuffle=True,
            generator=self.shuffle_generator, sparse=True,  # spikes: no dense batch is built
        ):
            output = self.model(inputs, record_spikes=False, record_trace=False,
                                reduction=reduction)
            loss = classification_loss(output.logits, labels)
            loss = loss + activity_penalty(self.config, output.spike_counts)
            if not torch.isfinite(loss):
                return Divergence(f"loss is {float(loss.detach())}")
            self._step(loss)
            if not _weights_finite(self.model):
                return Divergence("weights are not finite")
            sums.add(loss, output.logits, labels, output.spike_counts)
        train = sums.means()
        valid = evaluate(self.model, self.data.valid, reduction,
                         self.config.training.eval_batch_size)
        return EpochRecord(
            epoch=self.state.epoch + 1, train_loss=train["loss"],
            train_accuracy=train["accuracy"], valid_loss=valid["loss"],
            valid_accuracy=valid["accuracy"],
            hidden_spikes_per_neuron=train["hidden_spikes_per_neuron"],
            epoch_time_s=time.perf_counter() - started,
        )

    def _step(self, loss: Tensor) -> None:
        """One optimiser step on ``loss``; a step that fails (e.g. a step too large for
        float32) is a :class:`ConfigError` naming the learning rate."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        try:
            self.optimizer.step()
        except RuntimeError as error:
            t = self.config.training
            raise ConfigError(
                f"training.learning_rate: the {t.optimizer} step failed in epoch "
                f"{self.state.epoch + 1} at learning rate {t.learning_rate:g} "
                f"({first_line(error)})") from None
        if self.dale:
            self.model.enforce_signs()

    def _diverged(self, divergence: Divergence) -> None:
        s = self.state
        s.status, s.diverged_epoch = "diverged", s.epoch + 1
        s.divergence_reason = divergence.reason

    def _end_epoch(self, record: EpochRecord,
                   epoch_callback: Callable[[TrainingState], bool] | None) -> None:
        """Keep the record (and the weights, when validation is the best so far), count
        patience, then ask the callback whether to stop."""
        s = self.state
        s.history.append(asdict(record))
        if record.valid_accuracy > s.best_valid_accuracy:
            s.best_valid_accuracy, s.best_epoch = record.valid_accuracy, record.epoch
            s.best_model_state = {
                k: v.detach().clone() for k, v in self.model.state_dict().items()
            }
        s.epoch = record.epoch
        self._early_stopping(record.valid_accuracy)
        if epoch_callback is not None and s.status == "running" and epoch_callback(s):
            s.status, s.stop_reason = "stopped", "callback"

    def _early_stopping(self, valid_accuracy: float) -> None:
        """Keras' rule: an improvement must exceed the reference by min_delta; after
        ``patience`` epochs without one, training is complete."""
        t, s = self.config.training, self.state
        if valid_accuracy > s.patience_reference + t.min_delta:
            s.patience_reference, s.epochs_without_improvement = valid_accuracy, 0
        else:
            s.epochs_without_improvement += 1
        if t.patience is not None and s.epochs_without_improvement >= t.patience:
            s.status, s.stop_reason = "completed", "patience"

    def _save_progress(self) -> None:
        """The checkpoint and the metrics so far, to the run folder (if any)."""
        if self.run is not None:
            self.save_checkpoint()
            self.run.write_metrics(self.state.history)

    def final_metrics(self, evaluate_splits: bool = True) -> dict[str, Any]:
        """Metrics of the best-validation weights on all three splits (with
        ``evaluate_splits`` False: the validation accuracy of the best epoch only)."""
        s = self.state
        result: dict[str, Any] = {
            "name": self.config.name,
            "status": s.status,
            "stop_reason": s.stop_reason,
            "diverged_epoch": s.diverged_epoch,
            "divergence_reason": s.divergence_reason,
            "epochs_completed": s.epoch,
            "epoch_budget": self.config.training.epochs,
            "best_epoch": s.best_epoch,
            "config_hash": self.config.config_hash(),
            "seed": self.config.seed,
            **thread_info(),
            **engine_info(self.config.model),
        }
        if not evaluate_splits:
            result["valid_accuracy"] = s.best_valid_accuracy if s.best_epoch else math.nan
            result["wall_time_s"] = s.elapsed_s
            return result
        if s.best_model_state is None:
            nan = math.nan
            n_layers = len(self.model.hidden)
            for split in ("train", "valid", "test"):
                result[f"{split}_accuracy"] = nan
                result[f"{split}_loss"] = nan
            result["hidden_spikes_per_neuron"] = [nan] * n_layers
        else:
            self.model.load_state_dict(s.best_model_state)
            reduction = self.config.model.readout.reduction
            for split in ("train", "valid", "test"):
                metrics = evaluate(self.model, getattr(self.data, split), reduction,
                                   self.config.training.eval_batch_size)
                result[f"{split}_accuracy"] = metrics["accuracy"]
                result[f"{split}_loss"] = metrics["loss"]
                if split == "test":
                    result["hidden_spikes_per_neuron"] = metrics["hidden_spikes_per_neuron"]
        result["wall_time_s"] = s.elapsed_s
        return result


def train(
    config: ExperimentConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    data: DataSplits | None = None,
) -> dict[str, Any]:
    """Train the network of ``config``; returns the final metrics (see :class:`Trainer`)."""
    return Trainer(config, out_dir=out_dir, data=data, progress=progress).fit(resume=resume)
