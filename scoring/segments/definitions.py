"""Customer segments declared in YAML: conditions on features, scores, the RFM segment and event
counts, combined with and / or / not to any depth.

    segments:
      - name: big_lapsed
        description: spent over 1,000 in the year, no order for a month
        where:
          and:
            - {feature: monetary, op: ">", value: 1000}
            - {feature: recency_days, op: ">", value: 30}
      - name: cart_no_buy
        realtime: true
        where:
          and:
            - {events: {type: add_to_cart, within_days: 90}, op: ">=", value: 1}
            - not: {events: {type: purchase, within_days: 30}, op: ">=", value: 1}

A condition is a mapping with exactly one of these keys:

* ``{feature: NAME, op: OP, value: V}``: a column of the feature snapshot. ``op`` is one of
  ``> >= < <= == !=`` (a number; ``==``/``!=`` also a string), ``in`` / ``not_in`` (a list),
  ``is_null`` / ``not_null`` (no value);
* ``{score: NAME, op: OP, value: V}``: a score of the nightly batch (``scores.parquet``) or of
  /score: churn_probability, next_purchase_probability, expected_orders, clv;
* ``{rfm_segment: [NAME, ...]}``: the customer's RFM segment is one of these (the eleven of
  ``features.definitions.SEGMENTS``);
* ``{events: {type: T, within_days: N, category: C}, op: OP, value: V}``: the number of events
  of type T in the N days before as_of (``category`` optional), compared with a number;
* ``{and: [...]}``, ``{or: [...]}``, ``{not: CONDITION}``.

Events are counted in ``[00:00 of as_of - N days, 00:00 of as_of)`` (``base.dates.cutoff``):
``purchase`` events are the dataset's orders (distinct orders of ``transactions``, at the time of
their first line; with ``category``, orders with a line in that category), every other type the
rows of the ``events`` table (which carry no category). A dataset without an ``events`` table
(Complete Journey) can count purchases only. A count the feature set keeps (``orders_<N>d``,
``frequency``, ``events_<type>_<N>d``) is read from the snapshot, any other is counted from the
source tables (``scoring.segments.evaluate.count_events``); ``realtime: true`` segments may only
use the former, since the fresh vector of a real-time event keeps exactly those.

Missing values: a comparison with a missing value is false (as in SQL), and ``not`` negates the
result of its child, so ``not`` of a comparison on a missing value is true; ``is_null`` /
``not_null`` say explicitly what a missing value means. An event count is never missing: a
customer without events has 0.

The file is checked by strict pydantic models (``extra="forbid"``), against the dataset's feature
set when one is given; an error names the segment and the path of the field:
``segment 'big_lapsed': where.and[1].feature: unknown feature 'recencyy_days' (known: ...)``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.definitions import SEGMENTS, FeatureSet, slug

#: the scores a condition may read: the columns of the batch's scores.parquet
#: (``batch.score.SCORE_COLUMNS``) that /score also returns (``scoring.inference.SCORE_KEYS``)
SCORES = ("churn_probability", "next_purchase_probability", "expected_orders", "clv")
COMPARE = (">", ">=", "<", "<=", "==", "!=")
LIST_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
Op = Literal[">", ">=", "<", "<=", "==", "!=", "in", "not_in", "is_null", "not_null"]
PURCHASE = "purchase"
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_EVENT_TYPE = r"^[a-z][a-z0-9_]{0,39}$"  # as sources.event_log.records (the event log's types)
_KINDS = ("feature", "score", "rfm_segment", "events", "and", "or", "not")


class SegmentError(ValueError):
    """A segment file that cannot be used; the message names the segment and the field."""


# ---------------------------------------------------------------------------- the compiled rules


@dataclass(frozen=True)
class EventCount:
    """Events of ``type`` in the ``within_days`` days before as_of (of one ``category``)."""

    type: str
    within_days: int
    category: str | None = None

    @property
    def key(self) -> str:
        """The column that holds the count: the feature set's own name when it keeps the count
        (``orders_30d``, ``events_view_90d``), with ``[category]`` appended for one category."""
        base = (f"orders_{self.within_days}d" if self.type == PURCHASE
                else f"events_{slug(self.type)}_{self.within_days}d")
        return base if self.category is None else f"{base}[{self.category}]"

    def text(self) -> str:
        of = f" of category {self.category}" if self.category is not None else ""
        return f"{self.type} events{of} in {self.within_days} d"


@dataclass(frozen=True)
class Leaf:
    #: the column of the evaluated table: a feature, a score, or an event count's key
    column: str
    op: str
    value: object = None
    text: str = ""  # how the leaf reads, for listings
    #: for an event count: what is counted
    count: EventCount | None = None
    #: other columns that hold the same count (``frequency`` for purchases over the RFM window)
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    kind: str  # "and" | "or" | "not"
    children: tuple[Leaf | Node, ...]


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    realtime: bool
    where: Leaf | Node

    def rule(self) -> str:
        return describe(self.where)


def describe(cond: Leaf | Node) -> str:
    """The rule in one line: ``monetary > 1000 and recency_days > 30``."""
    if isinstance(cond, Leaf):
        return cond.text
    if cond.kind == "not":
        return f"not ({describe(cond.children[0])})"
    return f" {cond.kind} ".join(f"({describe(c)})" if isinstance(c, Node) and c.kind != "not" else describe(c)
                                 for c in cond.children)


def leaves(cond: Leaf | Node) -> list[Leaf]:
    if isinstance(cond, Leaf):
        return [cond]
    return [leaf for c in cond.children for leaf in leaves(c)]


def event_counts_of(segments: list[Segment]) -> list[EventCount]:
    """Every event count the segments read, once each, in order of appearance."""
    seen: dict[str, EventCount] = {}
    for s in segments:
        for leaf in leaves(s.where):
            if leaf.count is not None:
                seen.setdefault(leaf.count.key, leaf.count)
    return list(seen.values())


def kept_columns(count: EventCount, fs: FeatureSet) -> tuple[str, ...]:
    """The feature-set columns that hold ``count`` exactly (empty: it is counted from the sources)."""
    if count.category is not None:
        return ()
    names = set(fs.names)
    if count.type == PURCHASE:
        cols = [f"orders_{count.within_days}d"]
        if count.within_days == fs.config.rfm_window_days:
            cols.append("frequency")
    else:
        cols = [f"events_{slug(count.type)}_{count.within_days}d"]
    return tuple(c for c in cols if c in names)


def _kept_windows(fs: FeatureSet, event_type: str) -> list[int]:
    days = sorted({*fs.config.windows_days, fs.config.rfm_window_days, fs.config.event_window_days})
    return [d for d in days if kept_columns(EventCount(event_type, d), fs)]


# ---------------------------------------------------------------------------- the YAML, checked


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _fs(info: ValidationInfo) -> FeatureSet | None:
    return (info.context or {}).get("feature_set")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_value(value: Any, op: str | None, dtype: str | None, subject: str) -> Any:
    """``value`` fits ``op`` on a column of ``dtype`` ("string", "number" or None: unknown)."""
    if op is None:  # op itself is invalid: pydantic reports it
        return value
    if op in NULL_OPS:
        if value is not None:
            raise ValueError(f"{op} takes no value")
        return None
    if value is None:
        raise ValueError(f"missing: {op} compares with a value")
    if op in LIST_OPS:
        if not isinstance(value, list) or not value:
            raise ValueError(f"{op} needs a non-empty list")
        for item in value:
            if dtype == "string" and not isinstance(item, str):
                raise ValueError(f"{subject} is text: {op} needs a list of strings, got {item!r}")
            if dtype == "number" and not _is_number(item):
                raise ValueError(f"{subject} is a number: {op} needs a list of numbers, got {item!r}")
            if not (_is_number(item) or isinstance(item, str)):
                raise ValueError(f"{op} needs a list of strings or numbers, got {item!r}")
        return tuple(value)
    if dtype == "string":
        if op not in ("==", "!=") or not isinstance(value, str):
            raise ValueError(f"{subject} is text: compare it with == or != to a string, or with in / not_in")
        return value
    if isinstance(value, str) and dtype is None and op in ("==", "!="):
        return value
    if not _is_number(value):
        raise ValueError(f"expected a number, got {value!r}")
    return value


# the subject is declared before ``op`` and ``value`` in each condition: a field's validator sees
# the fields declared before it (``info.data``)
_OP = Field(description="> >= < <= == != (a value), in / not_in (a list), is_null / not_null (none).")
_VALUE = Field(None, validate_default=True, description="What the subject is compared with.")


class FeatureCondition(_Strict):
    feature: str = Field(min_length=1, description="A column of the feature snapshot.")
    op: Op = _OP
    value: Any = _VALUE

    @field_validator("feature")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        fs = _fs(info)
        if fs is not None and v not in fs.names:
            close = difflib.get_close_matches(v, fs.names, n=3, cutoff=0.6)
            rest = [n for n in fs.names if n not in close]
            shown = [*close, *rest][:12]
            more = f", ... {len(fs.names)} in all: cvm features schema lists them" if len(fs.names) > 12 else ""
            raise ValueError(f"unknown feature {v!r} (known: {', '.join(shown)}{more})")
        return v

    @field_validator("value")
    @classmethod
    def _fits(cls, v: Any, info: ValidationInfo) -> Any:
        fs, name = _fs(info), info.data.get("feature")
        dtype = None
        if fs is not None and name in fs.dtypes:
            dtype = "string" if fs.dtypes[name] == "string" else "number" if fs.dtypes[name] in (
                "int64", "float64") else None
        return _check_value(v, info.data.get("op"), dtype, str(name))


class ScoreCondition(_Strict):
    score: Literal["churn_probability", "next_purchase_probability", "expected_orders", "clv"] = Field(
        description="A score of the nightly batch (scores.parquet) or of /score.")
    op: Op = _OP
    value: Any = _VALUE

    @field_validator("value")
    @classmethod
    def _fits(cls, v: Any, info: ValidationInfo) -> Any:
        return _check_value(v, info.data.get("op"), "number", str(info.data.get("score")))


class RfmCondition(_Strict):
    rfm_segment: list[str] = Field(min_length=1, description="RFM segment names; the customer's is one of them.")

    @field_validator("rfm_segment", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("rfm_segment")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in SEGMENTS:
                raise ValueError(f"unknown RFM segment {name!r} (known: {', '.join(SEGMENTS)})")
        return v


class EventSpec(_Strict):
    type: str = Field(pattern=_EVENT_TYPE, description="Event type (purchase = the dataset's orders).")
    within_days: StrictInt = Field(gt=0, le=3660, description="Count the events of the last N days before as_of.")
    category: str | None = Field(None, min_length=1, description="Only purchases with a line in this category.")

    @field_validator("type")
    @classmethod
    def _counted(cls, v: str, info: ValidationInfo) -> str:
        fs = _fs(info)
        if fs is not None and v != PURCHASE and not fs.shape.has_events:
            raise ValueError(f"the dataset has no events table: only {PURCHASE!r} events (its orders) can be "
                             f"counted, not {v!r}")
        return v

    @field_validator("category")
    @classmethod
    def _category(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        etype = info.data.get("type")
        if etype is not None and etype != PURCHASE:
            raise ValueError(f"only purchases have a category (their order lines'); {etype!r} events carry none")
        fs = _fs(info)
        if fs is not None:
            if not fs.shape.categories:
                raise ValueError("the dataset's transactions have no category")
            if v not in fs.shape.categories:
                raise ValueError(f"unknown category {v!r} (the dataset's main categories: "
                                 f"{', '.join(fs.shape.categories)})")
        return v


class EventsCondition(_Strict):
    events: EventSpec = Field(description="What is counted.")
    op: Op = _OP
    value: Any = _VALUE

    @field_validator("value")
    @classmethod
    def _fits(cls, v: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op in NULL_OPS:
            raise ValueError("an event count is never missing (0 without events): compare it with a number")
        return _check_value(v, op, "number", "an event count")


class AndCondition(_Strict):
    and_: list[Condition] = Field(alias="and", min_length=1, description="All of these.")


class OrCondition(_Strict):
    or_: list[Condition] = Field(alias="or", min_length=1, description="At least one of these.")


class NotCondition(_Strict):
    not_: Condition = Field(alias="not", description="Not this.")


def _kind(v: Any) -> str | None:
    if isinstance(v, dict):
        found = [k for k in _KINDS if k in v]
        return found[0] if len(found) == 1 else None
    return {FeatureCondition: "feature", ScoreCondition: "score", RfmCondition: "rfm_segment",
            EventsCondition: "events", AndCondition: "and", OrCondition: "or", NotCondition: "not"}.get(type(v))


Condition = Annotated[
    Annotated[FeatureCondition, Tag("feature")] | Annotated[ScoreCondition, Tag("score")]
    | Annotated[RfmCondition, Tag("rfm_segment")] | Annotated[EventsCondition, Tag("events")]
    | Annotated[AndCondition, Tag("and")] | Annotated[OrCondition, Tag("or")] | Annotated[NotCondition, Tag("not")],
    Discriminator(_kind, custom_error_type="condition",
                  custom_error_message="expected one condition: a mapping with exactly one of feature, score, "
                                       "rfm_segment, events, and, or, not"),
]
for _model in (AndCondition, OrCondition, NotCondition):
    _model.model_rebuild()


class SegmentSpec(_Strict):
    name: str = Field(pattern=_NAME, description="Lower-case letters, digits and _, starting with a letter.")
    description: str = Field("", description="What the segment is, for the people who use it.")
    realtime: StrictBool = Field(False, description="Also re-evaluated on each event, on the fresh vector.")
    where: Condition = Field(description="The condition a member satisfies.")


class SegmentFile(_Strict):
    segments: list[SegmentSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SegmentFile:
        names = [s.name for s in self.segments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"segment names must be unique: {', '.join(dupes)} defined twice")
        return self


def _path(loc: tuple, data: object) -> str:
    """``segment 'big_lapsed': where.and[1].feature`` of a pydantic error location: the tags of
    the condition union are dropped, list positions are written ``[i]``."""
    if len(loc) < 2 or loc[0] != "segments" or not isinstance(loc[1], int):
        return ".".join(str(p) for p in loc) or "(the file)"
    items = data.get("segments") if isinstance(data, dict) else None
    raw = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
    name = raw.get("name") if isinstance(raw, dict) else None
    head = f"segment {name!r}" if isinstance(name, str) and name else f"segments[{loc[1]}]"
    out, expect_tag = "", False
    for part in loc[2:]:
        if expect_tag and part in _KINDS:
            expect_tag = False
            continue
        expect_tag = False
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
        # a condition follows "where", an item of and/or, and "not": its union tag comes next
        expect_tag = part == "where" or part == "not" or isinstance(part, int)
    return f"{head}: {out or '(the segment)'}"


def _message(error: dict) -> str:
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if error["type"] == "extra_forbidden":
        msg = "unknown field here"
    return msg


# ---------------------------------------------------------------------------- compiling


def _compile(cond: Any, fs: FeatureSet | None, segment: SegmentSpec, path: str) -> Leaf | Node:
    if isinstance(cond, AndCondition | OrCondition):
        kind = "and" if isinstance(cond, AndCondition) else "or"
        items = cond.and_ if isinstance(cond, AndCondition) else cond.or_
        return Node(kind, tuple(_compile(c, fs, segment, f"{path}.{kind}[{i}]") for i, c in enumerate(items)))
    if isinstance(cond, NotCondition):
        return Node("not", (_compile(cond.not_, fs, segment, f"{path}.not"),))
    if isinstance(cond, RfmCondition):
        names = tuple(cond.rfm_segment)
        return Leaf("rfm_segment", "in", names, f"rfm_segment in [{', '.join(names)}]")
    if isinstance(cond, FeatureCondition):
        return Leaf(cond.feature, cond.op, cond.value, _text(cond.feature, cond.op, cond.value))
    if isinstance(cond, ScoreCondition):
        return Leaf(cond.score, cond.op, cond.value, _text(f"score {cond.score}", cond.op, cond.value))
    spec = cond.events
    count = EventCount(spec.type, spec.within_days, spec.category)
    kept = kept_columns(count, fs) if fs is not None else ()
    if segment.realtime and (count.category is not None or (fs is not None and not kept)):
        windows = _kept_windows(fs, count.type) if fs is not None else []
        raise SegmentError(f"segment {segment.name!r}: {path}.events: a real-time segment can only count what the "
                           f"fresh vector keeps ({count.type!r} over "
                           f"{', '.join(map(str, windows)) + ' days' if windows else 'no window'}, no category); "
                           "use one of those or make the segment realtime: false")
    fallbacks = tuple(c for c in kept if c != count.key)
    return Leaf(count.key, cond.op, cond.value, _text(count.text(), cond.op, cond.value), count, fallbacks)


def _text(label: str, op: str, value: object) -> str:
    if op in NULL_OPS:
        return f"{label} {op.replace('_', ' ')}"
    if op in LIST_OPS:
        shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value)  # type: ignore[union-attr]
        return f"{label} {op.replace('_', ' ')} [{shown}]"
    return f"{label} {op} {value!r}" if isinstance(value, str) else f"{label} {op} {value}"


def parse_segments(data: object, fs: FeatureSet | None = None, source: str | None = None) -> list[Segment]:
    """The checked segments of a file's content (against the feature set ``fs`` when given);
    ``SegmentError`` naming every bad segment and field (``source: `` in front when given)."""
    lead = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise SegmentError(f"{lead}expected a mapping with one key, segments: a list of segments")
    try:
        parsed = SegmentFile.model_validate(data, context={"feature_set": fs})
    except ValidationError as exc:
        lines = list(dict.fromkeys(f"{_path(tuple(e['loc']), data)}: {_message(e)}" for e in exc.errors()))
        raise SegmentError(lead + "; ".join(lines)) from None
    try:
        return [Segment(s.name, s.description, s.realtime, _compile(s.where, fs, s, "where")) for s in parsed.segments]
    except SegmentError as exc:
        raise SegmentError(f"{lead}{exc}") from None


def load_segments(path: Path, fs: FeatureSet | None = None) -> list[Segment]:
    """The checked segments of a YAML file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SegmentError(f"{path}: {exc}") from None
    return parse_segments(data, fs, str(path))


#: the segment files shipped for the built-in datasets (and examples for others)
SHIPPED = Path(__file__).resolve().parents[2] / "experiments" / "segments"
#: a dataset directory's own segments
DATASET_SEGMENTS = "segments.yaml"


def resolve_segments_path(dataset: str, explicit: str | Path | None = None) -> Path | None:
    """The segment file of ``dataset`` (as ``--dataset`` takes it), by the catalog's rule
    (``scoring.catalog.resolve_catalog_path``): ``explicit`` (``--segments``) as given; a dataset
    directory's own ``segments.yaml``; a built-in dataset's shipped file; else None."""
    from sources.dataset import dataset_file

    return dataset_file(dataset, explicit, DATASET_SEGMENTS, SHIPPED / f"{dataset}.yaml")

