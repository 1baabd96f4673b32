"""Point-in-time customer features: declared once (``definitions``), computed as Ibis
expressions (``build``) on DuckDB or Spark, written as snapshots (``snapshot``) and
published to the online store (``online_store``)."""
