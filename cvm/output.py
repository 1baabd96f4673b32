"""The tables ``cvm`` prints: what a build, a training run, an offer evaluation or a
linkage measurement produced, for a person to read."""

from __future__ import annotations

import math

import pandas as pd
from rich.markup import escape
from rich.table import Table

from cvm.common import console


def print_build(result, published=None) -> None:
    """Sources, identity resolution, the snapshot's summary, its RFM segments."""
    import pyarrow.dataset as pads

    t = Table(title=f"sources of {result.dataset}")
    for col in ("table", "rows in", "used", "quarantined", "reasons"):
        t.add_column(col, justify="right" if col not in ("table", "reasons") else "left")
    for name, rep in result.sources.items():
        reasons = ", ".join(f"{r}: {n:,}" for r, n in sorted(rep["quarantined_by_reason"].items())) or "-"
        t.add_row(name, f"{rep['rows_in']:,}", f"{rep['rows_clean']:,}", f"{rep['rows_quarantined']:,}", reasons)
    console.print(t)
    if result.profiles:
        p = result.profiles
        hubs = p.get("hub_identifiers", {}).get("total", 0)
        console.print(f"identity resolution: {p['records']:,} source records -> {p['profiles']:,} customer "
                      f"profiles; {hubs:,} hub identifiers (shared by too many records) not used to link")
    df = pads.dataset(str(result.path)).to_table(
        columns=["recency_days", "frequency", "monetary", "rfm_segment"]).to_pandas()
    s = Table(title=f"feature snapshot as_of {result.as_of} ({result.engine})")
    s.add_column("measure")
    s.add_column("value", justify="right")
    s.add_row("customers", f"{result.rows:,}")
    s.add_row("features", f"{len(result.feature_set.model_features)} (+ customer_id, as_of)")
    s.add_row("feature set", result.feature_set.fingerprint())
    s.add_row("median recency (days)", f"{df.recency_days.median():.0f}")
    s.add_row("median frequency (orders / 365 d)", f"{df.frequency.median():.0f}")
    s.add_row("monetary, total (365 d)", f"{df.monetary.sum():,.2f}")
    s.add_row("rows quarantined", f"{result.rows_quarantined:,}")
    for step, secs in result.timings.items():
        s.add_row(f"time: {step}", f"{secs:.2f} s")
    if published is not None:
        s.add_row("published (online store)", f"version {published.version}")
    console.print(s)
    seg = df.rfm_segment.value_counts()
    g = Table(title="RFM segments")
    g.add_column("segment")
    g.add_column("customers", justify="right")
    g.add_column("share", justify="right")
    for name, n in seg.items():
        g.add_row(str(name), f"{n:,}", f"{n / len(df):.1%}")
    console.print(g)
    console.print(f"snapshot written to {result.path}")


def print_stats(title: str, stats: dict) -> None:
    t = Table(title=title)
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in stats.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}")
        elif isinstance(v, int):
            t.add_row(k, f"{v:,}")
        else:
            t.add_row(k, str(v))
    console.print(t)


def print_training(results) -> None:
    """One table per task: the model's test metrics next to every baseline's."""
    from training.tasks import TASK_SPECS

    for r in results:
        judged = [m for m, _ in TASK_SPECS[r.task].judged if m in r.metrics]
        shown = [r.primary, *(m for m in ("test_auc", "test_pr_auc", "test_brier", "test_ece", "test_lift_at_10pct",
                                        "test_mae", "test_rmse", "test_orders_mae", "test_orders_rmse")
                            if m in r.metrics or any(m in row for row in r.baselines.values()))]
        shown = list(dict.fromkeys(shown))
        reg = (f"v{r.registration.version} " + ("champion" if r.registration.promoted else "challenger")
               if r.registration else "not registered")
        t = Table(title=f"{r.task}: as_of {r.as_of}, horizon {r.horizon_days} d, rows train/valid/test "
                        f"{r.rows['train']:,}/{r.rows['valid']:,}/{r.rows['test']:,}, "
                        f"{r.timings.get('total', 0):.0f} s, {reg}", title_justify="left")
        t.add_column("test metric")
        t.add_column("model", justify="right")
        names = list(r.baselines)
        for name in names:
            t.add_column(name, justify="right")
        for m in shown:
            label = m.removeprefix("test_") + (" *" if m in judged else "")
            cells = [r.metrics.get(m)] + [r.baselines[n].get(m) for n in names]
            t.add_row(label, *["" if v is None or math.isnan(v) else f"{v:.4f}" for v in cells])
        console.print(t)
        verdict = "[green]beats every baseline[/]" if r.beats_all_baselines else "[red]does NOT beat every baseline[/]"
        console.print(f"  * judged metric; model {verdict}; MLflow run {r.run_id}")
        for s in r.shortfalls:
            console.print(f"  [red]shortfall[/] {escape(s)}")
        if r.registration:
            console.print(f"  registry: {escape(r.registration.reason)}")


def print_uplift(r) -> None:
    """``cvm train uplift``: every candidate and baseline on the validation period."""
    reg = (f"v{r.decision.version} " + ("champion" if r.decision.promoted else "challenger")
           if r.decision else "not registered")
    t = Table(title=f"uplift: as_of {r.as_of}, validation from {r.split}, rows train/valid "
                    f"{r.rows['train']:,}/{r.rows['valid']:,} (treated {r.rows['train_treated']:,}/"
                    f"{r.rows['valid_treated']:,}), {r.timings.get('total', 0):.0f} s, {reg}", title_justify="left")
    cols = [c for c in ("qini", "auuc", "uplift_at_10", "uplift_at_30", "true_corr", "true_mse")
            if c in r.table.columns]
    t.add_column("model", no_wrap=True)
    heads = {"qini": "Qini", "auuc": "AUUC", "uplift_at_10": "@10%", "uplift_at_30": "@30%",
             "true_corr": "true r", "true_mse": "true MSE"}
    for c in cols:
        t.add_column(heads[c], justify="right", no_wrap=True)
    kind = None
    for row in r.table.itertuples(index=False):
        if kind is not None and row.kind != kind:
            t.add_section()
        kind = row.kind
        name = f"{row.model} *" if row.model == r.chosen else (
            f"{row.model} (baseline)" if row.kind == "baseline" else row.model)
        t.add_row(name, *["" if pd.isna(getattr(row, c)) else f"{getattr(row, c):.3f}" for c in cols])
    t.caption = "* chosen; on the validation period; @k: uplift among the top k %" + (
        "; true: against the generator's true uplift" if "true_corr" in cols else "")
    console.print(t)
    for name, why in r.skipped.items():
        console.print(f"  [yellow]not fit[/] {name}: {escape(why)}")
    ratio = r.metrics.get("valid_qini_over_propensity", float("nan"))
    versus = (f"{ratio:.2f}x propensity-as-uplift" if math.isfinite(ratio)
              else "propensity-as-uplift's Qini is not above 0, so no ratio")
    console.print(f"  chosen by Qini on the later period: {r.chosen}; Qini {r.metrics['valid_qini']:.4f}, "
                  f"{versus}; MLflow run {r.run_id}")
    if r.decision:
        console.print(f"  registry: {escape(r.decision.reason)}")


def print_nbo_table(table: pd.DataFrame, dataset: str, as_of: str, horizon_days: int) -> None:
    t = Table(title=f"next-best-offer policies, {dataset}: one cross-sell offer per customer at {as_of}, "
                    f"outcome in the next {horizon_days} days (observational; logged to MLflow cvm-nbo)")
    for c in table.columns:
        t.add_column(c, justify="right" if c != "policy" else "left")
    for row in table.itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


def print_ope(result) -> None:
    """Off-policy estimates of the candidate policies: one row per candidate and estimator."""
    p, table = result.payload, result.table
    t = Table(title=f"Candidate policies on {p['rounds']:,} logged decisions {p['start']}..{p['end']} "
                    f"(reward: {p['reward']} within {p['horizon_days']} days; the log as it ran: "
                    f"{p['logged_value']:.4f})")
    cols = ["candidate", "method", "value", f"{1 - p['alpha']:.0%} interval", "supported", "ESS"]
    truth = "true_value" in table.columns
    if truth:
        cols.append("true value")
    cols.append("warnings")
    for c in cols:
        t.add_column(c, justify="left" if c in ("candidate", "method", "warnings") else "right")
    for row in table.itertuples(index=False):
        cells = [escape(row.candidate), row.method, f"{row.value:.4f}",
                 f"{row.ci_low:.4f} to {row.ci_high:.4f}" if math.isfinite(row.ci_low) else "-",
                 f"{row.n_supported:,}", f"{row.effective_sample_size:,.0f}"]
        if truth:
            cells.append(f"{row.true_value:.4f}")
        cells.append(row.warning_codes or "")
        t.add_row(*cells)
    console.print(t)
    warned = table.drop_duplicates("candidate")
    for row in warned.itertuples(index=False):
        if row.warnings:
            for w in row.warnings.split(" | "):
                console.print(f"[yellow]{escape(row.candidate)}[/]: {escape(w)}", soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)


def print_batch(nightly) -> None:
    m = nightly.manifest
    console.print(f"scored {m['rows']['scored']:,} of {m['rows']['in']:,} customers as of {nightly.as_of} "
                  f"({m['rows']['cross_sell_pairs']:,} cross-sell pairs, {m['rows']['offers']:,} offers) "
                  f"in {nightly.seconds:.1f} s (features {nightly.features_seconds:.1f} s); output {nightly.out_dir}")


def print_impact(result) -> None:
    """The measured-impact table (or why there is none)."""
    if result.report is None:
        console.print(result.payload["message"], soft_wrap=True)
        return
    report = result.report
    arms = Table(title=f"Decisions {report.start} to {report.end} (outcomes up to {report.horizon_days} days after)")
    for col in ("arm", "customers", "decisions", "impressions", "response rate", "conversion rate",
                "value / customer"):
        arms.add_column(col, justify="left" if col == "arm" else "right")
    for a in report.arms:
        arms.add_row(a.arm, f"{a.customers:,}", f"{a.decisions:,}", f"{a.impressions:,}", _pct(a.response_rate),
                     _pct(a.conversion_rate), _money(a.value_per_customer))
    console.print(arms)
    lifts = Table(title="Lift of the policy (95 % intervals)")
    for col in ("vs", "metric", "policy", "reference", "absolute [95 % CI]", "relative [95 % CI]", "verdict"):
        lifts.add_column(col)
    for lift in report.lifts:
        lifts.add_row(lift.reference, lift.metric, _num(lift.test_value), _num(lift.reference_value),
                      _interval(lift.absolute), _interval(lift.relative), lift.verdict)
    console.print(lifts)
    methods = sorted({lift.absolute.method for lift in report.lifts} | {lift.relative.method for lift in report.lifts})
    console.print("methods: " + "; ".join(m for m in methods if m), soft_wrap=True)


def _missing(v) -> bool:
    return v is None or math.isnan(v)


def _pct(v) -> str:
    return "-" if _missing(v) else f"{v:.2%}"


def _money(v) -> str:
    return "-" if _missing(v) else f"{v:,.2f}"


def _num(v) -> str:
    return "-" if _missing(v) else f"{v:.4g}"


def _interval(iv) -> str:
    if _missing(iv.estimate):
        return "-"
    lo = "?" if iv.low is None else f"{iv.low:+.4f}"
    hi = "?" if iv.high is None else f"{iv.high:+.4f}"
    return f"{iv.estimate:+.4f} [{lo}, {hi}]"


def print_simulation(result) -> None:
    """Measured vs true lift of a simulation."""
    from rich.table import Table

    table = Table(title=f"Simulation: {result.days} days, {result.customers:,} customers decided, "
                        f"{result.decisions:,} decisions")
    for col in ("comparison", "true lift", "measured [95 % CI]", "contains the truth", "verdict"):
        table.add_column(col)
    for key, m in result.measured.items():
        interval = "-" if _missing(m["estimate"]) else (
            f"{m['estimate']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]" if m["low"] is not None else
            f"{m['estimate']:+.4f}")
        table.add_row(key.replace("_vs_", " vs "), f"{m['true']:+.4f}", interval, "yes" if m["covered"] else "NO",
                      m["verdict"])
    console.print(table)
    console.print(f"wrote {result.out / 'simulation.json'}", soft_wrap=True)
