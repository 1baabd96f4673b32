"""A starter offer catalog (``cvm nbo init``): categories in, commented YAML text out.

One cross-sell offer per category (value model ``category_spend``), one retention offer
(``clv_share``), one upsell (``basket_uplift``) and one loyalty offer (``clv_share``),
three channels, catalog-wide contact caps and the ``experiment`` section with its
defaults. Every field carries a comment saying what it does, for the user to edit. The
text is validated (``scoring.catalog.parse_catalog``, against the same categories) before
it is returned: a starter catalog always loads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import yaml

from features.definitions import SEGMENTS
from scoring.catalog import SCORE_NAMES, Catalog, Experiment, parse_catalog

#: offer ids are ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``
_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_ID = 64


def _q(text: str) -> str:
    """``text`` as a double-quoted YAML scalar (any category name survives the round trip)."""
    out = yaml.safe_dump(str(text), default_style='"', allow_unicode=True, width=10**9).strip()
    return out.removesuffix("...").strip()


def offer_ids(categories: Sequence[str]) -> list[str]:
    """``xs-<category>`` per category, reduced to the characters an offer id allows, unique."""
    ids: list[str] = []
    for c in categories:
        base = _ID_CHARS.sub("-", str(c).strip().lower()).strip("-_.") or "category"
        base = f"xs-{base}"[:MAX_ID]
        candidate, n = base, 2
        while candidate in ids or candidate in ("ret-winback", "up-basket", "loy-vip"):
            suffix = f"-{n}"
            candidate, n = base[:MAX_ID - len(suffix)] + suffix, n + 1
        ids.append(candidate)
    return ids


def starter_catalog(categories: Sequence[str], *, dataset: str, categories_from: str) -> str:
    """The YAML text of a starter catalog over ``categories`` (the cross-sell targets:
    they must be categories the cross-sell champion scores); ``categories_from`` says where
    they came from, for the file's header."""
    categories = list(dict.fromkeys(str(c) for c in categories))
    categories_from = " ".join(str(categories_from).split())  # one comment line
    exp = Experiment()
    horizon = Catalog.model_fields["horizon_days"].default
    xs_lines: list[str] = []
    for oid, category in zip(offer_ids(categories), categories):
        xs_lines += [
            f"  - id: {oid}",
            f"    name: {_q(f'Try {category}: 10 % off your first basket'[:200])}",
            "    type: cross_sell",
            f"    target_category: {_q(category)}",
            "    cost: 0.30",
            "    value: {model: category_spend, margin: 0.25}",
            "    channels: [email, app]",
            "    cooldown_days: 14",
        ]
    if not xs_lines:
        xs_lines = ["  # (no cross_sell offer: the dataset has no product categories the cross-sell model scores)"]
    header = f"""\
# Offer catalog of dataset {dataset!r}: a STARTER written by `cvm nbo init`. Edit it, then check it:
#   cvm nbo check --dataset <dataset>          (or: cvm nbo check THIS_FILE)
# Every field is strictly checked: an unknown field, a bad value or a target category the cross-sell
# model does not score is an error naming the offer and the field. Costs and values are in `currency`.
#
# The engine ranks an offer by   priority = propensity x value x lever - cost
#   propensity: cross_sell -> the cross-sell probability of the target category; retention -> the churn
#               probability; upsell and loyalty -> the next-purchase probability.
#   value (value.model): category_spend -> margin x a buyer's spend in the category over horizon_days;
#               clv_share -> rate x predicted CLV; basket_uplift -> rate (spend uplift) x margin x expected
#               orders x average order value; fixed -> amount.
#
# Cross-sell categories ({len(categories)}) from {categories_from}.
# Names, costs, margins and rates below are placeholders: set them from your own offers.
"""
    body = f"""
version: "starter-1"          # recorded with every decision: change it when you change the offers
currency: USD                 # the currency of costs and values (a label; nothing is converted)
horizon_days: {horizon}              # days of category spend a cross_sell offer's value counts
channels: [email, app, sms]   # every channel an offer may use; /recommend's `channel` must be one of them

contact_policy:               # caps across all offers, per customer, from the contact history and the decision log
  caps:
    - {{max_contacts: 3, window_days: 30}}     # at most 3 contacts in any 30 days
    - {{max_contacts: 12, window_days: 365}}   # and 12 a year
  min_expected_value: 0.0     # an offer whose priority is not above this is never recommended

experiment:                   # randomised arms: every decision is assigned one by a hash of (customer, salt, period)
  salt: {_q(exp.salt)}                 # a new salt re-draws every customer's arm
  period_days: {exp.period_days}             # a customer keeps an arm this many days (periods count from epoch)
  epoch: {exp.epoch.isoformat()}
  control_share: {exp.control_share}          # share held out with no offer (the global control group: measures lift)
  exploration_share: {exp.exploration_share}      # share given a uniformly random eligible offer (learns about the others)

# Each offer:
#   id                 unique, letters, digits, `_`, `.`, `-` (at most 64)
#   name               shown to the user of the answer
#   type               cross_sell | retention | upsell | loyalty
#   target_category    cross_sell: the category offered (one the cross-sell model scores)
#   cost               per contact: coupon face value x redemption, postage, ...
#   lever              optional business weight (default 1.0, above 0, at most 10)
#   value              {{model: ..., margin: 0..1, rate: 0..1, amount: >= 0}} (see the header)
#   channels           the catalog's channels this offer may go out on
#   cooldown_days      not again within this many days of this offer's last contact
#   cap                optional, this offer's own cap: {{max_contacts: N, window_days: D}}
#   eligibility        optional: segments: [...], exclude_segments: [...], known_customers_only: true,
#                      exclude_if_bought_within_days: N (needs target_category),
#                      score_ranges: {{<score>: {{min: x, max: y}}}}
#                      segments: {", ".join(SEGMENTS)}
#                      scores: {", ".join(SCORE_NAMES)}
#   campaign_ids       optional: past campaigns of the dataset that were this offer (they count as contacts)
#   suppression        optional outcome rules: [{{outcome: reject, count: 2, within_days: 30, pause_days: 60}}]
offers:
  # --- cross-sell: one per category; value = margin x a buyer's spend in the category
{chr(10).join(xs_lines)}
  # --- retention: aimed at customers likely to churn; value = rate x predicted CLV saved
  - id: ret-winback
    name: "We miss you: a voucher off your next order"
    type: retention
    cost: 1.00
    value: {{model: clv_share, rate: 0.15}}
    channels: [email, sms]
    eligibility:
      score_ranges: {{churn_probability: {{min: 0.4}}}}   # only customers with churn probability >= 0.4
  # --- upsell: a bigger basket; value = rate x margin x expected orders x average order value
  - id: up-basket
    name: "Spend a little more, get a reward back"
    type: upsell
    cost: 0.40
    value: {{model: basket_uplift, rate: 0.10, margin: 0.30}}
    channels: [app, email]
  # --- loyalty: reward the best customers; value = rate x predicted CLV
  - id: loy-vip
    name: "VIP early access"
    type: loyalty
    cost: 0.30
    value: {{model: clv_share, rate: 0.03}}
    channels: [email]
    eligibility: {{segments: [champions, loyal], known_customers_only: true}}
"""
    text = header + body
    parse_catalog(yaml.safe_load(text), f"starter catalog of {dataset!r}", categories)
    return text
