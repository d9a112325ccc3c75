"""The errors a user's input can cause: a config value, a file, a folder, a database, an
argument. Every one is a :class:`SpikegradError` whose message is one line naming the
problem (the file, field or value) and, where there is one, what to do about it, in terms of
the library's own arguments.

The command line turns these, and only these, into ``spikegrad: error: <message>`` and exit
code 2 (with its flags in place of the arguments where an error says what to do); any other
exception is a bug and surfaces as a traceback. This module is the bottom layer: it imports
nothing from spikegrad.
"""

from __future__ import annotations

from pathlib import Path


def first_line(error: BaseException, empty: str | None = None) -> str:
    """The first line of ``error``'s message; for an error without one, ``empty``, or the
    name of its type."""
    text = str(error)
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if empty is None else empty


class SpikegradError(Exception):
    """Base of the errors a user's input can cause; the message is one line."""


class ConfigError(SpikegradError, ValueError):
    """A config that cannot be used; the message is one line naming the field."""


class KernelsUnavailableError(SpikegradError, RuntimeError):
    """Kernels that were insisted on (``model.kernels: cpp``) cannot run here."""


class ArgumentError(SpikegradError, ValueError):
    """An argument a function cannot take (a sample index beyond the data, an unknown
    profile or study, too few seeds); the message names the argument and the value."""


class RunFolderError(ConfigError):
    """A run folder (``out_dir``) that cannot take this run: another run is training into
    it, it already holds a run (``resumable``: continue it with ``resume=True``), or its
    checkpoint was written by another config. ``problem`` is the message without the
    remedy."""

    def __init__(self, where: str | Path, problem: str, resumable: bool = False) -> None:
        self.where, self.resumable = where, resumable
        self.problem = f"{where}: {problem}"
        remedy = "resume it (resume=True) or choose another folder" if resumable else \
            "choose another folder"
        super().__init__(f"{self.problem}; {remedy}")

    def __reduce__(self):
        return type(self), (self.where, self.problem.removeprefix(f"{self.where}: "),
                            self.resumable)


class GridTooLargeError(ConfigError):
    """A study grid of more trials than are expanded without being asked (``force=True``).
    ``problem`` is the message without the remedy."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"{problem}; pass force=True to expand it anyway")

    def __reduce__(self):
        return type(self), (self.problem,)
