"""Profile configuration: which identifiers link records, and how attributes survive.

Linking rules are business decisions (is a shared device evidence of one person?), so
they live in configuration, not code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_LINK_TYPES = ["email", "phone", "loyalty_card", "device", "crm_id", "cookie"]

AttributeRule = Literal["most_recent", "most_frequent", "max", "min"]


class ResolutionConfig(BaseModel):
    """How identity rows are normalised and linked into profiles."""

    model_config = ConfigDict(extra="forbid")

    max_records_per_identifier: int = Field(
        5, ge=1,
        description="An identifier (id type + normalised value) carried by more distinct records than this "
        "is a hub (a store's house card, a shared tablet, 'noemail@none.com') and links nothing.")
    link_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LINK_TYPES), min_length=1,
        description="Id types whose shared values link records; other id types are kept on the records "
        "but never merge them.")
    default_country_code: str = Field(
        "44", pattern=r"^[1-9][0-9]{0,2}$",
        description="Country calling code (digits, no '+') given to phone numbers written with a national "
        "trunk '0'.")
    strip_plus_tags_all_domains: bool = Field(
        False,
        description="Drop '+tag' from the local part of every email, not only Gmail's. Off by default: "
        "other providers may deliver '+tag' addresses to different mailboxes.")

    @field_validator("link_types")
    @classmethod
    def _normalised_types(cls, v: list[str]) -> list[str]:
        types = [t.strip().lower() for t in v]
        if any(not t for t in types):
            raise ValueError("link types must be non-empty names")
        return sorted(set(types))


class SurvivorshipConfig(BaseModel):
    """How one golden record is chosen from a profile's records."""

    model_config = ConfigDict(extra="forbid")

    attribute_rules: dict[str, AttributeRule] = Field(
        default_factory=dict,
        description="Rule per attribute column of `customers`: most_recent (latest `updated_at` with a "
        "value), most_frequent (value on most records), max or min. Unlisted columns use most_recent "
        "when `customers` has `updated_at`, else most_frequent.")
    customers_source_system: str | None = Field(
        None,
        description="Source system of `customers` rows that have none (no `source_system` column, or a "
        "null). None: such rows are matched to identity records on `customer_id` alone, which must then "
        "name records of one source system only.")
