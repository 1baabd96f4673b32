"""Writes that readers never see half done: a directory or a file is written aside and
swapped in whole.

``replace_directory`` exchanges a staged directory with the final one (one
``renameat2(RENAME_EXCHANGE)`` on Linux); ``write_json`` and ``write_text`` write a file
aside, fsync it and rename it over the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path


def replace_directory(staged: Path, final: Path) -> None:
    """Swap ``staged`` into ``final`` atomically: readers see the old or the new directory.

    On Linux the two directories are exchanged in one ``renameat2(RENAME_EXCHANGE)``
    call, so ``final`` never disappears; elsewhere the old one is renamed aside first
    (readers may then briefly find no directory, but never a mix of old and new files).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.replace(staged, final)
        return
    if _exchange(staged, final):
        shutil.rmtree(staged, ignore_errors=True)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(final, old)
    os.replace(staged, final)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_text(path: Path, text: str) -> None:
    """Readers see the old file or the new one: write aside, fsync, rename over, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: Mapping[str, object]) -> None:
    """``data`` as indented JSON, written atomically (``write_text``)."""
    write_text(path, json.dumps(data, indent=2, default=str))


def fsync_dir(directory: Path) -> None:
    """Persist a rename (POSIX); platforms that cannot open directories skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def durable_sqlite(path: Path, schema: str):
    """A SQLite connection for a durable log under ``path`` (created with ``schema``): WAL, every
    commit fsynced (``synchronous=FULL``), autocommit so callers open their own transactions, safe to
    share between threads behind the caller's lock."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(schema)
    return con
