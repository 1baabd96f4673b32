"""Conversions attributed from purchases, for decisions whose outcomes were not reported.

The rule (written next to every figure that uses it): a decision converts when its customer
buys in the target category of its offer within ``horizon_days`` after the decision; for a
control decision the offer is the policy's would-be offer (``policy_offer_id``), so both arms
are judged on the same category. The conversion is timed at the first such purchase and
valued at the customer's spend in that category within the horizon. Decisions without a
target category (nothing shown and no would-be offer, or an offer that targets none) cannot
convert by this rule. Pure: tables in, a table out.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

RULE = ("a conversion is a purchase in the offer's target category within {h} days after the decision "
        "(control: the policy's would-be offer), valued at the spend in that category in those days, from "
        "the dataset's transactions")


def attribute_conversions(decisions: pd.DataFrame, purchases: pd.DataFrame, offer_category: Mapping[str, str],
                          *, horizon_days: int = 28) -> pd.DataFrame:
    """``decisions``: decision_id, customer_id, arm, offer_id, policy_offer_id, timestamp (UTC);
    ``purchases``: customer_id, category, timestamp, amount. Returns outcomes (outcome_id,
    decision_id, type='convert', timestamp, value), one per converted decision."""
    offer = decisions["offer_id"].where(decisions["arm"] != "control", decisions["policy_offer_id"])
    targets = decisions.assign(category=offer.map(dict(offer_category)))
    targets = targets[targets["category"].notna()][["decision_id", "customer_id", "category", "timestamp"]]
    columns = ["outcome_id", "decision_id", "type", "timestamp", "value"]
    if targets.empty or purchases.empty:
        return pd.DataFrame(columns=columns)
    buys = purchases[["customer_id", "category", "timestamp", "amount"]].rename(columns={"timestamp": "bought"})
    joined = targets.merge(buys, on=["customer_id", "category"], how="inner")
    horizon = pd.Timedelta(days=horizon_days)
    inside = joined[(joined["bought"] > joined["timestamp"]) & (joined["bought"] < joined["timestamp"] + horizon)]
    if inside.empty:
        return pd.DataFrame(columns=columns)
    per = inside.groupby("decision_id").agg(timestamp=("bought", "min"), value=("amount", "sum")).reset_index()
    per["outcome_id"] = "attributed-" + per["decision_id"].astype(str)
    per["type"] = "convert"
    return per[columns]
