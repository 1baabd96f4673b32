"""``cvm train uplift``: fit meta-learners on randomised assignments, choose by Qini on a
later period, judge against baselines, log to MLflow and register ``cvm-uplift``.

The steps, on assignments (``training.uplift.data``) joined to a feature snapshot taken
before the first of them:

1. split by time: the earlier assignments train, the later ones validate;
2. every learner (T, X, DR) in every shape (pooled with the offer as an input, or one model
   per offer) is fit on the training period and ranked on the validation period by its Qini
   coefficient; the best is refit with its bootstrap bags (the per-row intervals);
3. baselines in the same run, on the same validation rows: a random ranking, the propensity
   to convert used as if it were uplift (what a response-rate campaign targets), and the
   response model alone (P(convert | contacted), fit on the treated);
4. on synthetic data, the correlation with and the MSE against the true individual uplift;
5. MLflow: parameters, every candidate's and baseline's metrics, the Qini curve (plot and
   table), the model; registered as ``cvm-uplift`` through the champion/challenger gate on
   ``valid_qini`` (the champion is scored on the same validation rows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from base.home import Home
from training.encode import FeatureEncoder
from training.tasks import UPLIFT_SPEC
from training.uplift.config import UpliftConfig
from training.uplift.data import NoRandomisedDataError, split_by_time
from training.uplift.learners import DRLearner, TLearner, XLearner, threads_for
from training.uplift.metrics import auuc, qini_coefficient, qini_frame, uplift_at_k
from training.uplift.model import OFFER_COLUMN, UpliftModel, UpliftPyfunc

LEARNERS = {"t": TLearner, "x": XLearner, "dr": DRLearner}
#: the shares of customers targeted that uplift@k reports
AT_K = (0.1, 0.3)


@dataclass
class UpliftResult:
    as_of: date
    run_id: str
    chosen: str  # "<learner>/<mode>"
    metrics: dict[str, float]  # the chosen model's, on the validation period
    table: pd.DataFrame  # one row per candidate and baseline
    rows: dict[str, int]
    split: str
    decision: object | None = None  # training.registry.GateDecision
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not be fit


def judge(y: np.ndarray, t: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Qini coefficient, AUUC and uplift at 10 % / 30 % of a ranking on a randomised sample."""
    out = {"qini": qini_coefficient(y, score, t), "auuc": auuc(y, score, t)}
    for k in AT_K:
        out[f"uplift_at_{int(k * 100)}"] = uplift_at_k(y, score, t, k)
    return out


def _truth_metrics(pred: np.ndarray, true: np.ndarray | None) -> dict[str, float]:
    if true is None:
        return {}
    ok = np.isfinite(pred) & np.isfinite(true)
    if ok.sum() < 3 or np.std(pred[ok]) == 0 or np.std(true[ok]) == 0:  # no correlation defined
        return {"true_mse": float(np.mean((pred[ok] - true[ok]) ** 2))} if ok.any() else {}
    return {"true_corr": float(np.corrcoef(pred[ok], true[ok])[0, 1]),
            "true_mse": float(np.mean((pred[ok] - true[ok]) ** 2))}


def _fit(learner: str, mode: str, x_tr: pd.DataFrame, frame_tr: pd.DataFrame, cfg: UpliftConfig, *,
         n_bags: int, template: UpliftModel) -> UpliftModel:
    t, y = frame_tr["treatment"].to_numpy(), frame_tr["label"].to_numpy()
    p = frame_tr["assignment_p"].to_numpy(float)
    known_p = bool(np.isfinite(p).all())

    def one(rows: np.ndarray):
        return LEARNERS[learner](outcome="binary", params=cfg.lightgbm(), n_bags=n_bags,
                                 random_state=cfg.seed).fit(x_tr.iloc[rows], t[rows], y[rows],
                                                            propensity=p[rows] if known_p else None)

    model = UpliftModel(learner, mode, template.features, template.encoder, template.offers,
                        horizon_days=template.horizon_days, trained_as_of=template.trained_as_of)  # type: ignore[arg-type]
    if mode == "pooled":
        model.models["*"] = one(np.arange(len(frame_tr)))
        return model
    offer = frame_tr[OFFER_COLUMN].to_numpy()
    for o in template.offers:
        rows = np.flatnonzero(offer == o)
        if min((t[rows] == 1).sum(), (t[rows] == 0).sum()) >= cfg.min_group_rows:
            model.models[o] = one(rows)
    if not model.models:
        raise NoRandomisedDataError(f"per_offer: no offer has {cfg.min_group_rows} treated and "
                                    f"{cfg.min_group_rows} control training rows")
    return model


def _baselines(x_tr: pd.DataFrame, tr: pd.DataFrame, x_va: pd.DataFrame, cfg: UpliftConfig) -> dict[str, np.ndarray]:
    y, t = tr["label"].to_numpy(), tr["treatment"].to_numpy()
    params = {"n_jobs": threads_for(len(tr)), **cfg.lightgbm(), "random_state": cfg.seed}
    propensity = LGBMClassifier(**params).fit(x_tr, y)
    treated = t == 1
    response = LGBMClassifier(**params).fit(x_tr[treated], y[treated])
    rng = np.random.default_rng(cfg.seed)
    return {"random": rng.random(len(x_va)),
            "propensity": propensity.predict_proba(x_va)[:, 1],
            "response": response.predict_proba(x_va)[:, 1]}


def train_uplift(assignments: pd.DataFrame, features: pd.DataFrame, feature_columns: list[str], *, as_of: date,
                 cfg: UpliftConfig, home: Home, dataset: str, source: str, truth: pd.DataFrame | None = None,
                 register: bool = True, step: Callable[[str], None] | None = None) -> UpliftResult:
    """Train, choose, judge, log and register; ``features``: ``customer_id`` + ``feature_columns``
    as of a day before every assignment; ``truth``: (``customer_id``, ``offer_id``,
    ``true_uplift``) when the data is synthetic."""
    import mlflow

    from training import registry, tracking

    say = step or (lambda _m: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    say("split by time")
    train, valid, split = split_by_time(assignments, cfg.valid_share)
    frame_tr = train.merge(features, on="customer_id", how="inner", validate="many_to_one")
    frame_va = valid.merge(features, on="customer_id", how="inner", validate="many_to_one")
    offers = sorted(set(assignments[OFFER_COLUMN].astype(str)))
    encoder = FeatureEncoder(feature_columns).fit(frame_tr)
    template = UpliftModel("t", "pooled", list(feature_columns), encoder, offers, horizon_days=cfg.horizon_days,
                           trained_as_of=as_of.isoformat())
    y_va, t_va = frame_va["label"].to_numpy(), frame_va["treatment"].to_numpy()
    true_va = None
    if truth is not None:
        true_va = frame_va[["customer_id", OFFER_COLUMN]].merge(
            truth, on=["customer_id", OFFER_COLUMN], how="left")["true_uplift"].to_numpy(float)

    rows, fitted, skipped = [], {}, {}
    for mode in cfg.modes:
        design = UpliftModel("t", mode, template.features, encoder, offers)  # type: ignore[arg-type]
        x_tr = design.design(frame_tr)
        for learner in cfg.learners:
            name = f"{learner}/{mode}"
            say(f"fit {name}")
            s = time.perf_counter()
            try:
                model = _fit(learner, mode, x_tr, frame_tr, cfg, n_bags=0, template=template)
            except NoRandomisedDataError as exc:  # too few assignments for this shape: say so, go on
                skipped[name] = str(exc)
                continue
            pred = model.predict(frame_va)
            scored = np.nan_to_num(pred, nan=0.0)  # an offer without a model: no evidence of uplift
            rows.append({"model": name, "kind": "uplift", **judge(y_va, t_va, scored),
                         **_truth_metrics(pred, true_va), "seconds": time.perf_counter() - s})
            fitted[name] = (learner, mode)
    timings["candidates"] = time.perf_counter() - t0
    if not rows:
        raise NoRandomisedDataError("no uplift model could be fit: " + "; ".join(sorted(set(skipped.values()))))
    best = max(rows, key=lambda r: r["qini"])
    learner, mode = fitted[best["model"]]
    say(f"refit {best['model']} with {cfg.n_bags} bootstrap bags")
    design = UpliftModel(learner, mode, template.features, encoder, offers)  # type: ignore[arg-type]
    x_tr = design.design(frame_tr)
    chosen = _fit(learner, mode, x_tr, frame_tr, cfg, n_bags=cfg.n_bags, template=template)
    pred = chosen.predict(frame_va)
    metrics = {f"valid_{k}": v for k, v in judge(y_va, t_va, np.nan_to_num(pred, nan=0.0)).items()}
    metrics |= {f"valid_{k}": v for k, v in _truth_metrics(pred, true_va).items()}
    _, high = chosen.predict_interval(frame_va)
    metrics["valid_share_negative_interval"] = float(np.nanmean(high < 0))

    say("baselines")
    pooled = UpliftModel("t", "pooled", template.features, encoder, offers)
    base = _baselines(pooled.design(frame_tr), frame_tr, pooled.design(frame_va), cfg)
    for name, score in base.items():
        rows.append({"model": name, "kind": "baseline", **judge(y_va, t_va, score),
                     **_truth_metrics(score, true_va), "seconds": np.nan})
    table = pd.DataFrame(rows)
    propensity_qini = float(table.loc[table["model"] == "propensity", "qini"].iloc[0])
    metrics["valid_qini_over_propensity"] = (metrics["valid_qini"] / propensity_qini
                                             if propensity_qini > 0 else float("nan"))

    client = tracking.configure(home)
    experiment = tracking.experiment_id(client, home, UPLIFT_SPEC.experiment)
    counts = {"train": len(frame_tr), "valid": len(frame_va),
              "train_treated": int(frame_tr["treatment"].sum()), "valid_treated": int(t_va.sum())}
    say("log to MLflow")
    with mlflow.start_run(experiment_id=experiment, run_name=f"uplift as_of {as_of}") as run:
        mlflow.log_params({"task": "uplift", "as_of": as_of.isoformat(), "dataset": dataset, "source": source,
                           "split": f"{split:%Y-%m-%d}", "chosen": best["model"], "offers": len(offers),
                           "n_features": len(feature_columns), **cfg.model_dump()})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"rows_{k}": v for k, v in counts.items()})
        for r in rows:
            tag = r["model"].replace("/", "_")
            mlflow.log_metrics({f"{r['kind']}_{tag}_{k}": float(v) for k, v in r.items()
                                if k not in ("model", "kind") and isinstance(v, float | int) and np.isfinite(v)})
        curves = {best["model"]: np.nan_to_num(pred, nan=0.0), **base}
        mlflow.log_text(_qini_table(y_va, t_va, curves).to_csv(index=False), "qini_curve.csv")
        mlflow.log_figure(_qini_plot(y_va, t_va, curves), "qini_curve.png")
        mlflow.log_text(table.to_csv(index=False), "candidates.csv")
        if skipped:
            mlflow.set_tag("skipped_candidates", " | ".join(f"{k}: {v}" for k, v in skipped.items())[:5000])
        mlflow.log_dict({"features": list(feature_columns), "offers": offers}, "features.json")
        example = frame_va[chosen.inputs].head(5)
        info = mlflow.pyfunc.log_model(name="model", python_model=UpliftPyfunc(chosen),
                                       input_example=example,
                                       signature=mlflow.models.infer_signature(example, chosen.scores(example)))
        decision = None
        if register:
            def champion_value(uri: str) -> float | None:
                scores = mlflow.pyfunc.load_model(uri).predict(frame_va[chosen.inputs])
                return qini_coefficient(y_va, np.nan_to_num(scores["uplift"].to_numpy(float), nan=0.0), t_va)

            decision = registry.register_and_gate(
                client, "uplift", info.model_uri, metrics["valid_qini"], champion_value,
                tags={"as_of": as_of.isoformat(), "chosen": best["model"], "source": source,
                      "horizon_days": str(cfg.horizon_days)})
            mlflow.set_tag("registration", decision.reason)
        timings["total"] = time.perf_counter() - t0
        mlflow.log_metrics({f"seconds_{k}": v for k, v in timings.items()})
        mlflow.log_text(json.dumps({"metrics": metrics, "counts": counts}, indent=2), "uplift.json")
    return UpliftResult(as_of, run.info.run_id, best["model"], metrics, table, counts, f"{split:%Y-%m-%d}",
                        decision, timings, skipped)


def _qini_table(y: np.ndarray, t: np.ndarray, curves: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = [qini_frame(y, s, t).assign(model=name) for name, s in curves.items()]
    return pd.concat(frames, ignore_index=True)


def _qini_plot(y: np.ndarray, t: np.ndarray, curves: dict[str, np.ndarray]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.set_title("Qini curve on the validation period")
    ax.grid(alpha=0.3)
    for name, s in curves.items():
        f = qini_frame(y, s, t)
        ax.plot(f.iloc[:, 0], f.iloc[:, 1], label=f"{name} (Qini {qini_coefficient(y, s, t):.3f})")
    f = qini_frame(y, next(iter(curves.values())), t)
    ax.plot(f.iloc[:, 0], f.iloc[:, 2], ls=":", color="grey", label="random targeting")
    ax.set_xlabel("share of customers targeted, best uplift first")
    ax.set_ylabel("incremental conversions")
    ax.legend(fontsize=8)
    return fig
