"""Offline jobs over whole snapshots: the nightly rescoring of every customer (``nightly``,
on DuckDB/pandas or Spark) and the offline evaluation of the offer policy."""
