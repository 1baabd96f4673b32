"""Declarative customer segments: ``definitions`` (the YAML rules, checked) and ``evaluate``
(membership of a table of customers, sizes and movement between two dates)."""
