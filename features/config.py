"""Feature configuration: window lengths and vocabularies are configuration, not code."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_EVENT_TYPES = ["view", "add_to_cart", "purchase", "email_open", "email_click", "support_ticket"]


class FeatureConfig(BaseModel):
    """How the feature builder summarises history before ``as_of``."""

    model_config = ConfigDict(extra="forbid")

    rfm_window_days: int = Field(
        365, gt=0, description="Window of `frequency` and `monetary` (and of the category, discount and "
        "campaign features): the days before as_of.")
    windows_days: list[int] = Field(
        [30, 90, 180], min_length=1,
        description="Windows (days before as_of) for `orders_<w>d` and `spend_<w>d`.")
    trend_window_days: int = Field(
        90, gt=0, description="Trend compares the last N days with the N days before them.")
    event_window_days: int = Field(90, gt=0, description="Window for event counts by type.")
    abandoned_cart_hours: int = Field(
        24, gt=0, description="An add_to_cart with no order within this many hours is an abandoned cart.")
    event_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EVENT_TYPES),
        description="Event types counted (one column each); others are counted in `events_other_<w>d`.")
    top_categories: int = Field(
        8, gt=0, description="How many main categories get a spend-share column when the dataset does not "
        "list them (dataset.yaml `categories`).")
    categories: list[str] | None = Field(
        None, description="Main categories for spend-share columns; overrides the dataset's list.")

    @field_validator("windows_days")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if any(w <= 0 for w in v):
            raise ValueError("windows must be positive numbers of days")
        if len(set(v)) != len(v):
            raise ValueError("windows must be distinct")
        return sorted(v)

    @field_validator("event_types")
    @classmethod
    def _event_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"event type {name!r} must be letters, digits and underscores")
        return v
