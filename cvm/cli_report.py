"""``cvm report``: the customer-value dashboard and the model cards in one HTML file."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def report(
    as_of: Annotated[str, typer.Option("--as-of", help="Report date (YYYY-MM-DD): the nightly batch of that date "
                                       "and data strictly before it.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
    = "completejourney",
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write (self-contained, opens offline).")]
    = Path("report.html"),
    batch_dir: Annotated[Optional[Path], typer.Option("--batch-dir", help="Batch output root (default "
                                                      "$CVM_HOME/batch/<dataset>); the batch runs first if it has "
                                                      "no output for the date.")] = None,
    period_days: Annotated[int, typer.Option("--period-days", min=7, max=365, help="Length of the 'last period' "
                                             "of the KPI tiles (churn, retention, revenue, ARPU).")] = 90,
    home: Annotated[Optional[Path], typer.Option("--home", help="State directory; default $CVM_HOME or "
                                                 "./cvm_home.", envvar="CVM_HOME")] = None,
) -> None:
    """Write the CVM report: KPI tiles, acquisition cohorts, RFM segments and their migration, CLV,
    a card per champion model, the next-best-offer mix and evaluation, and campaign effects.

    The numbers are the nightly batch's for the same as_of (scores, offers, migration), so they
    equal what the batch files and the service give."""
    from cvm.cli_batch import command_date
    from cvm.home import Home
    from report.data import ReportError
    from sources.dataset import DatasetError, resolve_dataset

    day = command_date(as_of)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    t0 = time.perf_counter()
    h = Home.from_env(home)
    try:
        ds = resolve_dataset(dataset, h)
    except DatasetError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    root = batch_dir or h.batch(ds.name)
    if not (root / f"as_of={day.isoformat()}" / "manifest.json").exists():
        from cvm.cli_batch import _run as run_batch

        err.print(f"no batch output for {day} in {root}: running the nightly batch first")
        code = run_batch(day, dataset, root, None, None, 3, True, home)
        if code:
            raise typer.Exit(code)
    try:
        inputs, size = write_report(h, dataset, day, root / f"as_of={day.isoformat()}", out, period_days)
    except ReportError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"report written to {out} ({size / 1e6:.1f} MB, {len(inputs.scores):,} customers, "
                  f"{len(inputs.cards)} model cards) in {time.perf_counter() - t0:.1f} s")


def write_report(h, dataset: str, day: date, batch_out: Path, out: Path, period_days: int = 90):
    """Gather, render and write the page atomically; returns (inputs, bytes written)."""
    from report.data import gather
    from report.html import render

    with err.status("gathering the customer tables, batch output and model cards"):
        inputs = gather(h, dataset, day, batch_out)
    with err.status("drawing the report"):
        page = render(inputs, period_days=period_days)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return inputs, len(page.encode("utf-8"))
