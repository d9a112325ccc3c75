"""How many threads the fast engine uses: all free cores, and fewer when others are busy.

The engine splits each operation into fixed blocks that threads claim one at a time, so no
thread waits for another at each time step. A thread that shares its core with another
busy process still runs at half speed, and the operation waits for the block it holds; with
one core busy on a two-core laptop, two threads are then slower than one. So before an
operation the engine counts the other processes that are running or waiting to run (Linux:
``/proc/loadavg`` minus this process's own running threads) and uses the cores they leave
free, at least one and at most the thread count it was given (``torch.get_num_threads()``
when first used, or a later value the user sets); with one thread to give (a study worker)
it does not look. The compiled kernels' results do not depend on the thread count (see
``kernels.cpp``), so this changes speed only; PyTorch's products can give other bits on
other thread counts, so before PyTorch's kernels the engine gives the user's count back
(:meth:`ThreadGovernor.release`) and the same config and seed give the same results. On the
compiled path the weight gradient of an input without a sparse form (a sum over the batch and
the steps, which the BLAS splits across threads) is summed by the kernels; the PyTorch
products left there (a dense input's projection, the gradient sent to a layer's input) sum
each element over one row, which it does not split (``tests/test_threads.py`` holds both).
A training run gives the user's count back when it ends (``Trainer.fit``); elsewhere
:meth:`ThreadGovernor.release` does.

``SPIKEGRAD_THREADS=N`` fixes the thread count at N; ``SPIKEGRAD_THREADS=auto`` (the default)
adapts it. Elsewhere than on Linux the count is left as it is.
"""

from __future__ import annotations

import os
import time

import torch

from spikegrad.errors import ConfigError

CHECK_INTERVAL_S = 0.01
"""The load is looked at no more often than this (a look costs about 60 µs)."""

CONFIRM_FEWER, CONFIRM_MORE = 2, 3
"""A changed count of free cores is acted on once it has been seen this many times in a row:
fewer threads soon (a busy core costs much), more threads a little later."""


def _read(path: str) -> bytes:
    """The start of a small /proc file (a raw read: a Python file object costs 3x the time)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 512)
    finally:
        os.close(fd)


def other_runnable_tasks() -> int | None:
    """Tasks of other processes that are running or waiting for a core right now (Linux)."""
    try:
        running = int(_read("/proc/loadavg").split()[3].split(b"/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                stat = _read(f"/proc/self/task/{task}/stat")
            except OSError:  # the thread ended meanwhile
                continue
            own += stat[stat.rindex(b")") + 2] == ord("R")
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - own)


class ThreadGovernor:
    """Sets ``torch.set_num_threads`` to the cores other processes leave free."""

    def __init__(self, cores: int | None = None) -> None:
        try:
            self.cores = cores or len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            self.cores = cores or os.cpu_count() or 1
        self.limit: int | None = None  # the user's thread count
        self.chosen: int | None = None  # what we set last
        self.last_check = -float("inf")
        self.pending: tuple[int, int] | None = None  # (proposed count, times seen)

    def fixed(self) -> int | None:
        setting = os.environ.get("SPIKEGRAD_THREADS", "auto").strip().lower()
        if setting in ("", "auto"):
            return None
        try:
            return max(1, int(setting))
        except ValueError:
            raise ConfigError(f"SPIKEGRAD_THREADS: expected a positive number or 'auto', "
                             f"got {setting!r}") from None

    def _set_by_user(self, current: int) -> bool:
        return self.chosen is None or current not in (self.chosen, self.limit)

    def user_limit(self) -> int:
        """The most threads the engine uses: the count the user gave torch."""
        current = torch.get_num_threads()
        return current if self._set_by_user(current) else self.limit

    def update(self) -> int:
        """Check the load (at most every CHECK_INTERVAL_S) and set the thread count."""
        fixed = self.fixed()
        if fixed is not None:
            if torch.get_num_threads() != fixed:
                torch.set_num_threads(fixed)
            return fixed
        current = torch.get_num_threads()
        if self._set_by_user(current):
            # first use, or the user set a new thread count: that is the limit from now on
            self.limit, self.chosen, self.pending = current, current, None
        elif current != self.chosen:  # set back to the limit by someone else: ours again
            torch.set_num_threads(self.chosen)
        if self.limit <= 1:  # one thread whatever the load: no need to look at it
            return self.chosen
        now = time.monotonic()
        if now - self.last_check < CHECK_INTERVAL_S:
            return self.chosen
        self.last_check = now
        others = other_runnable_tasks()
        if others is None:
            return self.chosen
        wanted = max(1, min(self.limit, self.cores - others))
        if wanted == self.chosen:
            self.pending = None
            return self.chosen
        seen = self.pending[1] + 1 if self.pending and self.pending[0] == wanted else 1
        self.pending = (wanted, seen)
        if seen >= (CONFIRM_FEWER if wanted < self.chosen else CONFIRM_MORE):
            torch.set_num_threads(wanted)
            self.chosen, self.pending = wanted, None
        return self.chosen

    def release(self) -> None:
        """Give the user's thread count back (before work whose results may depend on the
        thread count: PyTorch's products)."""
        if self.fixed() is not None or self.chosen is None:
            return
        current = torch.get_num_threads()
        if not self._set_by_user(current) and current != self.limit:
            torch.set_num_threads(self.limit)
        self.chosen, self.pending = torch.get_num_threads(), None
        self.limit = self.chosen


GOVERNOR = ThreadGovernor()


def thread_info() -> dict[str, int | str]:
    """The thread count of this process, for the record of a run: ``threads``, the count
    torch was given (the most the engine uses), and ``thread_setting``, ``SPIKEGRAD_THREADS``
    (``auto``: fewer threads while other processes keep cores busy; or the fixed count)."""
    fixed = GOVERNOR.fixed()
    if fixed is not None:
        return {"threads": fixed, "thread_setting": str(fixed)}
    return {"threads": GOVERNOR.user_limit(), "thread_setting": "auto"}
