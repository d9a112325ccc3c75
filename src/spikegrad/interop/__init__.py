"""Exchange of networks with other spiking-network tools (see :mod:`spikegrad.interop.nir`)."""
