"""``python -m spikegrad.cli``: the ``spikegrad`` command."""

from spikegrad.cli import main

main()
