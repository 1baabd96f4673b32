"""Injected data defects the loader must quarantine, and the counts of every injected problem
(``_Quality``, written to truth/quality.json): null customer ids, NaN amounts and duplicate
lines in transactions, duplicate identity rows, and (CSV only) unparseable timestamps and amounts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sources.synth.arrays import _join, _pick
from sources.synth.params import SynthParams


# ------------------------------------------------------------------ quality
class _Quality:
    """Counts of injected problems by section and kind; written to truth/quality.json."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, section: str, kind: str, n: int) -> None:
        bucket = self.counts.setdefault(section, {})
        bucket[kind] = bucket.get(kind, 0) + int(n)

    def as_dict(self) -> dict:
        out: dict[str, dict] = {}
        for section, kinds in sorted(self.counts.items()):
            if section == "bad_rows":  # "table.kind" -> {table: {kind: n}}
                nested: dict[str, dict[str, int]] = {}
                for key, n in sorted(kinds.items()):
                    table, kind = key.split(".", 1)
                    nested.setdefault(table, {})[kind] = n
                out[section] = nested
            else:
                out[section] = dict(sorted(kinds.items()))
        return out


def _bad_lines(rng: np.random.Generator, n: int, prm: SynthParams,
               quality: _Quality) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of ``n`` lines get a null customer id, a NaN amount, or are written twice
    (disjoint, counted). Returns the row index to write (duplicates right after their
    original) and the null / NaN masks over it."""
    ks = [int(rng.binomial(n, rate)) for rate in (prm.null_customer_id_rate, prm.nan_amount_rate,
                                                  prm.duplicate_line_rate)]
    ks = [k if sum(ks) <= n else 0 for k in ks]
    chosen = rng.choice(n, sum(ks), replace=False) if sum(ks) else np.zeros(0, dtype=np.int64)
    rows = np.sort(np.concatenate([np.arange(n), chosen[ks[0] + ks[1]:]]))
    null_id, nan_amount = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    null_id[chosen[: ks[0]]] = True
    nan_amount[chosen[ks[0]: ks[0] + ks[1]]] = True
    quality.add("bad_rows", "transactions.null_customer_id", ks[0])
    quality.add("bad_rows", "transactions.nan_amount", ks[1])
    quality.add("bad_rows", "transactions.duplicate_row", ks[2])
    return rows, null_id[rows], nan_amount[rows]


def _text_problems(rng: np.random.Generator, table: pa.Table, prm: SynthParams,
                   quality: _Quality) -> pa.Table:
    """CSV only: timestamps no parser accepts and amounts in a European shop format, on
    rows free of other problems (so each bad row has exactly one reason)."""
    text = pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})
    clean = np.flatnonzero(pc.is_valid(table["customer_id"]).to_numpy(zero_copy_only=False)
                           & ~np.isnan(table["amount"].to_numpy()))
    # rows written twice must stay identical: never touch a duplicated line
    keys = pc.binary_join_element_wise(text["order_id"], text["product_id"], text["amount"], "|")
    unique = pc.value_counts(keys)
    dup_keys = unique.field("values").filter(pc.greater(unique.field("counts"), 1))
    clean = clean[~pc.is_in(keys, value_set=dup_keys).to_numpy(zero_copy_only=False)[clean]]
    ks = [int(rng.binomial(len(clean), rate)) for rate in (prm.bad_timestamp_rate, prm.bad_amount_rate)]
    chosen = rng.choice(clean, min(sum(ks), len(clean)), replace=False) if sum(ks) else np.zeros(0, np.int64)
    bad_ts, bad_amount = np.sort(chosen[: ks[0]]), np.sort(chosen[ks[0]:])
    ts_mask = np.zeros(table.num_rows, dtype=bool)
    ts_mask[bad_ts] = True
    amount_mask = np.zeros(table.num_rows, dtype=bool)
    amount_mask[bad_amount] = True
    junk_ts = _pick(rng.integers(0, 3, len(bad_ts)), ("2024-13-45", "31/02/2025 25:61", "yesterday"))
    amount = text["amount"].combine_chunks()
    euro = _join(pc.replace_substring(pc.take(amount, pa.array(bad_amount)), ".", ","), "€")
    text = text.set_column(text.schema.get_field_index("timestamp"), "timestamp",
                           pc.replace_with_mask(text["timestamp"].combine_chunks(), pa.array(ts_mask),
                                                junk_ts))
    text = text.set_column(text.schema.get_field_index("amount"), "amount",
                           pc.replace_with_mask(amount, pa.array(amount_mask), euro))
    quality.add("bad_rows", "transactions.unparseable_timestamp", len(bad_ts))
    quality.add("bad_rows", "transactions.non_numeric_amount", len(bad_amount))
    return text


def _duplicate_rows(rng: np.random.Generator, table: pa.Table, rate: float, quality: _Quality,
                    name: str) -> pa.Table:
    """Write some rows twice, right after themselves (an export retried, a double scan)."""
    k = int(rng.binomial(table.num_rows, rate)) if table.num_rows else 0
    dup = rng.choice(table.num_rows, k, replace=False) if k else np.zeros(0, dtype=np.int64)
    quality.add("bad_rows", f"{name}.duplicate_row", k)
    if not k:
        return table
    return table.take(pa.array(np.sort(np.concatenate([np.arange(table.num_rows), dup]))))
