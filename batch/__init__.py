"""Nightly batch scoring of every customer (issue 5)."""
