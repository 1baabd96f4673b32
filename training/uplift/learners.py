"""Meta-learners of individual uplift on LightGBM: T-, X- and DR-learner.

Each estimates ``tau(x) = E[y | x, treated] - E[y | x, control]`` from a log of who was
treated: for a binary ``y`` the gain in response probability (LightGBM classifiers model
the outcome), for a continuous ``y`` the gain in its mean (LightGBM regressors).

* :class:`TLearner` fits one outcome model per group and subtracts them (sklift's
  ``TwoModels(method="vanilla")``). Simple, but each model is regularised on its own, so
  their difference carries both models' errors.
* :class:`XLearner` (Kunzel et al. 2019) imputes each row's effect with the other group's
  outcome model and regresses it, once per group; the two effect models are blended with
  the propensity. Good when one group is much smaller than the other.
* :class:`DRLearner` (Kennedy 2020; causalml's ``BaseDRLearner``) regresses the doubly
  robust pseudo-outcome built from cross-fitted outcome models and propensity: unbiased
  when either the outcome models or the propensity are right, and with a known propensity
  (a randomised log) the propensity always is.

The propensity ``P(treated | x)`` is passed to ``fit`` when the log records it (randomised
assignment: it is known exactly and used as is); otherwise the X- and DR-learner estimate it
with a LightGBM classifier, clipped to [0.01, 0.99] so no row's weight explodes.

Uncertainty: with ``n_bags > 0`` the whole learner is refit on bootstrap resamples and
:meth:`predict_interval` gives a per-row interval (see there). ``predict`` always uses the
model fit on all rows. The estimators follow scikit-learn's conventions: ``__init__`` only
stores its arguments, ``fit`` returns ``self``, learned attributes end in ``_``, inputs are
never changed, and a fixed ``random_state`` gives identical predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

Outcome = Literal["binary", "continuous", "auto"]

#: LightGBM settings unless ``params`` overrides them (each key replaces one). 50 rows per leaf
#: keeps the outcome models from chasing noise (the effect is small next to the outcome, and
#: their errors add up in it); deterministic: identical results on the same data and seed.
#: Measured on 1M rows x 41 features (one a category), 2 cores: one fit on all rows takes
#: 13 s (T), 36 s (X), 38 s (DR), both with an estimated propensity; each bag costs as much again.
DEFAULT_PARAMS: dict = {
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "verbose": -1,
    "deterministic": True,
}
#: below this many rows LightGBM runs on one thread (``threads_for``)
SMALL_ROWS = 50_000
#: below this many rows a matrix is predicted on the calling thread (as ``training.predictor``)
SINGLE_THREAD_ROWS = 64


def threads_for(rows: int) -> int:
    """LightGBM threads for ``rows`` training rows: 1 below ``SMALL_ROWS``, else 2. On small
    data threads cost more than they save, and OpenMP threads spinning on a core another
    process is using made an X-learner on 300 rows take 13 s instead of 0.04 s."""
    return 1 if rows < SMALL_ROWS else 2
#: estimated propensities are clipped to this range (known ones are used as given)
PROPENSITY_CLIP = (0.01, 0.99)


# ---------------------------------------------------------------------------------------------
# Fitted pieces


@dataclass(frozen=True)
class _Model:
    """``E[target | x]`` for one fitted piece: a LightGBM model, or a constant when the rows it
    was fit on held a single value (a bootstrap or fold of a rare outcome can)."""

    estimator: lgb.LGBMModel | None
    constant: float = 0.0

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """A frame goes through the scikit-learn wrapper; a float matrix (columns in the fit's
        order, categories as their codes) straight to the booster, the fast path scoring uses.
        Both give the same numbers (``tests/test_uplift_scores.py``)."""
        if self.estimator is None:
            return np.full(len(X), self.constant)
        if isinstance(X, np.ndarray):  # binary boosters output the probability, like predict_proba[:, 1]
            return self.estimator.booster_.predict(X, num_threads=1 if len(X) < SINGLE_THREAD_ROWS else 0)
        if isinstance(self.estimator, lgb.LGBMClassifier):
            return self.estimator.predict_proba(X)[:, 1]
        return self.estimator.predict(X)


def _fit_model(X: pd.DataFrame, target: np.ndarray, binary: bool, params: dict, seed: int) -> _Model:
    if len(target) == 0:
        raise ValueError("a model has no rows to learn from")
    if np.all(target == target[0]):
        return _Model(None, float(target[0]))
    cls = lgb.LGBMClassifier if binary else lgb.LGBMRegressor
    return _Model(cls(**params, random_state=seed).fit(X, target))


def _propensity(model: _Model, X: pd.DataFrame) -> np.ndarray:
    return np.clip(model.predict(X), *PROPENSITY_CLIP)


@dataclass(frozen=True)
class _TFit:
    control: _Model
    treated: _Model

    def uplift(self, X: pd.DataFrame) -> np.ndarray:
        return self.treated.predict(X) - self.control.predict(X)


@dataclass(frozen=True)
class _XFit:
    effect_control: _Model  # tau_0, fit on control rows to mu_1(x) - y
    effect_treated: _Model  # tau_1, fit on treated rows to y - mu_0(x)
    weight: _Model | float  # g: the estimated propensity, or the mean of the known one

    def uplift(self, X: pd.DataFrame) -> np.ndarray:
        g = self.weight if isinstance(self.weight, float) else _propensity(self.weight, X)
        # tau_0 leans on mu_1, learnt from the treated rows: the rarer treatment is around x,
        # the worse mu_1 there and the less weight tau_0 gets (Kunzel et al. 2019)
        return g * self.effect_control.predict(X) + (1.0 - g) * self.effect_treated.predict(X)


@dataclass(frozen=True)
class _DRFit:
    final: _Model

    def uplift(self, X: pd.DataFrame) -> np.ndarray:
        return self.final.predict(X)


_Fit = _TFit | _XFit | _DRFit


# ---------------------------------------------------------------------------------------------
# Input contracts


def _check_frame(X: object) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame, got {type(X).__name__}")
    if X.shape[1] == 0:
        raise ValueError("X has no columns")
    for column, dtype in X.dtypes.items():
        if not (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(dtype)
                or pd.api.types.is_bool_dtype(dtype)):
            raise ValueError(f"column {column!r} has dtype {dtype}: LightGBM needs numbers, booleans or "
                             "pandas category columns")
    return X


def _check_fit_inputs(X: object, treatment: object, y: object, propensity: object
                      ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None]:
    X = _check_frame(X)
    t = np.asarray(treatment, dtype="float64")
    y_ = np.asarray(y, dtype="float64")
    p = None if propensity is None else np.asarray(propensity, dtype="float64")
    for name, values in (("treatment", t), ("y", y_), ("propensity", p)):
        if values is None:
            continue
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
        if len(values) != len(X):
            raise ValueError(f"lengths differ: X has {len(X)} rows but {name} has {len(values)}")
        if not np.isfinite(values).all():
            raise ValueError(f"{name} has missing or infinite values")
    if not np.isin(t, (0.0, 1.0)).all():
        raise ValueError(f"treatment must hold only 0 (control) and 1 (treated), got values {np.unique(t)[:10]}")
    n_treated = int(t.sum())
    if n_treated == 0 or n_treated == len(t):
        group = "treated (1)" if n_treated else "control (0)"
        raise ValueError(f"treatment holds one group only (all {group}): uplift needs treated and control rows")
    if p is not None and not ((p > 0) & (p < 1)).all():
        raise ValueError("propensity must lie strictly between 0 and 1 (every row could have gone either way)")
    return X, t.astype(int), y_, p


def _resolve_outcome(outcome: Outcome, y: np.ndarray) -> Literal["binary", "continuous"]:
    is_binary = bool(np.isin(y, (0.0, 1.0)).all())
    if outcome == "auto":
        return "binary" if is_binary else "continuous"
    if outcome == "binary" and not is_binary:
        raise ValueError("outcome='binary' but y holds values other than 0 and 1")
    if outcome not in ("binary", "continuous"):
        raise ValueError(f"outcome must be 'binary', 'continuous' or 'auto', got {outcome!r}")
    return outcome


def _stratified_folds(rng: np.random.Generator, t: np.ndarray, n_folds: int) -> np.ndarray:
    """A fold number per row, balanced within the treated and within the control rows."""
    folds = np.empty(len(t), dtype=int)
    for group in (0, 1):
        rows = rng.permutation(np.flatnonzero(t == group))
        folds[rows] = np.arange(len(rows)) % n_folds
    return folds


def _stratified_bootstrap(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Row numbers of a bootstrap resample that keeps the treated and control counts."""
    parts = [rng.choice(rows, size=len(rows), replace=True)
             for rows in (np.flatnonzero(t == 0), np.flatnonzero(t == 1))]
    return np.sort(np.concatenate(parts))


# ---------------------------------------------------------------------------------------------
# Estimators


class _MetaLearner(BaseEstimator):
    """Shared fit / predict / predict_interval; subclasses say how one learner is fit."""

    def __init__(self, outcome: Outcome = "auto", params: dict | None = None, n_bags: int = 5,
                 random_state: int = 0):
        self.outcome = outcome
        self.params = params
        self.n_bags = n_bags
        self.random_state = random_state

    def _fit_one(self, X: pd.DataFrame, t: np.ndarray, y: np.ndarray, p: np.ndarray | None,
                 folds: np.ndarray, binary: bool, params: dict, rng: np.random.Generator) -> _Fit:
        raise NotImplementedError

    def _folds(self, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        return np.zeros(len(t), dtype=int)  # only the DR-learner cross-fits

    def fit(self, X: pd.DataFrame, treatment: np.ndarray, y: np.ndarray,
            propensity: np.ndarray | None = None) -> _MetaLearner:
        """Fit on a log of ``X``, ``treatment`` (0/1) and outcome ``y``.

        ``propensity`` is the known probability each row had of being treated (a randomised
        log records it); without it the X- and DR-learner estimate it. The T-learner does not
        use it.
        """
        if isinstance(self.n_bags, bool) or not isinstance(self.n_bags, (int, np.integer)) or (
                self.n_bags < 0 or self.n_bags == 1):
            raise ValueError(f"n_bags must be 0 (no intervals) or at least 2, got {self.n_bags!r}")
        X, t, y_, p = _check_fit_inputs(X, treatment, y, propensity)
        self.outcome_ = _resolve_outcome(self.outcome, y_)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        params = {**DEFAULT_PARAMS, "n_jobs": threads_for(len(X)), **(self.params or {})}
        binary = self.outcome_ == "binary"
        rng = np.random.default_rng(self.random_state)

        self.model_ = self._fit_one(X, t, y_, p, self._folds(rng, t), binary, params, rng)
        bags = []
        for _ in range(self.n_bags):
            rows = _stratified_bootstrap(rng, t)
            # a row drawn twice stays in one fold: its copy must not judge the model it trained
            bag_folds = self._folds(rng, t)[rows]
            bags.append(self._fit_one(X.iloc[rows], t[rows], y_[rows], None if p is None else p[rows],
                                      bag_folds, binary, params, rng))
        self.bags_ = bags
        return self

    def _features(self, X: object) -> pd.DataFrame:
        check_is_fitted(self, "model_")
        X = _check_frame(X)
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks columns the learner was fit on: {missing}")
        return X[list(self.feature_names_in_)]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Individual uplift per row, from the model fit on all rows."""
        X = self._features(X)
        return self.model_.uplift(X)

    def predict_interval(self, X: pd.DataFrame, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """A ``1 - alpha`` interval per row: ``predict(X) -/+ t * bootstrap standard error``.

        The standard error is the standard deviation of the ``n_bags`` bootstrap learners'
        predictions and ``t`` the Student quantile with ``n_bags - 1`` degrees of freedom.
        A normal interval rather than bootstrap percentiles, because the bags are few: with
        5 bags the 2.5 and 97.5 % percentiles are just the most extreme bags (too narrow,
        and as noisy as a single draw), whereas the standard deviation uses every bag and the
        t quantile pays for estimating it from so few.

        It measures how much the estimate would move on another log of the same size, not
        the learner's bias: trees shrink effects toward the average, so read it as the
        estimate's noise, not a guarantee about the true effect.
        """
        _, low, high = self._with_interval(self._features(X), alpha)
        return low, high

    def predict_matrix(self, X: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict`` and ``predict_interval`` in one pass over a float matrix whose columns
        are ``feature_names_in_`` in order (categories as their codes): the scoring path."""
        check_is_fitted(self, "model_")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must be a matrix of {self.n_features_in_} columns, got shape {X.shape}")
        return self._with_interval(X, alpha)

    def _with_interval(self, X: pd.DataFrame | np.ndarray, alpha: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_is_fitted(self, "model_")
        if not self.bags_:
            raise ValueError("predict_interval needs bootstrap bags, but this learner was fit with n_bags=0; "
                             "refit with n_bags >= 2")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
        centre = self.model_.uplift(X)
        draws = np.stack([bag.uplift(X) for bag in self.bags_])
        half = stats.t.ppf(1 - alpha / 2, df=len(self.bags_) - 1) * draws.std(axis=0, ddof=1)
        return centre, centre - half, centre + half


def _outcome_models(X: pd.DataFrame, t: np.ndarray, y: np.ndarray, binary: bool, params: dict,
                    rng: np.random.Generator) -> tuple[_Model, _Model]:
    control, treated = t == 0, t == 1
    seeds = rng.integers(2**31 - 1, size=2)
    return (_fit_model(X[control], y[control], binary, params, int(seeds[0])),
            _fit_model(X[treated], y[treated], binary, params, int(seeds[1])))


class TLearner(_MetaLearner):
    """Two outcome models, one per group: ``tau(x) = mu_1(x) - mu_0(x)``.

    Attributes: ``model_`` (the fit on all rows: ``control``, ``treated``), ``bags_`` (the
    bootstrap fits), ``outcome_`` ("binary" or "continuous"), ``feature_names_in_``,
    ``n_features_in_``.
    """

    def _fit_one(self, X, t, y, p, folds, binary, params, rng) -> _TFit:
        return _TFit(*_outcome_models(X, t, y, binary, params, rng))


class XLearner(_MetaLearner):
    """X-learner: impute effects across groups, regress them, blend by the propensity.

    ``D_1 = y - mu_0(x)`` on treated rows and ``D_0 = mu_1(x) - y`` on control rows are
    regressed on ``x`` (``tau_1``, ``tau_0``); ``tau(x) = g(x) tau_0(x) + (1 - g(x)) tau_1(x)``
    with ``g`` the estimated propensity, or, when the known propensity was given to ``fit``,
    its mean (any weight in [0, 1] gives a consistent estimate; the mean is exact for the
    usual randomised log with one treatment rate and needs nothing at prediction time).

    Attributes: ``model_`` (``effect_control``, ``effect_treated``, ``weight``), ``bags_``,
    ``outcome_``, ``feature_names_in_``, ``n_features_in_``.
    """

    def _fit_one(self, X, t, y, p, folds, binary, params, rng) -> _XFit:
        mu0, mu1 = _outcome_models(X, t, y, binary, params, rng)
        control, treated = t == 0, t == 1
        seeds = rng.integers(2**31 - 1, size=3)
        effect_treated = _fit_model(X[treated], y[treated] - mu0.predict(X[treated]), False, params,
                                    int(seeds[0]))
        effect_control = _fit_model(X[control], mu1.predict(X[control]) - y[control], False, params,
                                    int(seeds[1]))
        weight = float(p.mean()) if p is not None else _fit_model(X, t, True, params, int(seeds[2]))
        return _XFit(effect_control, effect_treated, weight)


class DRLearner(_MetaLearner):
    """DR-learner: regress the doubly robust pseudo-outcome on ``x``.

    Rows are split into ``n_folds`` folds (balanced by group); for each fold the outcome
    models ``mu_0``, ``mu_1`` (and the propensity ``e`` when not given) are fit on the other
    folds and predict that fold, so no row is scored by a model that saw it. Then

        ``phi = mu_1 - mu_0 + t (y - mu_1) / e - (1 - t) (y - mu_0) / (1 - e)``

    is regressed on ``x`` with one LightGBM regressor on all rows (econml's layout; causalml
    averages one final model per fold instead, which costs ``n_folds`` times as much).
    Two folds by default: each nuisance model sees half the rows, the cheapest cross-fit.

    Attributes: ``model_`` (``final``, the pseudo-outcome regression; the nuisance models are
    not kept), ``bags_``, ``outcome_``, ``feature_names_in_``, ``n_features_in_``.
    """

    def __init__(self, outcome: Outcome = "auto", params: dict | None = None, n_bags: int = 5,
                 random_state: int = 0, n_folds: int = 2):
        super().__init__(outcome=outcome, params=params, n_bags=n_bags, random_state=random_state)
        self.n_folds = n_folds

    def _folds(self, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        if isinstance(self.n_folds, bool) or not isinstance(self.n_folds, (int, np.integer)) or self.n_folds < 2:
            raise ValueError(f"n_folds must be an integer >= 2, got {self.n_folds!r}")
        return _stratified_folds(rng, t, self.n_folds)

    def _fit_one(self, X, t, y, p, folds, binary, params, rng) -> _DRFit:
        m0, m1, e = np.empty(len(t)), np.empty(len(t)), np.empty(len(t))
        for fold in np.unique(folds):
            held, train = folds == fold, folds != fold
            x_train, x_held = X[train], X[held]
            mu0, mu1 = _outcome_models(x_train, t[train], y[train], binary, params, rng)
            m0[held], m1[held] = mu0.predict(x_held), mu1.predict(x_held)
            if p is None:
                propensity = _fit_model(x_train, t[train], True, params, int(rng.integers(2**31 - 1)))
                e[held] = _propensity(propensity, x_held)
        if p is not None:
            e = p
        phi = m1 - m0 + t * (y - m1) / e - (1 - t) * (y - m0) / (1 - e)
        return _DRFit(_fit_model(X, phi, False, params, int(rng.integers(2**31 - 1))))
