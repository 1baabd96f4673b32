"""The next-best-offer section's parts on incremental value: which offers are ranked on uplift,
and the off-policy estimates of candidate policies (``cvm nbo evaluate --log``).

``load_ope`` picks the latest ``ope.json`` under ``$CVM_HOME/batch/<dataset>/ope/`` whose whole
evaluation was knowable before the report's ``as_of``: its window ends, plus its outcome
horizon, on or before ``as_of``. ``uplift_html`` and ``ope_html`` draw them; without a
randomised log (Complete Journey: its campaigns were targeted, not randomised) they say so in
words and show no number the data cannot support.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from base.home import Home

#: what the page says when nothing randomised is there to learn or estimate from
NOT_RANDOMISED = ("What an offer changes (its uplift) and what another policy would earn can only be measured on "
                  "contacts assigned at random: this dataset's campaigns were targeted, not randomised (Complete "
                  "Journey has no control groups), so neither is shown. The offer engine's decisions add a "
                  "randomised control group and exploration (the catalog's experiment); once they are logged, "
                  "<code>cvm train uplift</code> and <code>cvm nbo evaluate --log FROM..TO</code> read them.")


def load_ope(home: Home, dataset: str, as_of: date) -> dict | None:
    """The latest off-policy evaluation knowable before ``as_of`` (window end + horizon on or
    before it), as written by ``batch.ope_job``; None without one."""
    root = home.batch(dataset) / "ope"
    best: tuple[date, dict] | None = None
    for path in sorted(root.glob("*/ope.json")) if root.exists() else []:
        try:
            payload = json.loads(Path(path).read_text())
            end = date.fromisoformat(payload["end"])
            ready = end + timedelta(days=int(payload["horizon_days"]))
        except (OSError, ValueError, KeyError):
            continue
        if ready <= as_of and (best is None or end > best[0]):
            best = (end, payload)
    return best[1] if best else None


def uplift_html(offers: pd.DataFrame, manifest: dict) -> str:
    """Whether the batch ranked offers on incremental value, and how much the uplift model expects."""
    version = manifest.get("uplift_model")
    has = "uplift" in offers.columns and offers["uplift"].notna().any()
    if not version or not has:
        return f'<p class="note">No uplift model in this batch: offers are ranked on propensity. {NOT_RANDOMISED}</p>'
    u = offers.loc[offers["uplift"].notna()]
    best = u[u["rank"] == 1] if "rank" in u.columns else u
    negative = int((u["uplift_high"] < 0).sum()) if "uplift_high" in u.columns else 0
    return (f'<p class="note">Uplift model version {html.escape(str(version))}: {len(u):,} offers carry the '
            f"modelled change in conversion a contact causes; for customers' first offers it averages "
            f"{best['uplift'].mean():+.2%}. For {negative:,} of them the whole 95 % interval lies below zero (the "
            "contact would put the customer off); an offer ranked on uplift is never made to such a customer.</p>")


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def ope_html(payload: dict | None, div: Callable[..., str], go) -> str:
    """The off-policy table and a plot of each candidate's SNIPS estimate with its interval."""
    if payload is None:
        return ('<p class="note">No off-policy evaluation knowable before this date (window plus outcome horizon '
                'before as_of). Run <code>cvm nbo evaluate --log FROM..TO</code> on the decision log. Without '
                f'randomised decisions there is nothing to run it on: {NOT_RANDOMISED}</p>')
    t = pd.DataFrame(payload["estimates"])
    truth = "true_value" in t.columns
    rows = []
    for r in t.itertuples(index=False):
        cells = [html.escape(r.candidate), r.method, _fmt(r.value), f"{_fmt(r.ci_low)} to {_fmt(r.ci_high)}",
                 f"{int(r.n_supported):,}", f"{r.effective_sample_size:,.0f}"]
        if truth:
            cells.append(_fmt(r.true_value))
        cells.append(html.escape(r.warning_codes or ""))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["candidate", "estimator", "value per decision", f"{1 - payload['alpha']:.0%} interval", "supporting",
            "effective n", *(["true value"] if truth else []), "warnings"]
    table = (f"<table class=\"ope\"><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    s = t[t["method"] == "snips"]
    fig = go.Figure(go.Scatter(
        x=s["candidate"], y=s["value"], mode="markers", name="SNIPS",
        error_y={"type": "data", "symmetric": False, "array": (s["ci_high"] - s["value"]).tolist(),
                 "arrayminus": (s["value"] - s["ci_low"]).tolist()}))
    if truth:
        fig.add_trace(go.Scatter(x=s["candidate"], y=s["true_value"], mode="markers", name="true value",
                                 marker={"symbol": "x", "color": "#c0392b"}))
    fig.add_hline(y=payload["logged_value"], line_dash="dot", line_color="grey",
                  annotation_text="the log as it ran")
    fig.update_layout(title=f"Estimated {payload['reward']} per decision under each candidate")
    warned = t.drop_duplicates("candidate")
    warns = "".join(f"<li><b>{html.escape(r.candidate)}</b>: {html.escape(w)}</li>"
                    for r in warned.itertuples(index=False) if r.warnings for w in r.warnings.split(" | "))
    intro = (f"What each candidate policy would have earned on the {payload['rounds']:,} customers decided from "
             f"{payload['start']} to before {payload['end']} (each customer's first decision; reward: "
             f"{html.escape(payload['reward'])} within {payload['horizon_days']} days), estimated from the logged "
             "randomised decisions by inverse propensity (IPS), self-normalised IPS (SNIPS) and doubly robust (DR) "
             f"estimators, as Open Bandit Pipeline defines them. The log as it ran earned "
             f"{payload['logged_value']:.4f} per decision.")
    if truth:
        intro += " Synthetic data: the true value of each candidate, known from the generator, sits beside it."
    return (f'<div class="ope" data-rounds="{payload["rounds"]}"><p class="note">{intro}</p>{table}'
            f'{f"<ul>{warns}</ul>" if warns else ""}{div(fig, 320)}</div>')
