"""The driver: ``generate`` checks its arguments and the target, builds the world, then
simulates and writes the persons chunk by chunk (``_chunk``, every component seeded by
``[seed, chunk, component]``) into a staged directory swapped in at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Literal

import pyarrow as pa

from base.atomic import replace_directory
from sources.synth.arrays import _rng
from sources.synth.behaviour import (
    _concat_orders,
    _contacts,
    _events,
    _first_orders,
    _lines,
    _persons,
    _regular_orders,
    _responses,
    _returns,
)
from sources.synth.defects import _Quality, _text_problems
from sources.synth.identities import _customer_rows, _identity_rows, _person_ids, _records
from sources.synth.params import MAX_CHUNK_SIZE, SynthParams
from sources.synth.uplift import _response, _uplift_model, _UpliftModel
from sources.synth.world import _World, _world
from sources.synth.writer import (
    SynthSummary,
    _check_target,
    _contacts_table,
    _events_table,
    _responses_table,
    _transactions,
    _truth_persons,
    _truth_records,
    _truth_response,
    _write_metadata,
    _Writer,
)


def generate(out: Path, customers: int, seed: int = 0, *, start: date = date(2024, 1, 1),
             end: date = date(2025, 12, 31), fmt: Literal["parquet", "csv"] = "parquet",
             chunk_size: int = 200_000, progress: Callable[[int, int], None] | None = None,
             params: SynthParams | None = None) -> SynthSummary:
    """Write a synthetic dataset of ``customers`` persons to ``out`` and return its summary.

    The same (customers, seed, fmt, chunk_size, params) always gives the same data.
    ``out`` must not exist, be empty, or be a previous synth output (replaced whole);
    anything else raises ``ValueError`` rather than mixing files. ``progress(done, total)``
    is called after each chunk of persons.
    """
    params = params or SynthParams()
    _check_arguments(customers, start, end, fmt, chunk_size)
    out = Path(out).expanduser().resolve()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        world = _world(seed, start, end, params)
        uplift = _uplift_model(seed, world)
        quality = _Quality()
        records = 0
        with _Writer(staged, fmt) as writer:
            rows = writer.write_products(world.catalog)
            for chunk in range(-(-customers // chunk_size)):
                first = chunk * chunk_size
                n = min(chunk_size, customers - first)
                tables, truth = _chunk(world, uplift, seed, chunk, first, n, fmt, quality)
                for name, table in tables.items():
                    rows[name] = rows.get(name, 0) + writer.write_part(name, chunk, table)
                writer.write_truth(truth, chunk)
                records += truth["records"].num_rows
                del tables, truth  # free this chunk before building the next
                if progress is not None:
                    progress(first + n, customers)
        summary = SynthSummary(out, customers, seed, fmt, rows, records, quality.as_dict())
        _write_metadata(staged, out.name, summary, start, end, chunk_size, params, world)
        replace_directory(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary


# ------------------------------------------------------------------ arguments
def _check_arguments(customers: int, start: date, end: date, fmt: str, chunk_size: int) -> None:
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be within 1..{MAX_CHUNK_SIZE}, got {chunk_size}")


# -------------------------------------------------------------------- chunk
def _chunk(world: _World, uplift: _UpliftModel, seed: int, chunk: int, first: int, n: int, fmt: str,
           quality: _Quality) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """All tables of persons [first, first + n): their rows depend on (seed, chunk) only.
    Component numbers are fixed for good: a new stage takes a new number (14: response truth)."""
    p = _persons(_rng(seed, chunk, 1), world, first, n)
    r = _records(_rng(seed, chunk, 2), world, p, chunk)
    pids = _person_ids(_rng(seed, chunk, 3), world, p, r, quality)
    identities, has_email = _identity_rows(_rng(seed, chunk, 4), world, p, r, pids, quality)
    contacts = _contacts(_rng(seed, chunk, 5), world, p, r, has_email)
    resp_contact, resp_t, resp_orders = _responses(_rng(seed, chunk, 6), world, p, r, contacts)
    orders = _concat_orders([_regular_orders(_rng(seed, chunk, 7), world, p, r), _first_orders(world, p, r),
                             resp_orders])
    lines = _lines(_rng(seed, chunk, 8), world, p, orders)
    ret_orders, ret_lines = _returns(_rng(seed, chunk, 9), world, orders, lines)
    events = _events(_rng(seed, chunk, 10), world, p, r, orders, contacts)
    tables = {
        "transactions": _transactions(_rng(seed, chunk, 11), world, r, chunk, orders, lines, ret_orders,
                                      ret_lines, quality),
        "events": _events_table(world, r, *events),
        "contacts": _contacts_table(world, r, contacts),
        "responses": _responses_table(world, r, contacts, resp_contact, resp_t),
        "identities": identities,
        "customers": _customer_rows(_rng(seed, chunk, 12), world, p, r),
    }
    if fmt == "csv":
        tables["transactions"] = _text_problems(_rng(seed, chunk, 13), tables["transactions"], world.params,
                                                quality)
    response = _response(_rng(seed, chunk, 14), world, uplift, p)
    truth = {"persons": _truth_persons(world, p, pids), "records": _truth_records(world, r, p),
             "response": _truth_response(world, p, response)}
    return tables, truth
