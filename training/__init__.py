"""Model training tracked in MLflow: labels, time-honest splits, LightGBM with Optuna,
baselines, champion/challenger registration. Reads feature snapshots from ``features``."""
