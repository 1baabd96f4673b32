"""The next-best-offer section's uplift and off-policy parts: only evaluations knowable before
the page's date, their numbers as written, and words instead of numbers without randomised data."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import plotly.graph_objects as go

from base.home import Home
from report.ope import NOT_RANDOMISED, load_ope, ope_html, uplift_html


def _payload(start: str, end: str, value: float, truth: bool = False) -> dict:
    rows = [{"candidate": c, "method": m, "value": value, "ci_low": value - 0.01, "ci_high": value + 0.01,
             "n_supported": 120, "effective_sample_size": 99.5, "warning_codes": "low_support" if c == "uplift" else "",
             "warnings": "the candidate picks actions the log rarely explored" if c == "uplift" else "",
             **({"true_value": 0.3} if truth else {})}
            for c in ("current", "uplift") for m in ("ips", "snips", "dr")]
    return {"start": start, "end": end, "horizon_days": 28, "rounds": 500, "reward": "convert", "alpha": 0.05,
            "logged_value": 0.25, "estimates": rows}


def _write(home: Home, payload: dict) -> None:
    d = home.batch("ds") / "ope" / f"{payload['start']}_{payload['end']}"
    d.mkdir(parents=True)
    (d / "ope.json").write_text(json.dumps(payload))


def test_only_an_evaluation_whose_outcomes_are_in_before_as_of_is_shown(tmp_path):
    home = Home(tmp_path)
    _write(home, _payload("2025-06-01", "2025-06-08", 0.1))  # outcomes in by 2025-07-06
    _write(home, _payload("2025-06-20", "2025-06-27", 0.2))  # outcomes in by 2025-07-25
    assert load_ope(home, "ds", date(2025, 7, 5)) is None
    assert load_ope(home, "ds", date(2025, 7, 6))["end"] == "2025-06-08"
    assert load_ope(home, "ds", date(2025, 7, 30))["end"] == "2025-06-27"  # the latest knowable
    assert load_ope(home, "other", date(2025, 7, 30)) is None


def _div(fig, height=None) -> str:
    return f"<div class='plot' data-traces='{len(fig.data)}'></div>"


def test_the_table_shows_each_estimate_its_interval_and_warnings():
    page = ope_html(_payload("2025-06-01", "2025-06-08", 0.3125, truth=True), _div, go)
    assert page.count("<tr>") == 1 + 6  # header + 2 candidates x 3 estimators
    assert "0.3125" in page and "0.3025 to 0.3225" in page and "true value" in page
    assert "uplift</b>: the candidate picks actions the log rarely explored" in page
    assert "data-traces='2'" in page  # SNIPS with its interval, and the truth
    assert "500 customers decided from 2025-06-01 to before 2025-06-08" in page


def test_without_randomised_data_the_page_says_why_and_shows_no_number():
    page = ope_html(None, _div, go)
    assert NOT_RANDOMISED in page and "Complete Journey has no control groups" in page
    offers = pd.DataFrame({"offer_id": ["a"], "rank": [1], "uplift": [float("nan")]})
    text = uplift_html(offers, {"uplift_model": None})
    assert "ranked on propensity" in text and NOT_RANDOMISED in text


def test_the_uplift_paragraph_reads_the_batch_offers():
    offers = pd.DataFrame({"offer_id": ["a", "b", "a"], "rank": [1, 2, 1], "uplift": [0.02, -0.05, 0.04],
                           "uplift_high": [0.05, -0.01, 0.08]})
    text = uplift_html(offers, {"uplift_model": "3"})
    # first offers: (0.02 + 0.04) / 2 = +3.00 %; one offer's interval lies wholly below zero
    assert "version 3" in text and "+3.00%" in text and "For 1 of them the whole 95 % interval lies below zero" in text
