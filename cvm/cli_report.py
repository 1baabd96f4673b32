"""``cvm report``: the customer-value dashboard and the model cards in one HTML file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cvm.common import HomeOpt, as_of_date, console, err, home_of, quiet_mlflow, run


def report(
    as_of: Annotated[str, typer.Option("--as-of", help="Report date (YYYY-MM-DD): the nightly batch of that date "
                                       "and data strictly before it.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
    = "completejourney",
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (self-contained, opens offline).")]
    = Path("report.html"),
    batch_dir: Annotated[Path | None, typer.Option("--batch-dir", help="Batch output root (default "
                                                      "$CVM_HOME/batch/<dataset>); the batch runs first if it has "
                                                      "no output for the date.")] = None,
    period_days: Annotated[int, typer.Option("--period-days", min=7, max=365, help="Length of the 'last period' "
                                             "of the KPI tiles (churn, retention, revenue, ARPU).")] = 90,
    home: HomeOpt = None,
) -> None:
    """Write the CVM report: KPI tiles, acquisition cohorts, RFM segments and their migration, CLV, a card per
    champion model, the next-best-offer mix and evaluation, and campaign effects.

    The numbers are the nightly batch's for the same as_of (scores, offers, migration), so they
    equal what the batch files and the service give."""
    from base.dates import partition_dir
    from cvm.cli_batch import nightly
    from report.data import ReportError
    from report.page import write_report
    from sources.dataset import dataset_name

    quiet_mlflow()
    day = as_of_date(as_of)
    t0 = time.perf_counter()
    h = home_of(home)
    root = batch_dir or h.batch(run(lambda: dataset_name(dataset)))
    if not (partition_dir(root, day) / "manifest.json").exists():
        err.print(f"no batch output for {day} in {root}: running the nightly batch first")
        nightly(day, dataset=dataset, out=root, home=home)
    inputs, size = run(lambda: write_report(h, dataset, day, partition_dir(root, day), out, period_days=period_days,
                                            status=err.status), ReportError)
    console.print(f"report written to {out} ({size / 1e6:.1f} MB, {len(inputs.scores):,} customers, "
                  f"{len(inputs.cards)} model cards) in {time.perf_counter() - t0:.1f} s")
