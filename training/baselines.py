"""What a marketer or the CLV literature would do without a model, scored on the same rows.

Each baseline is a rule over the snapshot columns of the test rows (no labels of the test
snapshot are read; ``popularity`` reads the *training* labels). Scores only need to rank
(higher = more likely to have the label); ``bgnbd`` scores are probabilities, so their
Brier score and calibration are meaningful too. ``values`` are predictions of a quantity
(orders for next-purchase, spend for clv), judged by MAE / RMSE.

| task          | scores                                      | values                          |
| ------------- | ------------------------------------------- | ------------------------------- |
| churn         | recency, rfm_score, bgnbd (1 - P(buy in H)) |                                 |
| next-purchase | recency, rfm_score, bgnbd (P(buy in H))     | bgnbd, historical_rate          |
| cross-sell    | popularity, recent_activity, category_recency |                               |
| clv           |                                             | bgnbd_gamma_gamma, last_period, historical_rate |

BG/NBD (+ Gamma-Gamma) is fitted on the test snapshot's own features, which only hold data
from before the test origin: the textbook calibration-period fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.definitions import slug
from training.bgnbd import BGNBD


@dataclass
class Baselines:
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="float64", na_value=np.nan)


def rfm_score(frame: pd.DataFrame) -> np.ndarray:
    """r + f + m quintile scores (3..15, higher = better customer)."""
    return _col(frame, "r_score") + _col(frame, "f_score") + _col(frame, "m_score")


def historical_rate(frame: pd.DataFrame, column: str, horizon_days: int) -> np.ndarray:
    """The customer's own rate so far (``column`` per day since the first order) times H."""
    return _col(frame, column) / (_col(frame, "tenure_days") + 1.0) * horizon_days


def last_period(frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Spend in the recent window closest to H, scaled to H days ("next period = last period")."""
    windows = sorted(int(m.group(1)) for c in frame.columns if (m := re.fullmatch(r"spend_(\d+)d", c)))
    if not windows:
        return historical_rate(frame, "spend_total", horizon_days)
    w = min(windows, key=lambda d: (abs(d - horizon_days), -d))
    return np.clip(_col(frame, f"spend_{w}d"), 0.0, None) * horizon_days / w


def _bgnbd(test: pd.DataFrame, horizon_days: int, fitted: BGNBD | None, spend: bool) -> pd.DataFrame:
    """BG/NBD (+ Gamma-Gamma) outputs for every test row, from ``fitted`` or a fit on the
    test snapshot (``BGNBD.fit`` counts a customer repeated per category once)."""
    model = fitted if fitted is not None else BGNBD(spend=spend).fit(test)
    return model.transform(test, horizon_days)


def _recent_orders(frame: pd.DataFrame) -> np.ndarray:
    windows = sorted(int(m.group(1)) for c in frame.columns if (m := re.fullmatch(r"orders_(\d+)d", c)))
    base = _col(frame, f"orders_{windows[0]}d") if windows else _col(frame, "frequency")
    # ties (same count) broken by recency: the more recent order ranks first
    return base + 1.0 / (2.0 + _col(frame, "recency_days"))


def _category_days(frame: pd.DataFrame) -> np.ndarray:
    out = np.full(len(frame), np.nan)
    cats = frame["category"].astype("str").to_numpy()
    for c in np.unique(cats):
        col = f"days_since_{slug(c)}"
        if col in frame.columns:
            hit = cats == c
            out[hit] = frame.loc[hit, col].to_numpy(dtype="float64", na_value=np.nan)
    return out


def baselines(task: str, train: pd.DataFrame, test: pd.DataFrame, horizon_days: int,
              bgnbd: BGNBD | None = None) -> Baselines:
    """Baseline scores and values for every row of ``test`` (see the module table).

    ``bgnbd``: a BG/NBD + Gamma-Gamma model already fitted on the test snapshot (the
    training pipeline's), saving a second fit; fitted here when not given."""
    out = Baselines()
    if task in ("churn", "next-purchase"):
        sign = 1.0 if task == "churn" else -1.0
        out.scores["recency"] = sign * _col(test, "recency_days")
        out.scores["rfm_score"] = -sign * rfm_score(test)
        bg = _bgnbd(test, horizon_days, bgnbd, spend=False)
        p_buy = bg["bgnbd_p_purchase"].to_numpy()
        out.scores["bgnbd"] = 1.0 - p_buy if task == "churn" else p_buy
        if task == "next-purchase":
            out.values["bgnbd"] = bg["bgnbd_expected_purchases"].to_numpy()
            out.values["historical_rate"] = historical_rate(test, "orders_total", horizon_days)
    elif task == "cross-sell":
        latest = train[train["as_of"] == train["as_of"].max()]
        rate = latest.groupby("category", observed=True)["label"].mean()
        out.scores["popularity"] = test["category"].map(rate).astype("float64").fillna(0.0).to_numpy()
        out.scores["recent_activity"] = _recent_orders(test)
        days = _category_days(test)
        # bought the category before (long ago) beats never; sooner beats later
        out.scores["category_recency"] = np.where(np.isnan(days), 0.0, 1.0 / (1.0 + days))
    elif task == "clv":
        bg = _bgnbd(test, horizon_days, bgnbd, spend=True)
        out.values["bgnbd_gamma_gamma"] = bg["bgnbd_expected_spend"].to_numpy()
        out.values["last_period"] = last_period(test, horizon_days)
        out.values["historical_rate"] = np.clip(historical_rate(test, "spend_total", horizon_days), 0.0, None)
    else:
        raise ValueError(f"unknown task {task!r}")
    return out
