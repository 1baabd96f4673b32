"""The ``cvm`` command: the top layer, which parses arguments and calls one function of a
lower layer per command.

Every subcommand has ``--help``; state goes under ``CVM_HOME`` (default ``./cvm_home``).
Errors a user can act on are printed as one line and exit with status 2
(``cvm.common``). Heavy libraries (Spark, MLflow, BentoML, plotly) are imported inside the
commands, so ``cvm --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cvm.cli_batch import score_batch
from cvm.cli_events import events_app
from cvm.cli_features import features_app, profiles_app, sources_app, synth
from cvm.cli_loop import nbo_impact, outcomes_app, simulate
from cvm.cli_models import models_app
from cvm.cli_report import report
from cvm.cli_segments import segments_app
from cvm.cli_serve import bento, nbo_app, serve
from cvm.cli_train import train
from cvm.common import command, prose, setup_logging
from cvm.demo import demo

app = typer.Typer(
    name="cvm",
    help=prose("Customer Value Management scoring: features, models, scores and offers."),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(features_app, name="features")
app.add_typer(profiles_app, name="profiles")
app.add_typer(sources_app, name="sources")
app.add_typer(models_app, name="models")
app.add_typer(nbo_app, name="nbo")
app.add_typer(outcomes_app, name="outcomes")
app.add_typer(events_app, name="events")
app.add_typer(segments_app, name="segments")
command(nbo_app, "impact")(nbo_impact)
for fn, name in ((synth, "synth"), (train, "train"), (score_batch, "score-batch"), (report, "report"),
                 (serve, "serve"), (bento, "bento"), (simulate, "simulate"), (demo, "demo")):
    command(app, name)(fn)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO), not only warnings.")]
         = False) -> None:
    """Customer Value Management scoring service."""
    setup_logging(verbose)


if __name__ == "__main__":  # pragma: no cover
    app()
