"""The ``spikegrad`` command line: every command, and nothing else (no logic of its own; each
command is a thin shell over the library).

One module per command: :mod:`~spikegrad.cli.train`, :mod:`~spikegrad.cli.config`,
:mod:`~spikegrad.cli.data`, :mod:`~spikegrad.cli.study`, :mod:`~spikegrad.cli.reproduce`,
:mod:`~spikegrad.cli.bench`, :mod:`~spikegrad.cli.export`; what they share (one-line
errors, JSON output, ``--set``) is in :mod:`~spikegrad.cli.support`.

Every error a user can cause (a :class:`~spikegrad.errors.SpikegradError`) ends with one
line on stderr, ``spikegrad: error: ...``, and exit code 2.
"""

from __future__ import annotations

import click

from spikegrad.cli.bench import bench
from spikegrad.cli.config import config
from spikegrad.cli.data import data
from spikegrad.cli.export import export
from spikegrad.cli.reference import help_reference
from spikegrad.cli.reproduce import reproduce
from spikegrad.cli.study import study
from spikegrad.cli.train import train

__all__ = ["help_reference", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikegrad")
def main() -> None:
    """spikegrad: train spiking networks with surrogate gradients and reproduce
    the robustness studies of Zenke & Vogels (2021)."""


for _command in (train, config, data, study, reproduce, bench, export):
    main.add_command(_command)
