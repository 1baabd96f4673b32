"""The offer catalog: what can be offered, to whom, through which channel, how often.

Written in YAML by marketers, checked strictly at load: an unknown field, a bad value
or a target category the dataset does not have is an error naming the offer and the
field. The next-best-offer engine (``scoring.nbo``) ranks offers by

    priority = propensity x value x lever - cost

with the propensity and the value chosen by the offer's type and value model:

========== ================================== ===================================================
type       propensity                          value (``value.model``)
========== ================================== ===================================================
cross_sell cross-sell probability of the       ``category_spend``: margin x a buyer's expected
           target category                     spend in that category over the horizon
retention  churn probability (who needs it)    ``clv_share``: save_rate x predicted CLV
upsell     next-purchase probability           ``basket_uplift``: uplift x margin x expected
                                               orders x average order value
loyalty    next-purchase probability           ``clv_share``: rate x predicted CLV
========== ================================== ===================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.definitions import SEGMENTS

OfferType = Literal["cross_sell", "retention", "upsell", "loyalty"]
ValueModelName = Literal["category_spend", "clv_share", "basket_uplift", "fixed"]
#: scores an eligibility range may refer to
SCORE_NAMES = ("churn_probability", "next_purchase_probability", "expected_orders", "clv", "propensity")
#: which value models make sense for which offer type
ALLOWED_VALUE_MODELS: dict[str, tuple[str, ...]] = {
    "cross_sell": ("category_spend", "fixed"),
    "retention": ("clv_share", "fixed"),
    "upsell": ("basket_uplift", "fixed"),
    "loyalty": ("clv_share", "fixed"),
}

Money = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class CatalogError(ValueError):
    """The catalog cannot be used; the message names the file, the offer and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueModel(_Strict):
    """How much an accepted offer is worth (in the dataset's currency)."""

    model: ValueModelName
    margin: Share = 0.3  # category_spend, basket_uplift: gross margin on the extra spend
    rate: Share = 0.1  # clv_share: share of the CLV saved or gained; basket_uplift: spend uplift
    amount: Money = 0.0  # fixed: the value itself


class ScoreRange(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class Eligibility(_Strict):
    segments: list[str] | None = None  # RFM segments allowed (None: all, and unknown customers)
    exclude_segments: list[str] = Field(default_factory=list)
    score_ranges: dict[str, ScoreRange] = Field(default_factory=dict)
    # not offered to customers who bought the target category in the last N days
    exclude_if_bought_within_days: Annotated[int, Field(ge=1)] | None = None
    known_customers_only: bool = False  # cold-start customers are not eligible

    @field_validator("segments", "exclude_segments")
    @classmethod
    def _known_segments(cls, v: list[str] | None) -> list[str] | None:
        bad = sorted(set(v or []) - set(SEGMENTS))
        if bad:
            raise ValueError(f"unknown segment(s) {bad}; segments are {list(SEGMENTS)}")
        return v

    @field_validator("score_ranges")
    @classmethod
    def _known_scores(cls, v: dict[str, ScoreRange]) -> dict[str, ScoreRange]:
        bad = sorted(set(v) - set(SCORE_NAMES))
        if bad:
            raise ValueError(f"unknown score(s) {bad}; scores are {list(SCORE_NAMES)}")
        return v


class ContactCap(_Strict):
    max_contacts: Annotated[int, Field(ge=1)]
    window_days: Annotated[int, Field(ge=1)]


OutcomeType = Literal["impression", "click", "accept", "reject", "convert"]


class Suppression(_Strict):
    """Outcome-based suppression (Pega's contact policy): ``count`` outcomes of ``outcome``
    for this offer within ``within_days`` pause the offer for ``pause_days`` after the
    last of them. Counted from the decision log's outcomes."""

    outcome: OutcomeType
    count: Annotated[int, Field(ge=1)]
    within_days: Annotated[int, Field(ge=1)]
    pause_days: Annotated[int, Field(ge=1)]


class Experiment(_Strict):
    """The randomised arms every decision is assigned to, by a hash of (customer id, salt,
    period): ``control_share`` get no offer (the global control group), ``exploration_share``
    a uniformly random eligible offer, everyone else the policy's choice. A customer keeps
    an arm for ``period_days`` (periods count from ``epoch``); a new salt re-draws everyone."""

    salt: Annotated[str, Field(min_length=1, max_length=200)] = "cvm"
    period_days: Annotated[int, Field(ge=1, le=3650)] = 90
    epoch: date = date(2000, 1, 1)
    control_share: Share = 0.05
    exploration_share: Share = 0.05

    @model_validator(mode="after")
    def _shares(self) -> Experiment:
        if self.control_share + self.exploration_share >= 1:
            raise ValueError(f"control_share {self.control_share} + exploration_share {self.exploration_share} "
                             "leave no customer for the policy (their sum must be below 1)")
        return self

    @property
    def policy_share(self) -> float:
        return 1.0 - self.control_share - self.exploration_share


class Offer(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    type: OfferType
    target_category: str | None = None
    cost: Money = 0.0  # cost per contact (coupon face value x redemption, postage, ...)
    lever: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = 1.0  # business priority weight
    # what expected value multiplies: the task model's propensity (who will buy), or the
    # cvm-uplift champion's uplift (whom the contact makes buy); uplift needs cvm train uplift
    propensity: Literal["model", "uplift"] = "model"
    value: ValueModel
    eligibility: Eligibility = Field(default_factory=Eligibility)
    channels: Annotated[list[str], Field(min_length=1)]
    cooldown_days: Annotated[int, Field(ge=0)] = 0  # not again within N days of this offer's last contact
    cap: ContactCap | None = None  # this offer's contacts per customer
    campaign_ids: list[str] = Field(default_factory=list)  # past campaigns that were this offer
    suppression: list[Suppression] = Field(default_factory=list)  # outcome rules that pause this offer

    @model_validator(mode="after")
    def _consistent(self) -> Offer:
        if self.type == "cross_sell" and not self.target_category:
            raise ValueError("a cross_sell offer needs target_category")
        if self.value.model == "category_spend" and not self.target_category:
            raise ValueError("value model category_spend needs target_category")
        if self.value.model not in ALLOWED_VALUE_MODELS[self.type]:
            raise ValueError(f"value model {self.value.model!r} does not fit offer type {self.type!r} "
                             f"(allowed: {list(ALLOWED_VALUE_MODELS[self.type])})")
        if self.eligibility.exclude_if_bought_within_days and not self.target_category:
            raise ValueError("eligibility.exclude_if_bought_within_days needs target_category")
        return self


class ContactPolicy(_Strict):
    """Caps across all offers, per customer, counted from the contact history."""

    caps: list[ContactCap] = Field(default_factory=list)
    min_expected_value: float = 0.0  # offers whose priority is not above this are never recommended


class Catalog(_Strict):
    version: Annotated[str, Field(min_length=1)] = "1"
    currency: str = "USD"
    horizon_days: Annotated[int, Field(ge=1, le=3650)] = 28  # value horizon of category_spend
    channels: Annotated[list[str], Field(min_length=1)]
    contact_policy: ContactPolicy = Field(default_factory=ContactPolicy)
    experiment: Experiment = Field(default_factory=Experiment)
    offers: Annotated[list[Offer], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        ids = [o.id for o in self.offers]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate offer id(s) {dupes}")
        for o in self.offers:
            bad = sorted(set(o.channels) - set(self.channels))
            if bad:
                raise ValueError(f"offer {o.id!r}: unknown channel(s) {bad}; the catalog's channels are "
                                 f"{self.channels}")
        return self

    def lookback_days(self) -> int:
        """How far back the contact policy looks: the longest cap window, cooldown or
        suppression span (within + pause) of the catalog."""
        spans = [c.window_days for c in self.contact_policy.caps]
        for o in self.offers:
            spans += [o.cooldown_days, o.cap.window_days if o.cap else 0]
            spans += [r.within_days + r.pause_days for r in o.suppression]
        return max(spans, default=0)

    def offer(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.id == offer_id:
                return o
        raise KeyError(offer_id)

    def check_categories(self, categories: Iterable[str], source: str = "catalog") -> Catalog:
        """Reject target categories the dataset (the cross-sell model) does not know."""
        known = list(categories)
        bad = [(o.id, o.target_category) for o in self.offers
               if o.target_category is not None and o.target_category not in known]
        if bad:
            lines = "; ".join(f"offer {i!r}: target_category {c!r}" for i, c in bad)
            raise CatalogError(f"{source}: unknown categor{'y' if len(bad) == 1 else 'ies'}: {lines}. "
                               f"Known categories: {known}")
        return self


def _location(loc: tuple, data: dict) -> str:
    """'offers[3] (xs-meat).value.margin' from a pydantic error location."""
    parts: list[str] = []
    node: object = data
    for p in loc:
        if isinstance(p, int):
            name = node[p].get("id") if isinstance(node, list) and p < len(node) and isinstance(node[p], dict) \
                else None
            parts[-1] = f"{parts[-1]}[{p}]" + (f" ({name})" if name else "") if parts else f"[{p}]"
        else:
            parts.append(str(p))
        try:
            node = node[p]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts) or "(top level)"


def parse_catalog(data: object, source: str = "catalog", categories: Iterable[str] | None = None) -> Catalog:
    """A catalog from parsed YAML/JSON; ``CatalogError`` lists every problem found."""
    if not isinstance(data, dict):
        raise CatalogError(f"{source}: expected a mapping with 'channels' and 'offers', got {type(data).__name__}")
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_location(e['loc'], data)}: {e['msg']}" for e in exc.errors()]
        raise CatalogError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)) from None
    if categories is not None:
        catalog.check_categories(categories, source)
    return catalog


def load_catalog(path: str | Path, categories: Iterable[str] | None = None) -> Catalog:
    """Read and validate a YAML catalog (and its target categories, when given)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"offer catalog {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(data, str(path), categories)


#: a dataset directory's own catalog (``cvm nbo init`` writes it): it travels with the data
DATASET_CATALOG = "catalog.yaml"
#: the catalogs shipped with the code, in ``scoring/catalogs/``
SHIPPED_CATALOGS = Path(__file__).parent / "catalogs"
#: the shipped catalog of datasets written by ``cvm synth``
SYNTHETIC = "synthetic"


class NoCatalogError(LookupError):
    """No offer catalog is configured for the dataset: nothing can be offered (scores can)."""


def default_catalog_path(name: str) -> Path:
    """A catalog shipped with the code, ``scoring/catalogs/<name>.yaml`` (``completejourney``,
    ``synthetic``). Which catalog a dataset uses is ``resolve_catalog_path``'s decision."""
    return SHIPPED_CATALOGS / f"{name}.yaml"


def resolve_catalog_path(dataset: str, explicit: str | Path | None = None) -> Path | None:
    """The offer catalog of ``dataset`` (a directory or a built-in name, as ``--dataset``
    takes it), or None when it has none. The one rule of the service, the nightly batch,
    ``cvm nbo`` and ``cvm bento``:

    1. ``explicit`` (``--catalog FILE`` / ``CVM_CATALOG``), returned as given (a missing
       file is then ``load_catalog``'s error, never silently skipped);
    2. a dataset directory's own ``catalog.yaml`` (``DATASET_CATALOG``);
    3. the built-in dataset (``completejourney``, not a directory): its shipped catalog.

    A directory is never matched to a shipped catalog, by its name or its kind: a user's
    directory called ``completejourney`` without a ``catalog.yaml`` has no catalog, and a
    ``cvm synth`` directory uses ``scoring/catalogs/synthetic.yaml`` only when given it
    (its cross-sell targets must be categories the trained model scores, which depends on
    the data's size).
    """
    from sources.dataset import dataset_file

    return dataset_file(dataset, explicit, DATASET_CATALOG, default_catalog_path(dataset))


def no_catalog_message(dataset: str) -> str:
    """What to tell a user whose dataset has no catalog: how to get one."""
    return (f"no offer catalog configured for dataset {dataset!r}: nothing can be offered (scores are not "
            f"affected). Write a starter catalog with `cvm nbo init --dataset DIR` (it writes DIR/{DATASET_CATALOG}, "
            "which is then found by itself) or give one with --catalog FILE / CVM_CATALOG")
