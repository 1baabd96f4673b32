"""The feature set, declared once: names, dtypes, meaning, order.

The builder (``features.build``) computes exactly these columns in this order; batch
scoring, training and the online store read the same declaration. A dataset's feature
set depends only on configuration and on which source tables and columns the dataset
has, never on the data of a date, so every snapshot of a dataset has the same shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from features.config import FeatureConfig

FeatureDtype = Literal["string", "date", "int64", "float64"]

#: RFM segment for each (r_score, fm_score) cell, fm_score = round-half-up((f + m) / 2).
#: Rows are r_score 5..1, columns fm_score 1..5. After the usual named-segment grid
#: (Putler's eleven segments), made total and unambiguous.
SEGMENT_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new_customers", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "loyal", "champions", "champions"),
    3: ("about_to_sleep", "need_attention", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "about_to_sleep", "at_risk", "at_risk", "cannot_lose"),
    1: ("lost", "hibernating", "at_risk", "cannot_lose", "cannot_lose"),
}
SEGMENTS = (
    "champions", "loyal", "potential_loyalists", "new_customers", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cannot_lose", "hibernating", "lost",
)


def rfm_segment(r_score: int, f_score: int, m_score: int) -> str:
    """Named segment of one customer (the builder computes the same in Ibis)."""
    fm = (f_score + m_score + 1) // 2
    return SEGMENT_GRID[r_score][fm - 1]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: FeatureDtype
    group: str
    description: str
    nullable: bool = False


@dataclass(frozen=True)
class DatasetShape:
    """What the dataset offers; decides which feature groups exist."""

    categories: tuple[str, ...] = ()
    has_discount: bool = False
    has_coupon_discount: bool = False
    has_events: bool = False
    has_contacts: bool = False
    has_responses: bool = False
    #: customer attribute columns and whether each is numeric
    attributes: tuple[tuple[str, bool], ...] = ()


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    s = _SLUG.sub("_", text.lower()).strip("_")
    return s or "blank"


@dataclass(frozen=True)
class FeatureSet:
    features: tuple[FeatureSpec, ...]
    shape: DatasetShape
    config: FeatureConfig = field(compare=False)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def dtypes(self) -> dict[str, FeatureDtype]:
        return {f.name: f.dtype for f in self.features}

    def group(self, name: str) -> list[FeatureSpec]:
        return [f for f in self.features if f.group == name]

    @property
    def model_features(self) -> list[FeatureSpec]:
        """Columns a model may use as inputs (not keys)."""
        return [f for f in self.features if f.group != "key"]

    def category_columns(self) -> dict[str, str]:
        """Main category -> its spend-share column."""
        return {c: f"spend_share_{slug(c)}" for c in self.shape.categories}

    def category_recency_columns(self) -> dict[str, str]:
        """Main category -> its days-since-last-purchase column."""
        return {c: f"days_since_{slug(c)}" for c in self.shape.categories}

    def attribute_columns(self) -> dict[str, str]:
        return {a: f"attr_{slug(a)}" for a, _ in self.shape.attributes}

    def to_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint(),
            "columns": [asdict(f) for f in self.features],
            "shape": asdict(self.shape),
            "config": self.config.model_dump(mode="json"),
        }

    def fingerprint(self) -> str:
        """Changes whenever a name, dtype or order changes, and whenever the configuration
        behind the values changes (a window, the categories, the event types, the
        abandoned-cart hours): two snapshots with one fingerprint mean the same thing in
        every column, so a model trained on one can score the other."""
        payload = json.dumps({"columns": [[f.name, f.dtype] for f in self.features],
                              "shape": asdict(self.shape), "config": self.config.model_dump(mode="json")},
                             sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def declare(config: FeatureConfig, shape: DatasetShape) -> FeatureSet:
    """The feature set of a dataset with this shape under this configuration."""
    w = config.rfm_window_days
    t = config.trend_window_days
    ew = config.event_window_days
    specs: list[FeatureSpec] = []

    def add(name: str, dtype: FeatureDtype, group: str, description: str, nullable: bool = False) -> None:
        specs.append(FeatureSpec(name, dtype, group, description, nullable))

    add("customer_id", "string", "key", "Golden-record customer id.")
    add("as_of", "date", "key", "Snapshot date: only data strictly before 00:00 of this day is used.")
    add("recency_days", "int64", "core", "as_of minus the calendar date of the last order, in days.")
    add("tenure_days", "int64", "core", "as_of minus the calendar date of the first order, in days.")
    add("frequency", "int64", "core", f"Distinct orders in the {w} days before as_of.")
    add("monetary", "float64", "core", f"Sum of amount in the {w} days before as_of (returns included).")
    add("r_score", "int64", "rfm", "Recency quintile 1..5 (5 = most recent); ties share a score.")
    add("f_score", "int64", "rfm", "Frequency quintile 1..5 (5 = most orders); ties share a score.")
    add("m_score", "int64", "rfm", "Monetary quintile 1..5 (5 = most spend); ties share a score.")
    add("rfm_segment", "string", "rfm", f"Named RFM segment: one of {', '.join(SEGMENTS)}.")
    add("orders_total", "int64", "behaviour", "Distinct orders before as_of.")
    add("spend_total", "float64", "behaviour", "Sum of amount before as_of.")
    for d in config.windows_days:
        add(f"orders_{d}d", "int64", "behaviour", f"Distinct orders in the {d} days before as_of.")
        add(f"spend_{d}d", "float64", "behaviour", f"Sum of amount in the {d} days before as_of.")
    add("purchase_days", "int64", "behaviour", "Distinct calendar days with an order before as_of.")
    add("avg_order_value", "float64", "behaviour", "spend_total / orders_total.")
    add("ipi_mean_days", "float64", "behaviour",
        "Mean days between consecutive purchase days; null with fewer than two purchase days.", True)
    add("ipi_std_days", "float64", "behaviour",
        "Sample standard deviation of days between purchase days; null with fewer than three.", True)
    add("orders_trend", "float64", "behaviour",
        f"(orders in the last {t} days - orders in the {t} days before) / their sum; 0 when both are 0.")
    add("spend_trend", "float64", "behaviour",
        f"(spend in the last {t} days - spend in the {t} days before) / (|recent| + |prior|); 0 when both are 0.")
    if shape.categories:
        add(f"distinct_categories_{w}d", "int64", "category", f"Distinct categories bought in the {w} days.")
        for cat in shape.categories:
            add(f"spend_share_{slug(cat)}", "float64", "category",
                f"Share of the {w}-day spend in category {cat!r}; 0 when that spend is not positive.")
        for cat in shape.categories:
            add(f"days_since_{slug(cat)}", "float64", "category",
                f"as_of minus the date of the last purchase in category {cat!r}; null if never.", True)
    if shape.has_discount:
        add(f"discount_share_{w}d", "float64", "discount",
            f"Discounts / (amount + discounts) over {w} days; 0 when not positive.")
    if shape.has_coupon_discount:
        add(f"coupon_share_{w}d", "float64", "discount",
            f"Coupon discounts / (amount + discounts) over {w} days; 0 when not positive.")
    if shape.has_events:
        for et in config.event_types:
            add(f"events_{slug(et)}_{ew}d", "int64", "events", f"{et} events in the {ew} days before as_of.")
        add(f"events_other_{ew}d", "int64", "events", f"Events of other types in the {ew} days.")
        add("days_since_last_event", "float64", "events",
            "as_of minus the date of the last event; null without events.", True)
        add(f"abandoned_carts_{ew}d", "int64", "events",
            f"add_to_cart events in the {ew} days before as_of with no order within "
            f"{config.abandoned_cart_hours} h (only carts whose {config.abandoned_cart_hours} h ended before as_of).")
    if shape.has_contacts:
        add(f"contacts_{w}d", "int64", "campaign", f"Campaign contacts in the {w} days before as_of.")
        add("days_since_last_contact", "float64", "campaign",
            "as_of minus the date of the last contact; null if never contacted.", True)
        if shape.has_responses:
            add(f"responses_{w}d", "int64", "campaign", f"Campaign responses in the {w} days before as_of.")
            add(f"response_rate_{w}d", "float64", "campaign",
                f"responses / contacts over {w} days; null without contacts.", True)
    for attr, numeric in shape.attributes:
        add(f"attr_{slug(attr)}", "float64" if numeric else "string", "attributes",
            f"Customer attribute {attr!r} as known before as_of (survivorship: most recent non-null).", True)

    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"feature names collide: {sorted(dupes)} (rename categories or attributes)")
    return FeatureSet(tuple(specs), shape, config)


def feature_set_from_dict(data: dict) -> FeatureSet:
    """The feature set ``FeatureSet.to_dict`` wrote (a snapshot root's ``_schema.json``), declared
    again; ``ValueError`` when the declaration no longer gives the recorded fingerprint."""
    shape = dict(data["shape"])
    shape["categories"] = tuple(shape.get("categories") or ())
    shape["attributes"] = tuple((str(a), bool(n)) for a, n in shape.get("attributes") or ())
    fs = declare(FeatureConfig.model_validate(data["config"]), DatasetShape(**shape))
    if data.get("fingerprint") and fs.fingerprint() != data["fingerprint"]:
        raise ValueError(f"feature set {data['fingerprint']} cannot be declared again by this version "
                         f"(it declares {fs.fingerprint()}): rebuild the snapshot")
    return fs
