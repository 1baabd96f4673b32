"""The report's "Measured impact" section: the lift of the offer policy, read from the decision log.

``load_impact`` reads the decisions made in the report's period ``[as_of - period_days, as_of)``
(UTC) and their outcomes, and measures them with ``scoring.impact.measure_impact`` on the
randomised arms (control: no offer; exploration: a random eligible offer; policy: the policy's
best offer). Like every figure of the page it reads only what happened before ``as_of``: an
outcome counts when it happened before ``as_of`` and within the attribution horizon of its
decision, so the decisions of the period's last ``horizon_days`` are still collecting outcomes.

A log without both a control and a policy arm in the period (no log yet, a dataset whose own
campaigns were not randomised, an experiment switched off) gives a section that says so in
words instead of numbers. A missing embedded log is not created. ``section_html`` draws the
section; it takes the page's figure-to-``<div>`` function so that the plots look like the
page's others.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from base.dates import cutoff
from base.home import Home
from scoring.decisions import DecisionStoreUnavailable, SQLiteDecisionStore, open_decision_store, to_us
from scoring.impact import (
    ARMS,
    NO_DIFFERENCE,
    NOT_ENOUGH,
    POLICY_BETTER,
    POLICY_WORSE,
    GroupStats,
    ImpactReport,
    Interval,
    Lift,
    frames_from_log,
    measure_impact,
)

TITLE = "Measured impact"
HORIZON_DAYS = 28
MIN_CUSTOMERS = 100

Status = Literal["measured", "no_log", "not_randomised", "no_outcomes", "unavailable"]

#: what each arm received, for the tables
ARM_LABEL = {"control": "control group: no offer", "exploration": "exploration: a random eligible offer",
             "policy": "policy: the policy's best offer"}
REFERENCE_LABEL = {"control": "the control group (no offer)",
                   "exploration": "exploration (a random eligible offer)"}
METRIC_LABEL = {"conversion_rate": "conversion rate", "value_per_customer": "value per customer"}
SHORT_METHOD = {"conversion_rate": ("Newcombe score", "Katz log"),
                "value_per_customer": ("Welch t", "delta method")}
VERDICT_CLASS = {POLICY_BETTER: "better", POLICY_WORSE: "worse", NO_DIFFERENCE: "same", NOT_ENOUGH: "unknown"}
VERDICT_COLOUR = {POLICY_BETTER: "#2a9d8f", POLICY_WORSE: "#c0392b", NO_DIFFERENCE: "#457b9d",
                  NOT_ENOUGH: "#8d99ae"}

CSS = """
.impact .verdict{font-weight:600;padding:1px 6px;border-radius:4px;white-space:nowrap}
.impact .verdict.better{background:#d8f3ee;color:#1b6b61}.impact .verdict.worse{background:#fde2e0;color:#9a2a1e}
.impact .verdict.same{background:#e3edf6;color:#2c5a7c}.impact .verdict.unknown{background:#eceff3;color:#4a5568}
.impact ul.lifts{margin:6px 0 10px;padding-left:20px;font-size:13px}.impact ul.lifts li{margin:3px 0}
.impact td.why{text-align:left;color:#5b6675;max-width:360px}.impact p.impact-none{font-size:14px}
"""


@dataclass(frozen=True)
class MeasuredImpact:
    """What the section shows: the measurement of the period, or why there is none."""

    dataset: str
    start: date  # decisions made in [start, end), UTC
    end: date
    horizon_days: int
    status: Status
    report: ImpactReport | None = None
    decisions: int = 0  # decisions in the period
    arms: tuple[str, ...] = ()  # arms seen in the period
    outcomes_after_end: int = 0  # outcomes of the period's decisions on or after as_of: left out
    problem: str | None = None  # why the log could not be read

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def period_days(self) -> int:
        return (self.end - self.start).days

    @property
    def randomised(self) -> bool:
        return self.status == "measured"


def load_impact(home: Home, dataset: str, as_of: date, *, period_days: int, decisions_url: str | None = None,
                horizon_days: int = HORIZON_DAYS, min_customers: int = MIN_CUSTOMERS) -> MeasuredImpact:
    """Measure the decisions of ``[as_of - period_days, as_of)`` in the dataset's decision log
    (``decisions_url``, default the embedded SQLite log under the home), with the outcomes that
    happened before ``as_of``. Never creates the log."""
    start, end = as_of - timedelta(days=period_days), as_of
    lo, hi = cutoff(start), cutoff(end)
    base = {"dataset": dataset, "start": start, "end": end, "horizon_days": horizon_days}
    try:
        store = open_decision_store(decisions_url, home, dataset)
    except ValueError as exc:  # a malformed CVM_DECISIONS_URL: the page still renders, the section says why
        return MeasuredImpact(**base, status="unavailable", problem=str(exc))
    if isinstance(store, SQLiteDecisionStore) and not store.path.exists():
        return MeasuredImpact(**base, status="no_log")  # opening the store would create the file
    try:
        decisions = store.decisions(to_us(lo), to_us(hi))
        outcomes = store.outcomes(to_us(lo), to_us(hi))
    except DecisionStoreUnavailable as exc:
        return MeasuredImpact(**base, status="unavailable", problem=str(exc))
    finally:
        store.close()
    arms = tuple(a for a in ARMS if a in set(decisions["arm"]))
    counts = {"decisions": len(decisions), "arms": arms}
    if not {"control", "policy"} <= set(arms):
        return MeasuredImpact(**base, **counts, status="not_randomised")
    late = outcomes["occurred_us"].astype("int64") >= to_us(hi)
    if not (~late).any():  # randomised, but nothing came back: no response to measure (not a zero lift)
        return MeasuredImpact(**base, **counts, status="no_outcomes")
    frame, events = frames_from_log(decisions, outcomes[~late])
    try:
        report = measure_impact(frame, events, start=lo, end=hi, horizon_days=horizon_days,
                                min_customers=min_customers)
    except ValueError as exc:  # a log the measurement refuses (an unknown arm...): say so, do not guess
        return MeasuredImpact(**base, **counts, status="unavailable", problem=f"the decision log: {exc}")
    return MeasuredImpact(**base, **counts, status="measured", report=report, outcomes_after_end=int(late.sum()))


# --------------------------------------------------------------------------- drawing


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _pct(v: float | None) -> str:
    return "n/a" if _missing(v) else f"{v:.1%}"


def _money(v: float | None) -> str:
    return "n/a" if _missing(v) else f"{v:,.2f}"


def _number(v: float, metric: str, relative: bool) -> str:
    if relative:
        return f"{v:+.1%}"
    return f"{100 * v:+.1f}" if metric == "conversion_rate" else f"{v:+,.2f}"


def _signed(v: float | None, metric: str, relative: bool = False) -> str:
    if _missing(v):
        return "n/a"
    unit = " points" if metric == "conversion_rate" and not relative else ""
    return _number(v, metric, relative) + unit


def _with_ci(iv: Interval, metric: str, relative: bool = False) -> str:
    """``+20.0 points (95 % CI +9.9 to +29.6 points)``, or why there is no interval."""
    point = _signed(iv.estimate, metric, relative)
    if _missing(iv.low) or _missing(iv.high):
        why = f": {iv.note}" if iv.note else ""
        return f"{point} (no interval{why})"
    unit = " points" if metric == "conversion_rate" and not relative else ""
    return f"{point} (95 % CI {_number(iv.low, metric, relative)} to {_number(iv.high, metric, relative)}{unit})"


def _value(metric: str, v: float | None) -> str:
    return _pct(v) if metric == "conversion_rate" else _money(v)


def _verdict(verdict: str) -> str:
    return f'<span class="verdict {VERDICT_CLASS.get(verdict, "unknown")}">{html.escape(verdict)}</span>'


def _data(v: float | None) -> str:
    return "" if _missing(v) else repr(float(v))


def _cell(text: str, value: float | None) -> str:
    """A number's cell: the text shown, the exact value in ``data-value`` (empty when undefined)."""
    return f'<td data-value="{_data(value)}">{text}</td>'


def _stats_row(g: GroupStats, first: list[str], attrs: str) -> str:
    cells = [f"<td>{c}</td>" for c in first] + [
        _cell(f"{g.customers:,}", g.customers), _cell(f"{g.decisions:,}", g.decisions),
        _cell(f"{g.impressions:,}", g.impressions), _cell(_pct(g.response_rate), g.response_rate),
        _cell(f"{g.converters:,}", g.converters), _cell(_pct(g.conversion_rate), g.conversion_rate),
        _cell(_money(g.value_per_customer), g.value_per_customer)]
    return f"<tr {attrs}>{''.join(cells)}</tr>"


_STATS_HEAD = ("<th>customers</th><th>decisions</th><th>impressions</th><th>response rate</th>"
               "<th>converting customers</th><th>conversion rate</th><th>value per customer</th>")


def _arms_table(report: ImpactReport) -> str:
    rows = [_stats_row(g, [html.escape(ARM_LABEL[g.arm])], f'data-arm="{g.arm}"') for g in report.arms]
    return (f'<table class="impact-arms"><thead><tr><th>arm</th>{_STATS_HEAD}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _offers_table(report: ImpactReport) -> str:
    if not report.offers:
        return '<p class="note">no rows</p>'
    order = sorted(report.offers, key=lambda g: (g.offer_id is None, g.offer_id or "", ARMS.index(g.arm)))
    rows = []
    for g in order:
        offer = "(nothing eligible)" if g.offer_id is None else html.escape(g.offer_id)
        if g.arm == "control" and g.offer_id is not None:
            offer += " (would have been offered)"
        rows.append(_stats_row(g, [offer, g.arm], f'data-offer="{html.escape(g.offer_id or "")}" data-arm="{g.arm}"'))
    return (f'<table class="impact-offers"><thead><tr><th>offer</th><th>arm</th>{_STATS_HEAD}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def plain_reason(lift: Lift, report: ImpactReport) -> str:
    """Why the verdict, in words (from the same thresholds as ``measure_impact``'s verdict; its
    own, technical ``reason`` is kept as the tooltip)."""
    m, iv, ref = lift.metric, lift.absolute, lift.reference
    against = REFERENCE_LABEL.get(ref, ref)
    if lift.verdict == POLICY_BETTER:
        return f"the whole interval is above 0: the policy does better than {against}"
    if lift.verdict == POLICY_WORSE:
        return f"the whole interval is below 0: the policy does worse than {against}"
    if lift.verdict == NO_DIFFERENCE:
        return "the interval contains 0 and is narrow: any difference is small"
    if lift.verdict != NOT_ENOUGH:
        return lift.reason
    small = [f"{arm} has {n:,} customers" for arm, n in ((lift.test, lift.test_customers),
                                                        (ref, lift.reference_customers)) if n < report.min_customers]
    if small:
        return f"{' and '.join(small)}; at least {report.min_customers:,} per arm are needed"
    if iv.width is None:
        return f"no interval: {iv.note}" if iv.note else "no interval"
    side = ""
    if iv.low > 0 or iv.high < 0:
        side = (f" The interval excludes 0 (the policy looks {'better' if iv.low > 0 else 'worse'}), but the size of "
                "the difference is not known precisely enough yet.")
    if m == "conversion_rate":
        return (f"the interval is {100 * iv.width:.1f} points wide, more than the {100 * report.max_ci_width:g} "
                f"points needed to call it.{side}")
    scale = lift.reference_value or 0.0
    if scale <= 0:
        return f"{ref} has no conversion value: the precision cannot be judged"
    return (f"the interval is {iv.width:,.2f} wide, more than {report.max_relative_ci_width:.0%} of {ref}'s value "
            f"per customer ({scale:,.2f}).{side}")


def _lift_sentence(lift: Lift, report: ImpactReport) -> str:
    m = lift.metric
    return (f"<li><b>{METRIC_LABEL[m].capitalize()}, policy vs {html.escape(REFERENCE_LABEL[lift.reference])}"
            f":</b> {_value(m, lift.test_value)} vs {_value(m, lift.reference_value)}, "
            f"{html.escape(_with_ci(lift.absolute, m))}; relative {html.escape(_with_ci(lift.relative, m, True))}"
            f". {_verdict(lift.verdict)}: {html.escape(plain_reason(lift, report))}</li>")


def _lifts_table(report: ImpactReport) -> str:
    rows = []
    for x in report.lifts:
        m = x.metric
        key = f"{m}:{x.test}_vs_{x.reference}"
        absolute, relative = SHORT_METHOD[m]
        cells = [f"<td>policy vs {x.reference}</td>", f"<td>{METRIC_LABEL[m]}</td>",
                 _cell(_value(m, x.test_value), x.test_value), _cell(_value(m, x.reference_value), x.reference_value),
                 _cell(html.escape(_with_ci(x.absolute, m)), x.absolute.estimate),
                 _cell(html.escape(_with_ci(x.relative, m, True)), x.relative.estimate),
                 f"<td>{absolute}; {relative}</td>", f"<td>{_verdict(x.verdict)}</td>",
                 f'<td class="why" title="{html.escape(x.reason)}">{html.escape(plain_reason(x, report))}</td>']
        rows.append(f'<tr data-lift="{key}" data-verdict="{html.escape(x.verdict)}" '
                    f'data-low="{_data(x.absolute.low)}" data-high="{_data(x.absolute.high)}">{"".join(cells)}</tr>')
    head = ("<th>comparison</th><th>metric</th><th>policy</th><th>reference</th><th>absolute lift</th>"
            "<th>relative lift</th><th>method (absolute; relative)</th><th>verdict</th><th>why</th>")
    return f'<table class="impact-lifts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def forest_figures(report: ImpactReport, go) -> list:
    """One forest plot per metric: the policy's absolute lift over each reference with its 95 %
    interval, a zero line, coloured by verdict; lifts without an estimate are left out."""
    figures = []
    for metric in ("conversion_rate", "value_per_customer"):
        scale = 100.0 if metric == "conversion_rate" else 1.0
        lifts = [x for x in report.lifts if x.metric == metric and not _missing(x.absolute.estimate)]
        if not lifts:
            continue
        fig = go.Figure()
        for x in lifts:
            iv = x.absolute
            est = iv.estimate * scale
            bounds = iv.low is not None and iv.high is not None
            err = ({"type": "data", "symmetric": False, "array": [iv.high * scale - est],
                    "arrayminus": [est - iv.low * scale], "thickness": 2, "width": 8} if bounds else None)
            ci = (f"95 % CI {iv.low * scale:+,.2f} to {iv.high * scale:+,.2f}" if bounds
                  else f"no interval ({iv.note})")
            fig.add_scatter(x=[est], y=[f"vs {x.reference}"], mode="markers+text", error_x=err, name=x.verdict,
                            text=[x.verdict], textposition="top center", cliponaxis=False,
                            textfont={"color": VERDICT_COLOUR.get(x.verdict, "#8d99ae")},
                            marker={"size": 11, "color": VERDICT_COLOUR.get(x.verdict, "#8d99ae")},
                            hovertemplate=f"policy vs {x.reference}: %{{x:+,.2f}}<br>{html.escape(ci)}<br>"
                                          f"{html.escape(x.verdict)}<extra></extra>", showlegend=False)
        fig.add_vline(x=0, line_dash="dot", line_color="grey")
        unit = "percentage points" if metric == "conversion_rate" else "value per customer"
        fig.update_layout(title=f"Lift in {METRIC_LABEL[metric]}, 95 % CI",
                          xaxis={"title": f"policy minus reference, {unit} (0 = no effect)", "zeroline": False},
                          yaxis={"type": "category", "autorange": "reversed"})
        figures.append(fig)
    return figures


def _no_numbers(imp: MeasuredImpact, number: str) -> str:
    period = f"decisions made from {imp.start} to {imp.last_day}, the {imp.period_days} days before {imp.end}"
    if imp.status == "unavailable":
        body = (f'<p class="warn">The decision log could not be read, so the measured impact is not shown: '
                f"{html.escape(imp.problem or 'unknown error')}</p>")
    else:
        if imp.status == "no_log":
            what = "no decision has been logged for this dataset yet"
        elif imp.decisions == 0:
            what = "the decision log holds no decision made in this period"
        elif imp.status == "no_outcomes":
            what = (f"the decision log holds {imp.decisions:,} decisions made in this period with a control group, "
                    "but no outcome (impression, click, conversion) has been reported for them, so there is no "
                    "response to compare; report outcomes with POST /outcomes or cvm outcomes ingest")
        else:
            arms = ", ".join(imp.arms)
            what = (f"the decision log holds {imp.decisions:,} decisions made in this period, but only in the "
                    f"{arms} arm{'s' if len(imp.arms) > 1 else ''}: without both a control group and the policy "
                    "there is no comparison")
        cj = ("Complete Journey's own campaigns were not randomised, so their effect cannot be measured (the "
              "campaign section below shows it, observationally); " if imp.dataset == "completejourney" else
              "Only decisions logged with a randomised control group can be measured; ")
        body = (f'<p class="impact-none"><b>No randomised decisions in this period</b> ({html.escape(period)}): '
                f"{html.escape(what)}. {cj}decisions logged by the service and the nightly batch, with their "
                "control group, will appear here.</p>"
                f'<p class="note">The nightly batch of a date decides at 00:00 of that date, so its decisions '
                f"count in the reports of later dates.</p>")
    return (f'<section id="impact" class="impact" data-randomised="false" data-status="{imp.status}">'
            f"<h2>{number}{TITLE}</h2>{body}</section>")


def section_html(imp: MeasuredImpact | None, div: Callable[..., str], go, number: str = "") -> str:
    """The section; ``div(fig, height)`` turns a plotly figure into the page's ``<div>``."""
    if imp is None:
        return (f'<section id="impact" class="impact" data-randomised="false" data-status="not_read">'
                f'<h2>{number}{TITLE}</h2><p class="note">the decision log was not read for this page</p></section>')
    if imp.report is None:
        return _no_numbers(imp, number)
    r = imp.report
    final = (imp.end - timedelta(days=imp.horizon_days))
    intro = (f"Decisions made from {imp.start} to {imp.last_day} (the {imp.period_days} days before {imp.end}), "
             f"with the outcomes that happened before {imp.end} within {imp.horizon_days} days of their decision. "
             "Customers were assigned to an "
             "arm at random, so the arms differ only by what they were offered: the differences below are the "
             "policy's effect, within the stated uncertainty. Each customer counts once per arm (the unit of "
             "randomisation); every assigned customer counts, shown the offer or not (intention to treat).")
    if final > imp.start:
        intro += (f" Decisions made on or after {final} have had less than {imp.horizon_days} days for their "
                  "outcomes: their conversions may still come in.")
    else:
        intro += (f" None of the period's decisions has had its full {imp.horizon_days} days for outcomes yet: "
                  "conversions may still come in.")
    rule = (f"A verdict needs at least {r.min_customers:,} customers in each arm and an interval narrow enough to "
            f"read (conversion rate: at most {100 * r.max_ci_width:g} points wide; value per customer: at most "
            f"{r.max_relative_ci_width:.0%} of the reference's value per customer); otherwise it says "
            f"\u201c{NOT_ENOUGH}\u201d. Intervals at {r.confidence:.0%} confidence, not corrected for the "
            f"{len(r.lifts)} comparisons.")
    methods = sorted({x.absolute.method for x in r.lifts} | {x.relative.method for x in r.lifts})
    plots = "".join(f"<div>{div(f, 260)}</div>" for f in forest_figures(r, go))
    q = r.quality
    warnings = []
    if q.customers_in_several_arms:
        warnings.append(f"{q.customers_in_several_arms:,} customers had decisions in more than one arm (their "
                        "assignment changed within the period): each counts in every arm they were in.")
    ignored = q.outcome_before_decision + q.outcome_beyond_horizon + q.outcome_of_unknown_decision
    notes = [f"{q.outcomes_counted:,} outcomes counted"]
    if ignored:
        notes.append(f"{ignored:,} left out (before their decision, after the {imp.horizon_days}-day horizon or "
                     "of an unknown decision)")
    if imp.outcomes_after_end:
        notes.append(f"{imp.outcomes_after_end:,} on or after {imp.end} left out (after the report's date)")
    warn_html = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings)
    return (f'<section id="impact" class="impact" data-randomised="true" data-status="measured">'
            f"<h2>{number}{TITLE}</h2><p class=\"note\">{html.escape(intro)}</p>"
            f'<ul class="lifts">{"".join(_lift_sentence(x, r) for x in r.lifts)}</ul>{warn_html}'
            f'<div class="grid2">{plots}</div>'
            f"<h3>Per arm</h3>{_arms_table(r)}"
            f'<p class="note">Response rate: decisions with an impression and a click or accept, over decisions '
            f"with an impression. Conversion rate: customers with a conversion, over the arm's customers. Value per "
            f"customer: conversion value over the arm's customers. {'; '.join(notes)}.</p>"
            f"<h3>Lift of the policy</h3>{_lifts_table(r)}"
            f'<p class="note">{html.escape(rule)} Methods: {html.escape("; ".join(methods))}.</p>'
            f"<h3>Per offer</h3>{_offers_table(r)}"
            '<p class="note">Control customers received no offer: their rows are keyed by the offer the policy would '
            "have made them, so a control row compares with the policy row of the same offer. Exploration rows "
            "(random offers) show how each offer does when given at random.</p></section>")
