"""The source contract: which tables a dataset may hold and what their columns mean.

Declared once; the loader validates against it, the synthetic generator and the
Complete Journey adapter write to it, and the docs are generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dtype = Literal["string", "timestamp", "float64", "int64"]


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    dtype: Dtype
    required: bool = False
    #: a null or empty value makes the row unusable: it goes to quarantine
    key: bool = False
    description: str = ""
    #: the only values a string column may hold (empty: any); another value is quarantined
    allowed: tuple[str, ...] = ()
    #: a float column that is a probability strictly between 0 and 1
    probability: bool = False


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[ColumnSpec, ...]
    required: bool = False
    #: extra columns are kept as attributes (``customers``, ``products``) instead of ignored
    keeps_extra_columns: bool = False
    #: columns equal in any two exact duplicates, cheap to group on: duplicates are only
    #: searched among rows sharing them (empty: duplicates are not searched)
    dedupe_hint: tuple[str, ...] = ()
    description: str = ""

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


C = ColumnSpec

TRANSACTIONS = TableSpec(
    "transactions",
    required=True,
    dedupe_hint=("order_id", "amount"),
    description="One row per order line (or per order when there are no lines).",
    columns=(
        C("customer_id", "string", required=True, key=True,
          description="Who bought: a customer id, or a source record id when `identities` is present."),
        C("order_id", "string", required=True, key=True, description="Order (basket) the line belongs to."),
        C("timestamp", "timestamp", required=True, key=True, description="When the order was placed (UTC)."),
        C("amount", "float64", required=True, key=True,
          description="Money paid for the line; negative for returns (returns are data, not errors)."),
        C("product_id", "string", description="Product bought; joined to `products` for its category."),
        C("category", "string", description="Product category; derived from `products` when absent."),
        C("quantity", "float64", description="Units."),
        C("discount", "float64", description="All discounts on the line, as a positive amount."),
        C("coupon_discount", "float64", description="The part of `discount` that came from coupons."),
        C("channel", "string", description="store, web, app..."),
        C("store_id", "string", description="Store where the order was placed."),
        C("source_system", "string", description="Source system of `customer_id` (with `identities`)."),
    ),
)

IDENTITIES = TableSpec(
    "identities",
    dedupe_hint=("source_id", "value"),
    description="Identifiers seen on source records; linked into golden customer profiles.",
    columns=(
        C("source_system", "string", required=True, key=True, description="crm, web, app, pos..."),
        C("source_id", "string", required=True, key=True, description="Record id within its source system."),
        C("id_type", "string", required=True, key=True,
          description="email, phone, cookie, device, loyalty_card, crm_id..."),
        C("value", "string", required=True, key=True, description="The identifier (PII: never logged)."),
        C("seen_at", "timestamp", description="When the identifier was first seen on the record."),
    ),
)

EVENTS = TableSpec(
    "events",
    dedupe_hint=("customer_id", "timestamp"),
    description="Behavioural events: view, add_to_cart, purchase, email_open, email_click, support_ticket...",
    columns=(
        C("customer_id", "string", required=True, key=True),
        C("timestamp", "timestamp", required=True, key=True),
        C("event_type", "string", required=True, key=True),
        C("source_system", "string"),
    ),
)

CONTACTS = TableSpec(
    "contacts",
    dedupe_hint=("customer_id", "campaign_id"),
    description=("Campaign sends: who was contacted, by which campaign, when. A randomised campaign "
                 "also lists the customers it held out (`group` = control: chosen like the others, "
                 "not sent); uplift models train on those."),
    columns=(
        C("customer_id", "string", required=True, key=True),
        C("campaign_id", "string", required=True, key=True),
        C("timestamp", "timestamp", required=True, key=True),
        C("channel", "string"),
        C("source_system", "string"),
        C("group", "string", allowed=("treatment", "control"),
          description=("treatment (sent) or control (randomly held out, not sent), when the campaign "
                       "was randomised; empty: not randomised (a plain send).")),
        C("assignment_p", "float64", probability=True,
          description=("The probability that the randomisation put this customer in treatment, "
                       "when known (strictly between 0 and 1).")),
    ),
)

RESPONSES = TableSpec(
    "responses",
    dedupe_hint=("customer_id", "campaign_id"),
    description="Campaign responses: redemptions or conversions.",
    columns=(
        C("customer_id", "string", required=True, key=True),
        C("campaign_id", "string", required=True, key=True),
        C("timestamp", "timestamp", required=True, key=True),
        C("offer_id", "string", description="What was redeemed (coupon, offer), when known."),
        C("source_system", "string"),
    ),
)

CUSTOMERS = TableSpec(
    "customers",
    keeps_extra_columns=True,
    description="Customer attributes (demographics...). Every other column is an attribute.",
    columns=(
        C("customer_id", "string", required=True, key=True),
        C("updated_at", "timestamp", description="When the attributes were recorded; point-in-time when present."),
        C("source_system", "string"),
    ),
)

PRODUCTS = TableSpec(
    "products",
    keeps_extra_columns=True,
    description="Product catalog: product -> category hierarchy.",
    columns=(
        C("product_id", "string", required=True, key=True),
        C("category", "string", description="Default category level; see dataset.yaml `category_column`."),
    ),
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (TRANSACTIONS, IDENTITIES, EVENTS, CONTACTS, RESPONSES, CUSTOMERS, PRODUCTS)
}

#: tables whose ``customer_id`` refers to a source record when ``identities`` is present
CUSTOMER_KEYED = ("transactions", "events", "contacts", "responses", "customers")
