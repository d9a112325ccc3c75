"""``spikegrad export``: write a trained network in another format (NIR)."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from spikegrad.cli.support import user_errors


@click.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "fmt", type=click.Choice(["nir"]), required=True,
              help="The format to write.")
@click.option("--dt", type=float, default=None,
              help="Simulation step in seconds written with the graph (default: the run's "
                   "time.dt_ms / 1000; snnTorch's importer assumes 1e-4).")
@click.option("--discretisation", type=click.Choice(["exp", "euler"]), default="exp",
              show_default=True,
              help="exp: tau = -dt / ln(beta), the continuous equivalent; euler: tau = dt / "
                   "(1 - beta), reproduced exactly by forward-Euler simulators.")
@click.option("--readout-node", type=click.Choice(["CubaLI", "CubaLIF"]), default="CubaLI",
              show_default=True,
              help="The readout as CubaLI, or as a CubaLIF that never fires (threshold +inf) "
                   "for importers without leaky integrators (snnTorch, Norse).")
@user_errors
def export(source: Path, out: Path, fmt: str, dt: float | None, discretisation: str,
           readout_node: str) -> None:
    """Write the best-validation weights of a run (SOURCE: its --out folder or its
    checkpoint.pt) to OUT, e.g. `spikegrad export runs/randman --to nir randman.nir`."""
    from spikegrad.interop.nir import export_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_run(source, out, dt, discretisation=discretisation,
                          readout_node=readout_node)
    for warning in caught:
        click.echo(f"spikegrad: warning: {warning.message}", err=True)
    click.echo(f"wrote {path} ({fmt.upper()}, {discretisation} time constants)")
