"""Uplift training rows: randomised assignments with their outcome, from a decision log or
from a dataset's randomised contacts.

An assignment is one customer put at random into treatment (contacted with an offer) or
control (held out), at a time, for an offer. Its label is whether the customer converted
within ``horizon_days`` after it. Two sources give them:

* **the decision log** (``from_decision_log``): the arms of the closed loop. The unit is a
  customer's *first* decision in the window: the control arm is held out for the whole
  period, so a control customer's first decision stands for all of them; a customer whose
  first decision presented an offer is treated, for that offer. A control decision carries
  the offer the policy would have made (``policy_offer_id``): the offer its no-contact
  outcome is compared with. A decision of a contacted arm that presented nothing (nothing
  was eligible) is neither and is left out. The label is a ``convert`` outcome of the
  customer within the horizon.
* **randomised contacts** (``from_contacts``): a campaign's contacts with ``group``
  treatment/control (``sources.contract``) and, when known, ``assignment_p``. The unit is a
  customer's first contact of the campaign; the label is a purchase within the horizon
  (any purchase, or one in ``category`` when the campaign is tied to one).

Honest time: only assignments whose whole label window ends before ``cutoff(as_of)`` are
kept, and only outcomes before it count. Pure: tables in, a table out.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from base.dates import cutoff

#: the columns of an assignments table
ASSIGNMENT_COLUMNS = ("customer_id", "offer_id", "treatment", "assigned_at", "assignment_p", "label", "value")


class NoRandomisedDataError(ValueError):
    """Nothing randomised to learn uplift from; the message says what is missing."""


def _empty_check(frame: pd.DataFrame, what: str) -> None:
    counts = frame["treatment"].value_counts()
    if counts.get(1, 0) == 0 or counts.get(0, 0) == 0:
        raise NoRandomisedDataError(
            f"{what}: {counts.get(1, 0)} treated and {counts.get(0, 0)} control assignments; uplift needs both")


def label_window_end(as_of: date, horizon_days: int) -> pd.Timestamp:
    """Assignments before this time have their whole label window before ``as_of``."""
    return pd.Timestamp(cutoff(as_of)) - pd.Timedelta(days=horizon_days)


def from_decision_log(decisions: pd.DataFrame, outcomes: pd.DataFrame, *, as_of: date, horizon_days: int,
                      control_arm: str = "control", start: date | None = None) -> pd.DataFrame:
    """Assignments (``ASSIGNMENT_COLUMNS``) from the log's decisions (``decision_id``,
    ``customer_id``, ``decided_us``, ``arm``, ``offer_id``, ``policy_offer_id``) and outcomes
    (``customer_id``, ``type``, ``occurred_us``, ``value``). ``start``: ignore decisions before it."""
    end = label_window_end(as_of, horizon_days)
    d = decisions.assign(assigned_at=pd.to_datetime(decisions["decided_us"], unit="us"))
    keep = d["assigned_at"] < end
    if start is not None:
        keep &= d["assigned_at"] >= pd.Timestamp(start)
    d = d[keep].sort_values(["customer_id", "assigned_at", "decision_id"], kind="stable")
    first = d.drop_duplicates("customer_id", keep="first")
    control = first["arm"] == control_arm
    treated = ~control & first["offer_id"].notna()
    first = first[(control & first["policy_offer_id"].notna()) | treated]
    control = first["arm"] == control_arm
    rows = pd.DataFrame({
        "customer_id": first["customer_id"].astype(str).to_numpy(),
        "offer_id": np.where(control, first["policy_offer_id"], first["offer_id"]).astype(object),
        "treatment": (~control).astype("int8").to_numpy(),
        "assigned_at": first["assigned_at"].to_numpy(),
        "assignment_p": np.nan,
    })
    conv = outcomes[outcomes["type"] == "convert"].assign(
        occurred_at=lambda f: pd.to_datetime(f["occurred_us"], unit="us"))
    conv = conv[conv["occurred_at"] < pd.Timestamp(cutoff(as_of))]
    return _label(rows, conv[["customer_id", "occurred_at", "value"]], horizon_days)


def from_contacts(contacts: pd.DataFrame, transactions: pd.DataFrame, *, as_of: date, horizon_days: int,
                  category_of: dict[str, str] | None = None) -> pd.DataFrame:
    """Assignments from randomised contacts (``customer_id``, ``campaign_id``, ``timestamp``,
    ``group``, optional ``assignment_p``); the label is a purchase (``transactions``:
    ``customer_id``, ``timestamp``, ``amount``, optional ``category``) within the horizon,
    in the campaign's category when ``category_of`` maps it to one. The offer is the campaign."""
    if "group" not in contacts.columns:
        raise NoRandomisedDataError("the contacts table has no `group` column (treatment/control)")
    end = label_window_end(as_of, horizon_days)
    c = contacts[contacts["group"].isin(["treatment", "control"])]
    c = c.assign(assigned_at=pd.to_datetime(c["timestamp"]))
    c = c[c["assigned_at"] < end].sort_values(["customer_id", "campaign_id", "assigned_at"], kind="stable")
    c = c.drop_duplicates(["customer_id", "campaign_id"], keep="first")
    rows = pd.DataFrame({
        "customer_id": c["customer_id"].astype(str).to_numpy(), "offer_id": c["campaign_id"].astype(str).to_numpy(),
        "treatment": (c["group"] == "treatment").astype("int8").to_numpy(), "assigned_at": c["assigned_at"].to_numpy(),
        "assignment_p": (c["assignment_p"].astype(float).to_numpy() if "assignment_p" in c.columns
                         else np.full(len(c), np.nan)),
    })
    tx = transactions.assign(occurred_at=pd.to_datetime(transactions["timestamp"]))
    tx = tx[(tx["occurred_at"] < pd.Timestamp(cutoff(as_of))) & (tx["amount"] > 0)]
    buys = tx.rename(columns={"amount": "value"})
    if category_of:
        rows["_category"] = rows["offer_id"].map(category_of)
        if "category" not in buys.columns:
            raise NoRandomisedDataError("campaigns are tied to categories but transactions have no category")
        return _label(rows, buys[["customer_id", "occurred_at", "value", "category"]], horizon_days,
                      by_category=True)
    return _label(rows, buys[["customer_id", "occurred_at", "value"]], horizon_days)


def _label(rows: pd.DataFrame, events: pd.DataFrame, horizon_days: int, by_category: bool = False) -> pd.DataFrame:
    """``label`` = an event of the customer in (assigned_at, assigned_at + horizon];
    ``value`` = the sum of their values there."""
    rows = rows.reset_index(drop=True)
    rows["_row"] = np.arange(len(rows))
    keys = ["customer_id", "_category"] if by_category else ["customer_id"]
    ev = events.rename(columns={"category": "_category"}) if by_category else events
    hit = rows[["_row", "assigned_at", *keys]].merge(ev, on=keys, how="inner")
    inside = (hit["occurred_at"] > hit["assigned_at"]) & (
        hit["occurred_at"] <= hit["assigned_at"] + timedelta(days=horizon_days))
    won = hit[inside].groupby("_row")["value"].agg(["size", lambda v: float(np.nansum(v))])
    won.columns = ["n", "value"]
    rows["label"] = rows["_row"].map(won["n"]).fillna(0).gt(0).astype("int8")
    rows["value"] = rows["_row"].map(won["value"]).fillna(0.0).astype(float)
    out = rows[list(ASSIGNMENT_COLUMNS)].sort_values(["assigned_at", "customer_id", "offer_id"], kind="stable")
    return out.reset_index(drop=True)


def split_by_time(assignments: pd.DataFrame, valid_share: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Train on the earlier assignments, validate on the later ones (never a random
    split): the split is the day at which ``valid_share`` of the assignments remain."""
    if not 0 < valid_share < 1:
        raise ValueError(f"valid_share must be between 0 and 1, got {valid_share}")
    days = assignments["assigned_at"].dt.normalize()
    split = days.quantile(1 - valid_share, interpolation="higher")
    if split <= days.min():  # a single day: nothing earlier to train on
        raise NoRandomisedDataError(f"all assignments are on one day ({days.min():%Y-%m-%d}): a later validation "
                                    "period needs assignments on at least two days")
    train, valid = assignments[days < split], assignments[days >= split]
    _empty_check(train, f"training period (before {split:%Y-%m-%d})")
    _empty_check(valid, f"validation period (from {split:%Y-%m-%d})")
    return train.reset_index(drop=True), valid.reset_index(drop=True), split
