"""The BentoML scoring and next-best-offer service. Reads published feature snapshots
through ``features.online_store`` and champion models from the MLflow registry."""
