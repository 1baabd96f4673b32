"""Wiring of ``cvm train``: data -> labels -> tuned LightGBM -> evaluation -> MLflow -> registry.

Every step is a function of its own module; this one connects them for one task, logs
the run and returns a summary the CLI prints.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from base.engines import Engine
from base.home import Home
from features.build_config import BuildConfig
from features.definitions import FeatureSet, declare
from features.pipeline import dataset_shape
from sources.dataset import Dataset
from sources.load import load_sources
from training import metrics as M
from training.baselines import Baselines, baselines
from training.bgnbd import BGNBD
from training.bgnbd import OUTPUT_COLUMNS as BGNBD_OUTPUTS
from training.config import TrainConfig
from training.dataset import TrainingData, assemble, before, check_task, data_start
from training.encode import FeatureEncoder
from training.model import Calibrator, PyfuncModel, TaskModel
from training.origins import longest_horizon, plan_origins
from training.predictor import CROSS_SELL_CONTEXT
from training.tasks import TASK_SPECS, Task
from training.tune import fit, tune

log = logging.getLogger(__name__)

@dataclass
class TaskResult:
    task: Task
    as_of: date
    horizon_days: int
    run_id: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    primary: str
    beats_all_baselines: bool
    shortfalls: list[str]
    registration: object | None
    timings: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


def select_features(fs: FeatureSet, cfg: TrainConfig, task: Task) -> list[str]:
    """Model inputs from the snapshot: every non-key feature minus exclusions."""
    chosen = []
    wanted = cfg.features.include_only
    for spec in fs.model_features:
        tags = {spec.name, f"group:{spec.group}"}
        if wanted is not None and not tags & set(wanted):
            continue
        if tags & set(cfg.features.exclude):
            continue
        chosen.append(spec.name)
    if cfg.features.bgnbd:
        chosen += list(BGNBD_OUTPUTS)
    if task == "cross-sell":
        chosen += list(CROSS_SELL_CONTEXT)
    return chosen


def _target(task: Task, frame: pd.DataFrame) -> np.ndarray:
    return frame["spend" if task == "clv" else "label"].to_numpy(dtype="float64")


def _category_aucs(y: np.ndarray, score: np.ndarray, category: np.ndarray, categories) -> dict[str, float]:
    """AUC within each category that has both outcomes in the test snapshot."""
    out = {}
    for c in categories:
        hit = category == c
        if hit.any() and 0 < y[hit].sum() < hit.sum():
            out[c] = M.classification_metrics(y[hit], score[hit])["auc"]
    return out


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _evaluate(task: Task, model: TaskModel, data: TrainingData,
              base: Baselines) -> tuple[dict, dict, np.ndarray]:
    """The model's test metrics, each baseline's on the same rows, and the model's scores."""
    test = data.test
    y = _target(task, test)
    pred = model.score_rows(test)
    if task == "clv":
        metrics = {f"test_{k}": v for k, v in M.regression_metrics(y, pred).items()}
    else:
        metrics = {f"test_{k}": v for k, v in M.classification_metrics(y, pred).items()}
    if task == "next-purchase":
        orders = model.predict(test)["expected_orders"].to_numpy()
        metrics.update({f"test_orders_{k}": v for k, v in
                        M.regression_metrics(test["orders"].to_numpy(float), orders).items()})
    category = test["category"].to_numpy() if task == "cross-sell" else None
    if task == "cross-sell":
        per_cat = _category_aucs(y, pred, category, model.categories)
        metrics["test_mean_category_auc"] = _mean(per_cat.values())
        metrics.update({f"test_auc_{c}": v for c, v in per_cat.items()})
    table: dict[str, dict[str, float]] = {}
    for name, score in base.scores.items():
        table[name] = {f"test_{k}": v for k, v in M.classification_metrics(y, score).items()}
        if task == "cross-sell":  # over the same categories as the model's mean
            table[name]["test_mean_category_auc"] = _mean(_category_aucs(y, score, category, per_cat).values())
    truth, prefix = (test["orders"].to_numpy(float), "test_orders_") if task == "next-purchase" else (y, "test_")
    for name, value in base.values.items():
        table.setdefault(name, {}).update({f"{prefix}{k}": v for k, v in M.regression_metrics(truth, value).items()})
    return metrics, table, pred


def _scored_rows(model: TaskModel, data: TrainingData, base: Baselines) -> tuple[TrainingData, Baselines]:
    """The test rows the model scores, with the baselines' scores on the same rows. Only a
    per-category cross-sell model leaves rows unscored (categories too thin for a model of
    their own); model and baselines are then judged on the rows it does score."""
    scored = np.isfinite(model.score_rows(data.test))
    if scored.all():
        return data, base
    log.warning("%s: %d of %d test rows have no model (per-category cross-sell): judged on the rest",
                model.task, int((~scored).sum()), len(scored))
    test = data.test[scored].reset_index(drop=True)
    kept = Baselines({k: v[scored] for k, v in base.scores.items()}, {k: v[scored] for k, v in base.values.items()})
    return replace(data, test=test), kept


def _compare(task: Task, metrics: dict, table: dict) -> tuple[bool, list[str]]:
    """Does the model beat every baseline on the metrics the task is judged by?"""
    shortfalls = []
    for name, row in table.items():
        for metric, better in TASK_SPECS[task].judged:
            if metric not in row or metric not in metrics or np.isnan(row[metric]):
                continue
            ours, theirs = metrics[metric], row[metric]
            wins = ours > theirs if better == "max" else ours < theirs
            if not wins:
                shortfalls.append(f"{metric}: model {ours:.4f} does not beat baseline '{name}' ({theirs:.4f})")
    return not shortfalls, shortfalls


def train_task(task: Task, dataset: Dataset, as_of: date, engine: Engine, home: Home, config: BuildConfig,
               train_cfg: TrainConfig, *, horizon_days: int | None = None, trials: int | None = None,
               config_text: str = "", register: bool = True,
               step: Callable[[str], None] | None = None) -> TaskResult:
    """Train, evaluate, log and register one task as if today were ``as_of``."""
    import mlflow

    from training import plots, registry, tracking

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if trials is not None:
        train_cfg = train_cfg.model_copy(update={"budget": train_cfg.budget.model_copy(update={"trials": trials})})
    say = step or (lambda _msg: None)

    say("validate sources")
    sources = before(load_sources(dataset, engine, validation=config.validation), as_of)
    fs = declare(config.features, dataset_shape(sources, dataset, config.features))
    check_task(task, fs)
    start = data_start(sources)
    horizon = horizon_days or train_cfg.labels.horizon_days or TASK_SPECS[task].default_horizon_days
    if horizon is None:
        horizon = longest_horizon(as_of, start, train_cfg.origins, train_cfg.labels.max_clv_horizon_days)
    origins = plan_origins(as_of, start, horizon, train_cfg.origins)
    data = assemble(task, sources, fs, origins, train_cfg.labels, config.profiles, step=say)
    fingerprint = data.fingerprint()
    timings["data"] = time.perf_counter() - t_start

    say("fit BG/NBD")
    features = select_features(fs, train_cfg, task)
    # BG/NBD reads only features (history before an origin), never labels: fitted on the
    # test snapshot, the latest history there is, its 4 population parameters are the
    # best estimate and no test outcome reaches them.
    bg = BGNBD().fit(data.test) if train_cfg.features.bgnbd else None
    template = TaskModel(task, horizon, features, None, None, bgnbd=bg, categories=list(fs.shape.categories),
                         lookback_days=train_cfg.labels.cross_sell_lookback_days,
                         feature_set_fingerprint=fs.fingerprint(), trained_as_of=as_of.isoformat())
    design_tr, design_va = template.design(data.train), template.design(data.valid)
    encoder = FeatureEncoder(features).fit(design_tr)
    x_tr, x_va = encoder.transform(design_tr), encoder.transform(design_va)
    y_tr, y_va = _target(task, data.train), _target(task, data.valid)
    if task == "clv" and bg is not None:
        # Boost from the textbook model: the trees learn the correction to BG/NBD + Gamma-Gamma
        # expected spend, so a short or shifted training history cannot do worse than
        # the literature by much (early stopping judges the corrected prediction).
        template.residual_of_bgnbd = True
        y_tr = y_tr - template.clv_offset(data.train)
        y_va = y_va - template.clv_offset(data.valid)

    client = tracking.configure(home)
    experiment = tracking.experiment_id(client, home, TASK_SPECS[task].experiment)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{task} as_of {as_of}") as run:
        mlflow.log_params({
            "task": task, "as_of": as_of.isoformat(), "horizon_days": horizon, "dataset": dataset.name,
            "data_fingerprint": fingerprint, "feature_set": fs.fingerprint(),
            "n_features": len(features), "trials": train_cfg.budget.trials, "seed": train_cfg.seed,
            "origins_train": ",".join(d.isoformat() for d in origins.train),
            "origin_valid": origins.valid.isoformat(), "origin_test": origins.test.isoformat(),
        })
        mlflow.log_text(config_text or yaml.safe_dump(train_cfg.model_dump(mode="json")), "experiment.yaml")
        mlflow.log_dict({"features": features, "origins": origins.as_dict()}, "features.json")

        say(f"tune ({train_cfg.budget.trials} trials)")
        t0 = time.perf_counter()

        def log_trial(trial) -> None:
            with mlflow.start_run(experiment_id=experiment, run_name=f"trial {trial.number}", nested=True):
                mlflow.log_params({k: v for k, v in trial.params.items()})
                mlflow.set_tag("state", trial.state.name)
                if trial.value is not None:
                    mlflow.log_metric("valid_score", trial.value)
                if "best_iteration" in trial.user_attrs:
                    mlflow.log_metric("best_iteration", trial.user_attrs["best_iteration"])

        per_category: dict[str, object] = {}
        if task == "cross-sell" and train_cfg.cross_sell_mode == "per_category":
            result = None
            for c in fs.shape.categories:
                tr, va = (design_tr["category"] == c).to_numpy(), (design_va["category"] == c).to_numpy()
                if y_tr[tr].sum() == 0 or y_va[va].sum() == 0:
                    continue
                r = tune("binary", x_tr[tr], y_tr[tr], x_va[va], y_va[va], train_cfg, on_trial=log_trial)
                per_category[c] = r.estimator.booster_
                result = result or r
            tuned = result
        else:
            tuned = tune(TASK_SPECS[task].kind, x_tr, y_tr, x_va, y_va, train_cfg, on_trial=log_trial)
        timings["tune"] = time.perf_counter() - t0
        mlflow.log_params({f"best_{k}": v for k, v in tuned.params.items()})
        mlflow.log_metrics({"valid_score": tuned.value, "best_iteration": tuned.best_iteration,
                            "trials_run": tuned.trials, "trials_pruned": tuned.pruned})

        model = template.with_parts(encoder=encoder, booster=tuned.estimator.booster_, per_category=per_category)
        if task != "clv" and train_cfg.calibration != "none":
            say("calibrate")
            raw = model.score_rows(data.valid, calibrated=False)
            ok = np.isfinite(raw)  # per-category cross-sell: a category without a model scores nothing
            model = model.with_parts(calibrator=Calibrator(train_cfg.calibration).fit(raw[ok], y_va[ok]))
        if task == "next-purchase":
            say("fit expected orders")
            count = fit("count", {k: v for k, v in tuned.params.items() if k != "objective"}, train_cfg,
                        x_tr, data.train["orders"].to_numpy(float), x_va, data.valid["orders"].to_numpy(float))
            model = model.with_parts(count_booster=count.booster_)

        say("evaluate on the test snapshot")
        base = baselines(task, data.train, data.test, horizon, bgnbd=bg)
        data, base = _scored_rows(model, data, base)
        metrics, table, pred = _evaluate(task, model, data, base)
        beats, shortfalls = _compare(task, metrics, table)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for name, row in table.items():
            mlflow.log_metrics({f"baseline_{name}_{k}": v for k, v in row.items() if np.isfinite(v)})
        mlflow.set_tag("beats_all_baselines", str(beats).lower())
        if shortfalls:
            mlflow.set_tag("shortfalls", " | ".join(shortfalls)[:5000])

        say("plots and artifacts")
        _log_artifacts(task, model, data, base, metrics, table, pred, shortfalls, plots)

        say("log and register the model")
        input_example = _input_example(data.test, model)
        output_example = model.predict(input_example)
        signature = mlflow.models.infer_signature(input_example, output_example)
        with _quiet_pickle_warning():
            info = mlflow.pyfunc.log_model(name="model", python_model=PyfuncModel(model), signature=signature,
                                           input_example=input_example, code_paths=[str(Path(__file__).parent)])
        decision = None
        if register:
            primary = TASK_SPECS[task].primary
            test_frame = data.test.drop(columns=["label", "orders", "spend"], errors="ignore")

            def champion_value(model_uri: str) -> float | None:
                return _champion_metric(task, model_uri, data, test_frame)

            decision = registry.register_and_gate(
                client, task, info.model_uri, metrics[primary], champion_value,
                tags={"as_of": as_of.isoformat(), "data_fingerprint": fingerprint,
                      "feature_set": fs.fingerprint(), "horizon_days": str(horizon)})
            mlflow.set_tag("registration", decision.reason)
        timings["total"] = time.perf_counter() - t_start
        mlflow.log_metrics({f"seconds_{k}": v for k, v in timings.items()})
    primary = TASK_SPECS[task].primary
    return TaskResult(task, as_of, horizon, run.info.run_id, metrics, table, primary, beats, shortfalls, decision,
                      timings, {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)})


def _input_example(test: pd.DataFrame, model: TaskModel) -> pd.DataFrame:
    """Five snapshot rows (one per customer), integers as floats: a feature can be missing
    at scoring time, and MLflow's schema rejects a null in an integer column."""
    rows = test.drop_duplicates("customer_id")[["customer_id", *model.snapshot_columns()]].head(5)
    rows = rows.reset_index(drop=True)
    for col in rows.columns:
        if pd.api.types.is_integer_dtype(rows[col]) or pd.api.types.is_bool_dtype(rows[col]):
            rows[col] = rows[col].astype("float64")
    return rows


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "serialized using CloudPickle" not in record.getMessage()


@contextmanager
def _quiet_pickle_warning():
    """MLflow warns on every pickled python_model; ours is code shipped with the model
    (code_paths), so the warning is noise in every training run."""
    target = logging.getLogger("mlflow.pyfunc")
    f = _DropPickleWarning()
    target.addFilter(f)
    try:
        yield
    finally:
        target.removeFilter(f)


def _champion_metric(task: Task, model_uri: str, data: TrainingData, test_frame: pd.DataFrame) -> float | None:
    """The current champion's primary metric on this run's test snapshot; None when it is
    another task's model. Any failure to load or score it propagates: the registry
    reports the champion as not comparable and leaves the decision to a person."""
    import mlflow

    champion = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model
    if champion.task != task:
        return None
    pred = champion.score_rows(test_frame)
    y = _target(task, data.test)
    if task == "clv":
        return M.regression_metrics(y, pred)["mae"]
    if task == "cross-sell":
        per = _category_aucs(y, pred, data.test["category"].to_numpy(), champion.categories)
        return _mean(per.values()) if per else None
    return M.classification_metrics(y, pred)["auc"]


def _log_artifacts(task, model: TaskModel, data: TrainingData, base: Baselines, metrics, table, pred, shortfalls,
                   plots) -> None:
    import mlflow

    y = _target(task, data.test)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows = [{"model": "lightgbm", **metrics}] + [{"model": f"baseline:{k}", **v} for k, v in table.items()]
        evaluation = pd.DataFrame(rows)
        evaluation.to_csv(out / "evaluation.csv", index=False)
        (out / "evaluation.md").write_text(_markdown(evaluation, shortfalls))
        figs = {}
        if task != "clv":
            scores = {"lightgbm": pred, **base.scores}
            figs["roc.png"] = plots.roc_plot(y, scores)
            figs["pr.png"] = plots.pr_plot(y, scores)
            figs["gains.png"] = plots.gains_plot(y, scores)
            raw = model.score_rows(data.test, calibrated=False)
            figs["calibration.png"] = plots.calibration_plot(y, {"raw": raw, "calibrated": pred})
        else:
            figs["gains.png"] = plots.gains_plot(y, {"lightgbm": pred, **base.values})
        # the test set's outcomes and every model's scores: the report draws its model cards from them
        preds = {"y": np.asarray(y, dtype="float64"), "lightgbm": np.asarray(pred, dtype="float64")}
        for name, values in (base.values if task == "clv" else base.scores).items():
            preds[f"baseline:{name}"] = np.asarray(values, dtype="float64")
        if task != "clv":
            preds["raw"] = np.asarray(raw, dtype="float64")
        pd.DataFrame(preds).to_parquet(out / "test_predictions.parquet", index=False)
        importance = pd.DataFrame({"feature": model.features,
                                   "gain": model.booster.feature_importance(importance_type="gain")})
        importance.sort_values("gain", ascending=False).to_csv(out / "feature_importance.csv", index=False)
        figs["feature_importance.png"] = plots.importance_plot(importance["feature"].tolist(),
                                                               importance["gain"].to_numpy())
        sample = data.test.sample(n=min(2000, len(data.test)), random_state=0)
        contrib = model.contributions(sample)
        figs["shap_summary.png"] = plots.shap_summary_plot(contrib.to_numpy(), model.inputs(sample), model.features)
        for name, fig in figs.items():
            fig.savefig(out / name, dpi=110, bbox_inches="tight")
        mlflow.log_artifacts(str(out), "evaluation")


def _markdown(frame: pd.DataFrame, shortfalls: list[str]) -> str:
    cols = [c for c in frame.columns if c != "model"]
    lines = ["| model | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for _, row in frame.iterrows():
        lines.append(f"| {row['model']} | " + " | ".join(
            "" if pd.isna(row[c]) else f"{row[c]:.4f}" for c in cols) + " |")
    lines.append("")
    lines.append("The model beats every baseline." if not shortfalls else
                 "**The model does not beat every baseline:**\n" + "\n".join(f"- {s}" for s in shortfalls))
    return "\n".join(lines) + "\n"
