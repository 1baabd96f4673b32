"""Profiles: identity resolution and golden records.

Source records (a CRM contact, a web account, a loyalty card at the till) that share
identifiers are linked into one customer profile with a stable ``customer_id``; the
feature pipeline then joins every customer-keyed table through the mapping.

- ``normalize``: identifiers to canonical form (email, phone, codes).
- ``resolve``: ``resolve_identities`` -> ``Resolution`` (record -> customer_id mapping,
  stats), ``apply_mapping``.
- ``survivorship``: ``golden_records``, one row per customer.
- ``evaluate``: ``linkage_quality`` against known truth.
"""

from profiles.config import ResolutionConfig, SurvivorshipConfig
from profiles.evaluate import linkage_quality
from profiles.resolve import Resolution, apply_mapping, profile_id, resolve_identities
from profiles.survivorship import golden_records

__all__ = [
    "Resolution",
    "ResolutionConfig",
    "SurvivorshipConfig",
    "apply_mapping",
    "golden_records",
    "linkage_quality",
    "profile_id",
    "resolve_identities",
]
