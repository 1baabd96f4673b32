"""Execution engines for Ibis expressions: DuckDB (embedded default) and Apache Spark.

Feature and validation logic is written once as Ibis expressions; an ``Engine``
reads source files into Ibis tables, runs expressions and writes Parquet. Nothing
starts (no JVM, no database) until an engine is opened, and an engine is a context
manager: ``with open_engine("duckdb") as eng: ...`` closes the DuckDB connection, or stops
the Spark session and its JVM, on every path out of the block.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
import weakref
from pathlib import Path
from typing import Literal, Protocol, Self

import ibis
import pandas as pd
import pyarrow as pa

EngineName = Literal["duckdb", "spark"]
FileFormat = Literal["parquet", "csv"]


class Engine(Protocol):
    name: EngineName
    con: ibis.BaseBackend

    def read(self, files: list[Path], fmt: FileFormat) -> ibis.Table: ...

    def register(self, df: pd.DataFrame | pa.Table, name: str | None = None) -> ibis.Table: ...

    def execute(self, expr: ibis.Expr) -> pd.DataFrame: ...

    def reuse(self, expr: ibis.Table) -> ibis.Table:
        """Prepare a large expression that several queries will read."""
        ...

    def write_parquet(self, expr: ibis.Table, directory: Path) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


#: engines opened and not yet closed, in this process (what tests check is empty after a command)
_OPEN: weakref.WeakSet[_Lifetime] = weakref.WeakSet()


def open_engines() -> list[str]:
    """Names of the engines of this process that are open (not closed yet)."""
    return [e.name for e in list(_OPEN)]


class _Lifetime:
    """Context-manager plumbing shared by the engines: ``close`` runs once, on any exit."""

    name: EngineName
    closed: bool = False

    def _opened(self) -> None:
        _OPEN.add(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        self._close()

    def _close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DuckDBEngine(_Lifetime):
    """Embedded DuckDB: the default, fast on one machine, spills to ``temp_dir``."""

    name: EngineName = "duckdb"

    def __init__(self, threads: int | None = None, memory_limit: str | None = None,
                 temp_dir: Path | None = None) -> None:
        # Without the ICU extension (not bundled, and no download here) DuckDB treats time
        # zones as UTC, which is what the contract says timestamps are.
        config: dict[str, object] = {"preserve_insertion_order": False}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        if temp_dir is not None:
            temp_dir.mkdir(parents=True, exist_ok=True)
            config["temp_directory"] = str(temp_dir)
        self.con = ibis.duckdb.connect(**config)
        self.con.raw_sql("SET enable_progress_bar = false")
        self._opened()

    def read(self, files: list[Path], fmt: FileFormat) -> ibis.Table:
        paths = [str(p) for p in files]
        if fmt == "parquet":
            return self.con.read_parquet(paths, union_by_name=True)
        # Every CSV column is read as text: types are decided by validation, so a bad
        # value in one row quarantines that row instead of failing type inference.
        return self.con.read_csv(paths, all_varchar=True, header=True, union_by_name=True)

    def register(self, df: pd.DataFrame | pa.Table, name: str | None = None) -> ibis.Table:
        name = name or f"cvm_{uuid.uuid4().hex[:12]}"
        return self.con.create_table(name, df, temp=True)

    def execute(self, expr: ibis.Expr) -> pd.DataFrame:
        return self.con.execute(expr)

    def reuse(self, expr: ibis.Table) -> ibis.Table:
        """Left lazy: DuckDB re-reads columnar Parquet faster than it copies millions of
        rows into its own storage (measured: 0.8 s per validation pass over 25 M rows,
        more than 10 s to materialise them)."""
        return expr

    def write_parquet(self, expr: ibis.Table, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=False)
        self.con.to_parquet(expr, directory / "part-00000.parquet", compression="zstd")

    def _close(self) -> None:
        release_cached(self.con)
        self.con.disconnect()


class SparkEngine(_Lifetime):
    """Apache Spark through Ibis's PySpark backend: ``local[*]`` or any master URL."""

    name: EngineName = "spark"

    def __init__(self, master: str = "local[*]", app_name: str = "cvm",
                 conf: dict[str, str] | None = None) -> None:
        # Executors must run the same interpreter as the driver, or they fail to
        # import pandas/pyarrow for Arrow transfers.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        import warnings

        # PySpark 4.3 warns on every pandas conversion that it predates pandas 3; the paths
        # used here are covered by the DuckDB/Spark parity tests.
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                                category=FutureWarning)
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        # A session this process already runs (a caller's, a test's) is borrowed, not owned:
        # closing this engine then leaves it running for its owner.
        self.owns_session = SparkContext._active_spark_context is None
        builder = (
            SparkSession.builder.master(master)
            .appName(app_name)
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", os.environ.get("CVM_SPARK_SHUFFLE_PARTITIONS", "8"))
        )
        if master.startswith("local"):
            # In local mode the driver JVM does all the work; Spark's 1 GB default heap runs
            # out of memory on a million customers. On a cluster, spark-submit settings rule.
            builder = builder.config("spark.driver.memory", os.environ.get("CVM_SPARK_DRIVER_MEMORY", "4g"))
        for key, value in (conf or {}).items():
            builder = builder.config(key, value)
        self.session = builder.getOrCreate()
        self.session.sparkContext.setLogLevel("ERROR")
        self.con = ibis.pyspark.connect(self.session)
        self._opened()

    def read(self, files: list[Path], fmt: FileFormat) -> ibis.Table:
        # absolute: the JVM resolves relative paths against its own working directory
        paths = [str(Path(p).resolve()) for p in files]
        if fmt == "parquet":
            df = self.session.read.parquet(*paths)
        else:
            df = self.session.read.csv(paths, header=True, inferSchema=False)
        name = f"cvm_{uuid.uuid4().hex[:12]}"
        df.createOrReplaceTempView(name)
        return self.con.table(name)

    def register(self, df: pd.DataFrame | pa.Table, name: str | None = None) -> ibis.Table:
        name = name or f"cvm_{uuid.uuid4().hex[:12]}"
        pdf = df.to_pandas() if isinstance(df, pa.Table) else df
        sdf = self.session.createDataFrame(pdf) if len(pdf) else self.session.createDataFrame(
            pdf, schema=_empty_spark_schema(pdf))
        sdf.createOrReplaceTempView(name)
        return self.con.table(name)

    def execute(self, expr: ibis.Expr) -> pd.DataFrame:
        return self.con.execute(expr)

    def reuse(self, expr: ibis.Table) -> ibis.Table:
        """Spark recomputes a plan for every action: cache what several actions read."""
        return expr.cache()

    def write_parquet(self, expr: ibis.Table, directory: Path) -> None:
        if directory.exists():
            raise FileExistsError(directory)
        df = self.session.sql(self.con.compile(expr))
        df.write.option("compression", "zstd").parquet(str(directory.resolve()))
        drop_spark_bookkeeping(directory)

    def _close(self) -> None:
        release_cached(self.con)
        if self.owns_session:
            stop_spark(self.session)


def release_cached(con: ibis.BaseBackend) -> None:
    """Drop the tables ``.cache()`` made on ``con`` now, while it is open: Ibis otherwise drops
    each when its expression is garbage-collected, which after the connection is closed
    fails with an error printed on stderr."""
    for name in list(getattr(con, "_cache_name_to_entry", {})):
        with contextlib.suppress(Exception):
            con._finalize_cached_table(name)


def stop_spark(session) -> None:
    """Stop a Spark session and the JVM behind it (PySpark keeps the JVM running after
    ``SparkSession.stop()`` until the interpreter exits); the next session starts a new one."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    with contextlib.suppress(Exception):  # the JVM may already be gone
        gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is not None:
        # the gateway JVM exits when its stdin closes (PySpark's own liveness signal)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - not stopping in time: end it
            proc.kill()
            proc.wait(timeout=30)


def drop_spark_bookkeeping(directory: Path) -> None:
    """Spark leaves _SUCCESS and .crc files next to the data; readers only want Parquet."""
    for extra in directory.iterdir():
        if extra.name.startswith(("_", ".")):
            extra.unlink()


def release_memory() -> None:
    """Hand memory freed by pandas/Arrow back to the OS before a big engine query.

    Without it the process keeps the peak of a previous step (glibc and Arrow keep
    freed blocks), which counts against the peak RSS of the whole build."""
    import ctypes
    import gc

    gc.collect()
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _empty_spark_schema(pdf: pd.DataFrame):
    from pyspark.sql import types as T

    mapping = {"int64": T.LongType(), "float64": T.DoubleType(), "bool": T.BooleanType(),
               "datetime64[ns]": T.TimestampType(), "datetime64[us]": T.TimestampType()}
    fields = [T.StructField(c, mapping.get(str(pdf[c].dtype), T.StringType()), True) for c in pdf.columns]
    return T.StructType(fields)


#: DuckDB's own default is 80 % of RAM; a fixed cap keeps a build's footprint predictable
#: (it spills to CVM_HOME/tmp beyond it). Override with CVM_DUCKDB_MEMORY_LIMIT.
DEFAULT_DUCKDB_MEMORY = "4GB"


def open_engine(name: EngineName, *, spark_master: str | None = None, temp_dir: Path | None = None,
                threads: int | None = None, memory_limit: str | None = None) -> Engine:
    """Open the named engine. ``spark_master`` defaults to ``local[*]``."""
    if name == "duckdb":
        limit = memory_limit or os.environ.get("CVM_DUCKDB_MEMORY_LIMIT", DEFAULT_DUCKDB_MEMORY)
        return DuckDBEngine(threads=threads, memory_limit=limit, temp_dir=temp_dir)
    if name == "spark":
        return SparkEngine(master=spark_master or "local[*]")
    raise ValueError(f"unknown engine {name!r}: choose duckdb or spark")
