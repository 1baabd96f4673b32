"""The BentoML scoring and next-best-offer service over the scoring core: the published
snapshot (``features.online_store``), champions from the MLflow registry or a Bento."""
