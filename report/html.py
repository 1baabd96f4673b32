"""The customer-value report as one self-contained HTML page (plotly.js inlined, no network).

``render(inputs)`` takes what ``report.data.gather`` collected and returns the page. Every
KPI tile carries its exact value in ``data-value`` so that tools (and the tests) read the
same number the batch output gives.
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from report import impact, metrics, ope, segments
from report.cards import ModelCard
from report.data import ReportInputs

PERIOD_DAYS = 90
CAMPAIGN_WEEKS = 4

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
header{background:#1d2430;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1dc;font-size:13px}
main{padding:8px 32px 48px;max-width:1280px}section{background:#fff;border-radius:8px;padding:16px 20px;
margin:18px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
.tile{border:1px solid #e3e6ea;border-radius:6px;padding:10px 12px}.tile .v{font-size:24px;font-weight:600}
.tile .l{font-size:12px;color:#5b6675}.note{font-size:12px;color:#5b6675}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:12px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border-bottom:1px solid #e3e6ea;padding:3px 8px;
text-align:right}th:first-child,td:first-child{text-align:left}.warn{color:#9a3412}
"""


def _fmt(v: float, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "money":
        return f"{v:,.2f}"
    return f"{v:,.3f}"


def _tile(key: str, label: str, value: float, kind: str) -> str:
    exact = "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else repr(float(value))
    return (f'<div class="tile" data-kpi="{key}" data-value="{exact}"><div class="v">{_fmt(value, kind)}</div>'
            f'<div class="l">{html.escape(label)}</div></div>')


def _table(frame: pd.DataFrame, float_format: str = "{:,.3f}", index: bool = False) -> str:
    if frame is None or frame.empty:
        return '<p class="note">no rows</p>'
    f = frame.reset_index() if index else frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in f.columns)
    rows = []
    for r in f.itertuples(index=False):
        cells = []
        for v in r:
            if isinstance(v, (float, np.floating)):
                cells.append("" if not np.isfinite(v) else float_format.format(v))
            else:
                cells.append(html.escape(str(v)))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


class _Figures:
    """plotly figures as <div>s; plotly.js itself is inlined once in the page head."""

    def __init__(self) -> None:
        self.n = 0

    def div(self, fig, height: int = 360) -> str:
        self.n += 1
        fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 45}, template="plotly_white",
                          font={"size": 11})
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{self.n}",
                           config={"displaylogo": False, "responsive": True})


def render(inp: ReportInputs, *, period_days: int = PERIOD_DAYS, campaign_weeks: int = CAMPAIGN_WEEKS) -> str:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    figs = _Figures()
    k = metrics.kpis(inp.daily, inp.scores, inp.as_of, period_days)
    parts = [_kpi_section(k)]
    parts.append(_cohort_section(inp, figs, go))
    parts.append(_segment_section(inp, figs, go, period_days))
    parts.append(segments.section_html(inp.segment_sizes, figs.div, go, number="3b. ", as_of=inp.as_of))
    parts.append(_clv_section(inp, figs, go))
    parts.append(_model_section(inp, figs, go))
    parts.append(_nbo_section(inp, figs, go))
    parts.append(impact.section_html(inp.impact, figs.div, go, number="7. "))
    parts.append(_campaign_section(inp, figs, go, campaign_weeks))
    m = inp.manifest
    models = ", ".join(f"{v['name']} v{v['version']}" for v in m.get("models", {}).values()) or "none"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"dataset": inp.dataset, "as_of": inp.as_of.isoformat(), "models": m.get("models", {}),
            "snapshot": m.get("snapshot", {}).get("feature_set_fingerprint")}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>CVM report: {html.escape(inp.dataset)} as of {inp.as_of}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}{impact.CSS}</style>
<script>/* errors are counted on the root element: data-js-errors (read by the tests and by monitoring) */
window.cvmErrors=[];window.addEventListener("error",function(e){{window.cvmErrors.push(String(e.message));
document.documentElement.setAttribute("data-js-errors",String(window.cvmErrors.length));}});</script>
<script type="text/javascript">{get_plotlyjs()}</script>
<script type="application/json" id="cvm-report-meta">{html.escape(json.dumps(meta, default=str), quote=False)}</script>
</head><body>
<header><h1>Customer value report: {html.escape(inp.dataset)}, as of {inp.as_of}</h1>
<p>{k.customers_scored:,} customers scored by the nightly batch ({html.escape(models)}); last period = the
{period_days} days before {inp.as_of}; generated {generated}. Every figure uses data strictly before {inp.as_of}.</p>
</header><main>
{''.join(parts)}
</main>
<script>window.addEventListener("load",function(){{document.documentElement.setAttribute("data-plots",
String(document.querySelectorAll(".js-plotly-plot .main-svg").length>0?document.querySelectorAll(".js-plotly-plot").length:0));}});</script>
</body></html>
"""


def _kpi_section(k: metrics.Kpis) -> str:
    tiles = "".join([
        _tile("active_customers", f"active customers (ordered in the last {k.period_days} days)",
              k.active_customers, "int"),
        _tile("churn_rate", "churn rate: active the period before, no order in the last", k.churn_rate, "pct"),
        _tile("retention_rate", "retention rate (1 - churn rate)", k.retention_rate, "pct"),
        _tile("revenue", f"revenue, last {k.period_days} days", k.revenue, "money"),
        _tile("arpu", "ARPU: revenue per active customer", k.arpu, "money"),
        _tile("clv_mean", "average predicted CLV", k.clv_mean, "money"),
        _tile("clv_median", "median predicted CLV", k.clv_median, "money"),
        _tile("top20_revenue_share", "revenue share of the top 20 % of buyers", k.top20_revenue_share, "pct"),
    ])
    return f'<section id="kpis"><h2>1. Key figures</h2><div class="tiles">{tiles}</div></section>'


def _cohort_section(inp: ReportInputs, figs: _Figures, go) -> str:
    retention, revenue, size = metrics.cohorts(inp.daily, inp.as_of)
    if retention.empty:
        return '<section id="cohorts"><h2>2. Acquisition cohorts</h2><p class="note">no complete month</p></section>'
    labels = [f"{c} ({size[c]:,})" for c in retention.index]
    heat = go.Figure(go.Heatmap(z=retention.to_numpy(), x=[str(c) for c in retention.columns], y=labels,
                                colorscale="Blues", zmin=0, zmax=1, hovertemplate="cohort %{y}<br>month +%{x}: "
                                "%{z:.1%}<extra></extra>"))
    heat.update_layout(title="Share of each cohort ordering n months after its first", xaxis_title="months since "
                       "first order", yaxis={"autorange": "reversed"})
    rev = go.Figure(go.Heatmap(z=revenue.to_numpy(), x=[str(c) for c in revenue.columns], y=labels,
                               colorscale="Greens", hovertemplate="cohort %{y}<br>month +%{x}: %{z:,.0f}"
                               "<extra></extra>"))
    rev.update_layout(title="Revenue of each cohort by month since its first order", xaxis_title="months since "
                      "first order", yaxis={"autorange": "reversed"})
    note = ("A cohort is the month of a customer's first order in the data; the first month of the data holds "
            "every customer already active then. Complete months only.")
    return (f'<section id="cohorts"><h2>2. Acquisition cohorts by month</h2><p class="note">{note}</p>'
            f'<div class="grid2"><div>{figs.div(heat, 420)}</div><div>{figs.div(rev, 420)}</div></div></section>')


def _segment_section(inp: ReportInputs, figs: _Figures, go, period_days: int) -> str:
    seg = metrics.segments(inp.scores, inp.daily, inp.as_of, period_days)
    bars = go.Figure()
    bars.add_bar(x=seg.index, y=seg["customers"] / seg["customers"].sum(), name="share of customers")
    bars.add_bar(x=seg.index, y=seg["revenue_share"], name="share of last-period revenue")
    bars.update_layout(title="RFM segments: customers and revenue", yaxis={"tickformat": ".0%"}, barmode="group")
    clv = go.Figure(go.Bar(x=seg.index, y=seg["clv_mean"], marker_color="#2a9d8f"))
    clv.update_layout(title="Average predicted CLV per segment")
    table = seg.rename(columns={"clv_mean": "average CLV", "revenue_share": "revenue share"})
    mig = metrics.migration_matrix(inp.migration)
    prev = inp.manifest.get("previous_as_of")
    if mig.empty or prev is None:
        mig_html = ('<p class="note">no previous scored as_of in this batch directory: the migration matrix '
                    'appears once the batch has run for an earlier date</p>')
    else:
        heat = go.Figure(go.Heatmap(z=mig.to_numpy(), x=list(mig.columns), y=list(mig.index), colorscale="Purples",
                                    text=mig.to_numpy(), texttemplate="%{text:,}",
                                    hovertemplate="%{y} -> %{x}: %{z:,}<extra></extra>"))
        heat.update_layout(title=f"Segment migration: {prev} (rows) to {inp.as_of} (columns)",
                           xaxis_title=f"segment at {inp.as_of}", yaxis_title=f"segment at {prev}")
        mig_html = figs.div(heat, 440) + _table(mig, "{:,.0f}", index=True)
    return (f'<section id="segments"><h2>3. RFM segments</h2><div class="grid2"><div>{figs.div(bars)}</div>'
            f'<div>{figs.div(clv)}</div></div>{_table(table, "{:,.3f}", index=True)}'
            f'<h3>Migration</h3>{mig_html}</section>')


def _clv_section(inp: ReportInputs, figs: _Figures, go) -> str:
    clv = inp.scores["clv"].dropna().to_numpy(dtype="float64")
    if len(clv) == 0:
        return '<section id="clv"><h2>4. Customer lifetime value</h2><p class="note">no CLV champion</p></section>'
    hist = go.Figure(go.Histogram(x=clv, nbinsx=60, marker_color="#264653"))
    hist.update_layout(title="Predicted CLV per customer", xaxis_title="CLV", yaxis_title="customers")
    x, y = metrics.pareto(clv)
    step = max(1, len(x) // 500)
    par = go.Figure(go.Scatter(x=x[::step], y=y[::step], mode="lines", name="CLV"))
    par.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="equal")
    par.update_layout(title="Pareto: share of total CLV held by the best customers",
                      xaxis={"title": "share of customers (highest CLV first)", "tickformat": ".0%"},
                      yaxis={"title": "share of total CLV", "tickformat": ".0%"})
    top20 = metrics.top_share(clv, 0.2)
    return (f'<section id="clv"><h2>4. Customer lifetime value</h2><p class="note">The top 20 % of customers '
            f'hold {top20:.1%} of the predicted CLV.</p><div class="grid2"><div>{figs.div(hist)}</div>'
            f'<div>{figs.div(par)}</div></div></section>')


def _model_section(inp: ReportInputs, figs: _Figures, go) -> str:
    if not inp.cards:
        return '<section id="models"><h2>5. Model cards</h2><p class="warn">no champion registered</p></section>'
    return ('<section id="models"><h2>5. Model cards</h2><p class="note">Test metrics are on the test snapshot '
            'held out by time at training; every baseline is scored on the same rows.</p>'
            + "".join(_card(c, figs, go) for c in inp.cards.values()) + "</section>")


def _card(card: ModelCard, figs: _Figures, go) -> str:
    p = card.params
    head = (f'<h3 id="card-{card.task}">{html.escape(card.name)} v{html.escape(card.version)}</h3>'
            f'<p class="note">trained as of {html.escape(p.get("as_of", "?"))} on {html.escape(p.get("dataset", "?"))}'
            f'; data fingerprint <code>{html.escape(str(p.get("data_fingerprint", "?"))[:16])}</code>; feature set '
            f'<code>{html.escape(str(p.get("feature_set", "?"))[:16])}</code>; horizon {html.escape(str(p.get("horizon_days", "?")))} '
            f'days; run <code>{html.escape(card.run_id[:12])}</code></p>')
    notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in card.notes)
    plots = []
    cal = card.calibration()
    if cal is not None and not cal.empty:
        f = go.Figure()
        for name, g in cal.groupby("model", sort=False):
            f.add_scatter(x=g["mean_predicted"], y=g["observed"], mode="lines+markers", name=name)
        f.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="perfect")
        f.update_layout(title="Calibration", xaxis_title="mean predicted probability", yaxis_title="observed rate")
        plots.append(figs.div(f, 320))
    gains = card.gains()
    if gains:
        f = go.Figure()
        for name, (x, y) in gains.items():
            f.add_scatter(x=x, y=y, mode="lines", name=name, line={"width": 3 if name == "lightgbm" else 1.5})
        f.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="random")
        f.update_layout(title="Cumulative gains", xaxis={"title": "share targeted", "tickformat": ".0%"},
                        yaxis={"title": "share of outcome captured", "tickformat": ".0%"})
        plots.append(figs.div(f, 320))
    imp = card.importance.sort_values("gain", ascending=False).head(15)
    if len(imp):
        f = go.Figure(go.Bar(x=imp["gain"][::-1], y=imp["feature"][::-1], orientation="h", marker_color="#e76f51"))
        f.update_layout(title="Top features (gain)")
        plots.append(figs.div(f, 380))
    grid = "".join(f"<div>{p_}</div>" for p_ in plots)
    return f'{head}{notes}{_table(card.evaluation, "{:.4f}")}<div class="grid2">{grid}</div>'


def _nbo_section(inp: ReportInputs, figs: _Figures, go) -> str:
    if inp.offers.empty:
        return '<section id="nbo"><h2>6. Next-best offer</h2><p class="note">no offers in the batch</p></section>'
    mix = metrics.offer_mix(inp.offers)
    bar = go.Figure(go.Bar(x=mix["offer_id"], y=mix["customers"], marker_color="#457b9d",
                           customdata=mix["expected_value"], hovertemplate="%{x}: %{y:,} customers, mean EV "
                           "%{customdata:.2f}<extra></extra>"))
    bar.update_layout(title="Best offer per customer (rank 1)")
    ev = metrics.offer_value_by_segment(inp.offers, inp.scores)
    heat = go.Figure(go.Heatmap(z=ev.to_numpy(), x=list(ev.columns), y=list(ev.index), colorscale="Oranges",
                                hovertemplate="%{y} / %{x}: %{z:.2f}<extra></extra>"))
    heat.update_layout(title="Mean expected value of the best offer, by offer and segment")
    no_offer = int(inp.scores["best_offer_id"].isna().sum())
    ev_html = '<p class="note">no offline evaluation logged for this as_of: run <code>cvm nbo evaluate</code></p>'
    if inp.nbo_evaluation is not None and len(inp.nbo_evaluation):
        t = inp.nbo_evaluation
        f = go.Figure(go.Bar(x=t["policy"], y=t["hit_rate"], marker_color="#2a9d8f"))
        f.update_layout(title="Offline evaluation: customers who bought the offered category",
                        yaxis={"tickformat": ".1%"})
        ev_html = ('<p class="note">Observational: nobody received these offers; each policy picks one offer per '
                   'customer and is credited when the customer bought that category in the following days.</p>'
                   + _table(t, "{:.4f}") + figs.div(f, 320))
    return (f'<section id="nbo"><h2>6. Next-best offer</h2><p class="note">{no_offer:,} customers have no '
            f'eligible offer.</p><div class="grid2"><div>{figs.div(bar)}</div><div>{figs.div(heat)}</div></div>'
            f'<h3>Against random and most-popular</h3>{ev_html}'
            f'<h3>Incremental value</h3>{ope.uplift_html(inp.offers, inp.manifest)}'
            f'<h3>Candidate policies, off-policy</h3>{ope.ope_html(inp.ope, figs.div, go)}</section>')


def _campaign_section(inp: ReportInputs, figs: _Figures, go, weeks: int) -> str:
    eff = metrics.campaign_effect(inp.daily, inp.contacts, inp.as_of, weeks=weeks)
    title = "8. Campaign effect (observational)"
    if eff.empty:
        return f'<section id="campaigns"><h2>{title}</h2><p class="note">no campaign with {weeks} weeks of data ' \
               f'after it</p></section>'
    f = go.Figure(go.Scatter(x=eff["campaign_id"], y=eff["difference"], mode="markers",
                             error_y={"type": "data", "symmetric": False, "array": eff["ci_high"] - eff["difference"],
                                          "arrayminus": eff["difference"] - eff["ci_low"]}))
    f.add_hline(y=0, line_dash="dot", line_color="grey")
    f.update_layout(title=f"Spend in the {weeks} weeks after a campaign: contacted minus not contacted, 95 % CI",
                    xaxis={"title": "campaign (by start date)", "type": "category"},
                    yaxis_title="difference in mean spend")
    note = (f"<b>Observational, not causal.</b> Among customers who bought in the 90 days before each campaign "
            f"started, mean spend in the {weeks} weeks after its start of those the campaign contacted and of "
            "those it did not. Campaigns chose whom to contact, so the difference mixes any effect with who was "
            "picked. Interval: Welch, normal approximation.")
    return (f'<section id="campaigns"><h2>{title}</h2><p class="note">{note}</p>{figs.div(f, 380)}'
            f'{_table(eff, "{:,.2f}")}</section>')
