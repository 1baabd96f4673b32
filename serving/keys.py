"""API keys: generate one, and the home's key file (``$CVM_HOME/secrets/api-keys``, mode 600)
that ``cvm serve`` reads when no key is configured otherwise."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from serving.settings import default_keys_file


def new_key() -> str:
    """A random API key (32 bytes, URL-safe)."""
    return "cvm_" + secrets.token_urlsafe(32)


def ensure_key_file(home: Path) -> tuple[str, Path, bool]:
    """The first key of ``$CVM_HOME/secrets/api-keys``, creating the file (mode 600) with a new
    key when it does not exist. Returns (key, path, created)."""
    path = default_keys_file(home)
    if path.exists():
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if lines:
            return lines[0], path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# API keys of `cvm serve` (one per line). Keep this file secret.\n" + key + "\n")
    return key, path, True
