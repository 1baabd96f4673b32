"""Errors every layer raises for input a user can correct (the CLI prints the message as
one line and exits with status 2, the service answers 4xx)."""

from __future__ import annotations


class InputError(ValueError):
    """An argument or an input cannot be used; the message names it and says what to change."""
