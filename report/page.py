"""Write the report for one dataset and as_of: gather, render, swap the file in whole."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from base.atomic import write_text
from base.home import Home
from report.data import ReportInputs, gather
from report.html import PERIOD_DAYS, render


def write_report(home: Home, dataset: str, as_of: date, batch_out: Path, out: Path, *,
                 period_days: int = PERIOD_DAYS, status=None, decisions_url: str | None = None
                 ) -> tuple[ReportInputs, int]:
    """Gather the inputs, render the page and write it atomically to ``out``; returns the
    inputs and the bytes written. ``decisions_url`` is the decision log (default
    ``CVM_DECISIONS_URL``, else the dataset's embedded log). ``status(message)`` may be a
    context manager factory (a spinner) wrapped around each of the two long steps."""
    from contextlib import nullcontext

    say = status or (lambda _message: nullcontext())
    with say("gathering the customer tables, batch output, model cards and decision log"):
        inputs = gather(home, dataset, as_of, batch_out, period_days=period_days, decisions_url=decisions_url)
    with say("drawing the report"):
        page = render(inputs, period_days=period_days)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, page)
    return inputs, len(page.encode("utf-8"))
