"""Output: the tables and ground truth of a chunk built from its arrays, written one part per
table per chunk; the truth/ directory (single files, and the parts of ``truth/response/``),
dataset.yaml and the marker file that lets a rerun replace a previous output
(``_check_target`` refuses any other non-empty target)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from sources.synth.arrays import _ids, _join, _mix, _pick, _strings
from sources.synth.behaviour import _concat_orders_unsorted, _Contacts, _Lines, _Orders
from sources.synth.defects import _bad_lines, _Quality
from sources.synth.entities import _Persons, _Records
from sources.synth.identities import _PersonIds
from sources.synth.params import (
    _DOMAINS,
    CATEGORIES,
    CHANNELS,
    CONTACT_CHANNELS,
    EVENT_TYPES,
    GENDERS,
    ONLINE_APP,
    ONLINE_WEB,
    REGIONS,
    SEGMENTS,
    STORE,
    SYSTEMS,
    UPLIFT_KINDS,
    SynthParams,
)
from sources.synth.uplift import _Response
from sources.synth.world import _Catalog, _World

#: marks a directory as synth output, so a rerun may replace it (and nothing else)
MARKER = "_synth.json"
#: bump when the generated content changes for the same arguments
#: (2: adds truth/response/, every other file unchanged)
GENERATOR_VERSION = 2
#: truth tables written one part per chunk, under truth/<name>/, rather than as one file
TRUTH_PARTS = ("response",)


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote: where, and how many rows of each table."""

    path: Path
    persons: int
    seed: int
    fmt: str
    rows: dict[str, int]
    records: int
    quality: dict = field(repr=False)


def _check_target(out: Path) -> None:
    """Refuse to replace anything that is not ours: a wrong path must not delete data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; refusing to write a synthetic dataset there")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{out} is a non-empty directory that is not a previous synth output "
                         f"(no {MARKER}); refusing to overwrite it. Choose an empty or new directory.")


# --------------------------------------------------------------------------- tables
def _transactions(rng: np.random.Generator, world: _World, r: _Records, chunk: int, o: _Orders,
                  lines: _Lines, ro: _Orders, rl: _Lines, quality: _Quality) -> pa.Table:
    """Order lines and returns in time order, with the counted bad rows injected."""
    orders = _concat_orders_unsorted(o, ro)
    order = np.concatenate([lines.order, rl.order])
    # lines are in time order but for the returns appended last: a stable sort merges them
    # and keeps each order's lines together
    sort = np.argsort(orders.t[order], kind="stable")
    rows, null_id, nan_amount = _bad_lines(rng, len(sort), world.params, quality)
    sort = sort[rows]
    order = order[sort]
    cat = world.catalog
    product = np.concatenate([lines.product, rl.product])[sort]
    number = (np.uint64(chunk) << np.uint64(32)) | order.astype(np.uint64)
    record = orders.record[order]
    store = orders.store[order]
    col = lambda a, b: np.concatenate([a, b])[sort]
    return pa.table({
        "customer_id": r.id_column(record, ~null_id),
        "source_system": _pick(r.system[record], SYSTEMS),
        "order_id": _ids("ord-", _mix(number, 52, world.key >> 1), 13),
        "timestamp": world.window.timestamps(orders.t[order]),
        "amount": pa.array(np.where(nan_amount, np.nan, col(lines.amount, rl.amount)), pa.float64()),
        "product_id": pc.take(cat.product_id, pa.array(product)),
        "category": _pick(cat.category[product], CATEGORIES),
        "quantity": pa.array(col(lines.quantity, rl.quantity), pa.float64()),
        "discount": pa.array(col(lines.discount, rl.discount), pa.float64()),
        "coupon_discount": pa.array(col(lines.coupon, rl.coupon), pa.float64()),
        "channel": _pick(orders.channel[order], CHANNELS),
        "store_id": pc.take(world.stores.ids, pa.array(np.maximum(store, 0), mask=store < 0)),
    })


def _events_table(world: _World, r: _Records, record: np.ndarray, t: np.ndarray,
                  kind: np.ndarray) -> pa.Table:
    order = np.argsort(t, kind="stable")
    record, t, kind = record[order], t[order], kind[order]
    return pa.table({
        "customer_id": r.id_column(record),
        "source_system": _pick(r.system[record], SYSTEMS),
        "timestamp": world.window.timestamps(t),
        "event_type": _pick(kind, EVENT_TYPES),
    })


def _contacts_table(world: _World, r: _Records, c: _Contacts) -> pa.Table:
    order = np.argsort(c.t, kind="stable")
    return pa.table({
        "customer_id": r.id_column(c.record[order]),
        "source_system": _pick(r.system[c.record[order]], SYSTEMS),
        "campaign_id": pc.take(world.campaigns.ids, pa.array(c.campaign[order])),
        "timestamp": world.window.timestamps(c.t[order]),
        "channel": _pick(c.channel[order], CONTACT_CHANNELS),
    })


def _responses_table(world: _World, r: _Records, c: _Contacts, contact: np.ndarray,
                     t: np.ndarray) -> pa.Table:
    order = np.argsort(t, kind="stable")
    contact, t = contact[order], t[order]
    return pa.table({
        "customer_id": r.id_column(c.record[contact]),
        "source_system": _pick(r.system[c.record[contact]], SYSTEMS),
        "campaign_id": pc.take(world.campaigns.ids, pa.array(c.campaign[contact])),
        "timestamp": world.window.timestamps(t),
    })


def _truth_persons(world: _World, p: _Persons, ids: _PersonIds) -> pa.Table:
    win = world.window
    gmail = ids.domain == 0
    local = pc.utf8_lower(ids.email_local)
    local = pc.if_else(pa.array(gmail), pc.replace_substring(local, ".", ""), local)
    email = _join(local, "@", _pick(ids.domain, _DOMAINS))
    alt_local = pc.utf8_lower(ids.alt_local)
    alt_local = pc.if_else(pa.array(ids.alt_domain == 0), pc.replace_substring(alt_local, ".", ""), alt_local)
    alt = _join(alt_local, "@", _pick(ids.alt_domain, _DOMAINS))
    return pa.table({
        "person_id": pa.array(p.gid, pa.int64()),
        "segment": _pick(p.segment, tuple(SEGMENTS)),
        "existing_base": pa.array(p.base),
        "acquired_at": win.timestamps(p.acq),
        "dropout_at": pa.array(win.us(np.where(np.isfinite(p.dropout), p.dropout, 0)), pa.timestamp("us"),
                               mask=~np.isfinite(p.dropout)),
        "purchase_rate": pa.array(p.rate, pa.float64()),
        "dropout_rate": pa.array(p.dropout_rate, pa.float64()),
        "basket_size_factor": pa.array(p.basket, pa.float64()),
        "store_weight": pa.array(p.chan_w[:, STORE]),
        "web_weight": pa.array(p.chan_w[:, ONLINE_WEB]),
        "app_weight": pa.array(p.chan_w[:, ONLINE_APP]),
        "response_propensity": pa.array(p.response_p),
        "email_open_rate": pa.array(p.open_p),
        **{f"pref_{c}": pa.array(p.pref[:, i].astype(np.float64)) for i, c in enumerate(CATEGORIES)},
        "region": _pick(p.region, REGIONS),
        "home_store": pc.take(world.stores.ids, pa.array(p.home_store)),
        "birth_year": pa.array(p.birth_year, pa.int64()),
        "gender": _pick(p.gender, GENDERS),
        "email": email,
        "alt_email": pc.if_else(pa.array(ids.has_alt), alt, pa.scalar(None, pa.string())),
        "phone": _strings(np.concatenate([np.full((p.n, 2), ord("4"), np.uint8), ids.phone], axis=1)),
        "household_id": pa.array(ids.household, pa.int64(), mask=ids.household < 0),
        "phone_previous_owner": pa.array(ids.phone_from, pa.int64(), mask=ids.phone_from < 0),
    })


def _truth_records(world: _World, r: _Records, p: _Persons) -> pa.Table:
    return pa.table({
        "source_system": _pick(r.system, SYSTEMS),
        "source_id": r.ids,
        "person_id": pa.array(p.gid[r.person], pa.int64()),
        "created_at": world.window.timestamps(r.created),
    })


def _truth_response(world: _World, p: _Persons, resp: _Response) -> pa.Table:
    """One row per person and category, persons in order, categories in ``CATEGORIES`` order;
    the horizon and its start are in the schema metadata."""
    n, c = resp.kind.shape
    table = pa.table({
        "person_id": pa.array(np.repeat(p.gid, c), pa.int64()),
        "category": _pick(np.tile(np.arange(c), n), CATEGORIES),
        "kind": _pick(resp.kind.reshape(-1), UPLIFT_KINDS),
        "p_control": pa.array(resp.p_control.reshape(-1), pa.float64()),
        "p_treated": pa.array(resp.p_treated.reshape(-1), pa.float64()),
    })
    return table.replace_schema_metadata({k: str(v) for k, v in _response_meta(world).items()})


def _response_meta(world: _World) -> dict:
    end = world.window.start + timedelta(days=world.window.days - 1)
    return {"horizon_days": world.params.response_horizon_days, "as_of": end.isoformat()}


# ------------------------------------------------------------------ writing
class _Writer:
    """Writes one part per table per chunk, the catalog once, and the truth as single files."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.root, self.fmt = root, fmt
        (root / "truth").mkdir()
        self.truth: dict[str, pq.ParquetWriter] = {}

    def write_products(self, catalog: _Catalog) -> dict[str, int]:
        table = pa.table({
            "product_id": catalog.product_id,
            "category": _pick(catalog.category, CATEGORIES),
            "subcategory": catalog.subcategory,
            "list_price": pa.array(catalog.price, pa.float64()),
        })
        if self.fmt == "csv":
            pacsv.write_csv(_as_text(table), self.root / "products.csv")
        else:
            pq.write_table(table, self.root / "products.parquet", compression="zstd")
        return {"products": table.num_rows}

    def write_part(self, name: str, chunk: int, table: pa.Table) -> int:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        if self.fmt == "csv":
            pacsv.write_csv(_as_text(table), folder / f"part-{chunk:05d}.csv")
        else:
            pq.write_table(table, folder / f"part-{chunk:05d}.parquet", compression="zstd")
        return table.num_rows

    def write_truth(self, truth: dict[str, pa.Table], chunk: int) -> None:
        """Truth tables named in ``TRUTH_PARTS`` as this chunk's part, the others appended to
        their single file."""
        for name, table in truth.items():
            if name in TRUTH_PARTS:
                folder = self.root / "truth" / name
                folder.mkdir(exist_ok=True)
                pq.write_table(table, folder / f"part-{chunk:05d}.parquet", compression="zstd")
                continue
            if name not in self.truth:
                self.truth[name] = pq.ParquetWriter(self.root / "truth" / f"{name}.parquet", table.schema,
                                                    compression="zstd")
            self.truth[name].write_table(table)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.truth.values():
            w.close()


def _as_text(table: pa.Table) -> pa.Table:
    return pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})


def _write_metadata(root: Path, name: str, summary: SynthSummary, start: date, end: date, chunk_size: int,
                    params: SynthParams, world: _World) -> None:
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "name": name,
        "category_column": "category",
        "description": f"synthetic, {summary.persons} persons, seed {summary.seed}",
    }, sort_keys=False))
    (root / "truth" / "quality.json").write_text(json.dumps(summary.quality, indent=2, sort_keys=True) + "\n")
    (root / MARKER).write_text(json.dumps({
        "generator_version": GENERATOR_VERSION, "persons": summary.persons, "seed": summary.seed,
        "fmt": summary.fmt, "chunk_size": chunk_size, "start": start.isoformat(), "end": end.isoformat(),
        "params": asdict(params), "rows": summary.rows, "records": summary.records,
        "truth": {"response": {
            **_response_meta(world), "rows": summary.persons * len(CATEGORIES),
            "description": "per person and category: p_control / p_treated = probability of buying in "
                           "the category within horizon_days of a contact at the end of as_of (the window's last day) "
                           "without / with an offer for it; kind = uplift kind"}},
    }, indent=2, sort_keys=True) + "\n")
