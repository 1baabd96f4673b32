"""Property-based: malformed transaction files given to `cvm features build`. Every row is
either used or quarantined with a reason, the counts add up to the input, and the build
never crashes or drops a row silently (hypothesis generates the files)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cvm.cli import app

AS_OF = "2024-06-01"
GOOD_TIME = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2024, 5, 31)).map(
    lambda d: d.isoformat(sep=" "))
BAD_TIME = st.sampled_from(["", "not-a-date", "2024-13-45 10:00:00", "1899-01-01 00:00:00", "31/12/2023",
                            "2024-02-30", "9999-99-99", "\u00a0"])
GOOD_AMOUNT = st.floats(min_value=-500, max_value=5000, allow_nan=False).map(lambda x: f"{x:.2f}")
BAD_AMOUNT = st.sampled_from(["", "nan", "inf", "-inf", "1e12", "12,5€", "abc", "1.2.3", " ", "NaN", "1e400"])
IDS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=8)
ROW = st.tuples(
    st.one_of(st.sampled_from(["c1", "c2", "c3", "ünï", "客户", "  "]), IDS),  # customer_id
    st.one_of(st.sampled_from(["o1", "o2", "o3"]), IDS),  # order_id
    st.one_of(GOOD_TIME, BAD_TIME),  # timestamp
    st.one_of(GOOD_AMOUNT, BAD_AMOUNT),  # amount
    st.sampled_from(["grocery", "dairy", "", "😀"]),  # category
)
FILES = st.lists(ROW, min_size=0, max_size=40).flatmap(
    lambda rows: st.tuples(st.just(rows), st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=5)))


def _write(root: Path, rows: list[tuple], duplicates: list[int]) -> int:
    """transactions.csv with the rows plus exact duplicates of some; returns the row count."""
    all_rows = rows + [rows[i] for i in duplicates if i < len(rows)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["customer_id", "order_id", "timestamp", "amount", "category"])
    w.writerows(all_rows)
    root.mkdir(parents=True, exist_ok=True)
    (root / "transactions.csv").write_text(buf.getvalue(), encoding="utf-8")
    return len(all_rows)


@pytest.mark.slow  # 40 generated datasets, each built: make test, not make test-fast
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(FILES)
def test_every_row_is_used_or_quarantined_with_a_reason(data):
    rows, duplicates = data
    tmp = Path(tempfile.mkdtemp(prefix="cvm-prop-"))
    try:
        n = _write(tmp / "ds", rows, duplicates)
        home = tmp / "home"
        r = CliRunner().invoke(app, ["features", "build", "--dataset", str(tmp / "ds"), "--as-of", AS_OF,
                                     "--home", str(home)])
        # a clear answer either way: a snapshot, or exit 2 naming why (no usable row at all)
        assert r.exit_code in (0, 2), r.output
        assert "Traceback" not in r.output
        quarantine = home / "quarantine" / "ds" / "transactions"
        q = pads.dataset(str(quarantine)).to_table().to_pandas() if quarantine.exists() else None
        n_quarantined = 0 if q is None else len(q)
        if q is not None:
            assert q["_reason"].notna().all() and (q["_reason"].str.len() > 0).all()
        if r.exit_code == 0:
            meta = json.loads(next((home / "features" / "ds").glob("as_of=*/_snapshot.json")).read_text())
            report = meta["sources"]["transactions"]
            assert report["rows_in"] == n
            assert report["rows_clean"] + report["rows_quarantined"] == n
            assert report["rows_quarantined"] == n_quarantined
            assert sum(report["quarantined_by_reason"].values()) == n_quarantined
        else:
            assert "error" in r.output.lower()
            # nothing usable (valid rows are all before as_of): every row is in quarantine, or there was none
            assert n_quarantined == n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
