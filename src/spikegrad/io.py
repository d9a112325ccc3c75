"""Files: atomic writes (a reader never sees a half-written file, a crash never loses the old
one), strict JSON, locks held by one process at a time, and one-line errors naming the path.

Every write here that the system refuses (a read-only or full disk, a file where a folder
should be) is a :class:`PathError` naming the path, never a bare ``OSError``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from spikegrad.errors import ConfigError, SpikegradError


class PathError(SpikegradError, ValueError):
    """A file or folder that cannot be read or written; the message is one line,
    ``<path>: <problem> (<the system's reason>)``."""

    def __init__(self, path: str | Path, problem: str, error: OSError | None = None) -> None:
        self.path = Path(path)
        reason = f" ({os_reason(error)})" if error is not None else ""
        super().__init__(f"{path}: {problem}{reason}")


def os_reason(error: BaseException) -> str:
    """The system's one-line reason for an ``OSError`` (``Read-only file system``)."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.splitlines()[0]


def make_folder(path: str | Path) -> Path:
    """Create ``path`` (and its parents) unless it exists; refusal is a :class:`PathError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()),
                       None)
        if blocker is not None:
            raise PathError(blocker, "is a file, where a folder is needed") from None
        raise PathError(path, "cannot create this folder", error) from None
    return path


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Ctrl-C (SIGINT) during the block takes effect when the block ends: a write is
    finished, then interrupted; a second Ctrl-C interrupts at once (a write that hangs can
    still be stopped, and its temporary file is removed). A KeyboardInterrupt raised inside a
    C++ writer's callback (``torch.save`` writing to a Python stream) comes out as a
    ``RuntimeError``, which would turn a Ctrl-C during a checkpoint into a crash; the
    interrupt raised when the block ends replaces it. Only the main thread receives signals;
    elsewhere, and where the handler in place was not set from Python, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:
        yield
        return

    def first_interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signal.SIGINT, previous)  # the next one acts at once

    signal.signal(signal.SIGINT, first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):  # Python's default_int_handler raises KeyboardInterrupt
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def _atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    with interrupt_after():
        return _write_and_rename(path, write)


def _write_and_rename(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    make_folder(path.parent)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    except OSError as error:
        raise PathError(path, "cannot write", error) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise PathError(path, "cannot write", error) from None
    except BaseException:
        _remove(temporary)
        raise
    return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_values(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_values(v) for v in value]
    return value


def strict_json(value: Any, **options: Any) -> str:
    """JSON that every reader accepts: NaN and infinities are written as null."""
    return json.dumps(finite_values(value), allow_nan=False, **options)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, strict_json(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # here: the command line reads and writes results without torch

    return _atomic_write(path, lambda stream: torch.save(obj, stream))


class ExclusiveLock:
    """An advisory lock (``flock``) on the file ``path``, held from ``__enter__`` to
    ``__exit__`` by one process at a time and released by the system when its holder dies
    (even by SIGKILL), so it is never stale. While another process holds it, entering raises
    ``busy`` (an error, or a message for a :class:`~spikegrad.errors.ConfigError`). Elsewhere
    than on POSIX systems nothing is locked."""

    def __init__(self, path: str | Path, busy: str | SpikegradError) -> None:
        self.path, self.busy = Path(path), busy
        self.handle = None

    def __enter__(self) -> ExclusiveLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        make_folder(self.path.parent)
        try:
            self.handle = open(self.path, "a")  # noqa: SIM115 - held until __exit__
        except OSError as error:
            raise PathError(self.path, "cannot create the lock file", error) from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            self.handle = None
            busy = self.busy
            raise (busy if isinstance(busy, SpikegradError) else ConfigError(busy)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (reads only: works on a read-only
        folder, and a lock file that is missing or unreadable means no)."""
        try:
            import fcntl

            handle = open(self.path)  # noqa: SIM115 - closed below
        except (ImportError, OSError):
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            return False
