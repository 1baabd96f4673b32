"""Customer segments declared in YAML: conditions on features, scores, the RFM segment and event
counts, combined with and / or / not.

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

A leaf is one of:

* ``{feature: NAME, op: OP, value: V}``: a column of the feature snapshot. ``op`` is one of
  ``> >= < <= == !=`` (a number or, with ``==``/``!=``, a string), ``in`` / ``not_in`` (a list),
  ``is_null`` / ``not_null`` (no value);
* ``{score: NAME, op: OP, value: V}``: a score of the nightly batch or of /score
  (churn_probability, next_purchase_probability, expected_orders, clv);
* ``{rfm_segment: [NAME, ...]}``: the customer's RFM segment is one of these;
* ``{events: {type: T, within_days: N}, op: OP, value: V}``: the count of events of type T in
  the N days before as_of. The counts are the feature set's own (``events_<type>_<N>d`` over
  the event window; for ``purchase``, the orders of ``orders_<N>d`` or ``frequency``), so a
  segment means the same in the nightly batch and on the fresh vector of a real-time event.

Semantics: a comparison with a missing value is false (as in SQL), and ``not`` negates its
child's result, so ``not`` of a comparison on a missing value is true; use ``is_null`` /
``not_null`` to say what a missing value means. ``realtime: true`` segments are also
re-evaluated on each event, on the fresh vector (``segment_entry`` triggers fire on them).

``parse_segments`` checks a file against a feature set: an error names the segment and the
path of the field (``segment 'big_lapsed': where.and[1].feature: unknown feature 'recencyy_days'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from features.definitions import SEGMENTS, FeatureSet, slug

SCORES = ("churn_probability", "next_purchase_probability", "expected_orders", "clv")
COMPARE = (">", ">=", "<", "<=", "==", "!=")
LIST_OPS = ("in", "not_in")
NULL_OPS = ("is_null", "not_null")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class SegmentError(ValueError):
    """A segment file that cannot be used; the message names the segment and the field."""


@dataclass(frozen=True)
class Leaf:
    column: str  # the column of the evaluated table (a feature, a score or a feature that counts events)
    op: str
    value: object = None
    text: str = ""  # how the leaf reads, for listings


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
    if isinstance(cond, Leaf):
        return cond.text
    if cond.kind == "not":
        return f"not ({describe(cond.children[0])})"
    return f" {cond.kind} ".join(f"({describe(c)})" if isinstance(c, Node) else describe(c) for c in cond.children)


def event_column(fs: FeatureSet, event_type: str, days: int) -> str | None:
    """The feature that counts events of ``event_type`` in ``days`` days, or None."""
    names = set(fs.names)
    if event_type == "purchase":
        for col in (f"orders_{days}d", "frequency" if days == fs.config.rfm_window_days else ""):
            if col in names:
                return col
    col = f"events_{slug(event_type)}_{days}d"
    return col if col in names else None


def _event_windows(fs: FeatureSet, event_type: str) -> list[int]:
    days = sorted({*fs.config.windows_days, fs.config.rfm_window_days, fs.config.event_window_days})
    return [d for d in days if event_column(fs, event_type, d) is not None]


class _Parser:
    def __init__(self, fs: FeatureSet | None, segment: str):
        self.fs = fs
        self.segment = segment

    def fail(self, path: str, message: str) -> SegmentError:
        return SegmentError(f"segment {self.segment!r}: {path}: {message}")

    def cond(self, raw: object, path: str) -> Leaf | Node:
        if not isinstance(raw, dict) or not raw:
            raise self.fail(path, "expected a condition (a mapping with feature, score, rfm_segment, events, and, "
                                  "or or not)")
        for kind in ("and", "or"):
            if kind in raw:
                self._only(raw, {kind}, path)
                items = raw[kind]
                if not isinstance(items, list) or not items:
                    raise self.fail(f"{path}.{kind}", "expected a non-empty list of conditions")
                return Node(kind, tuple(self.cond(c, f"{path}.{kind}[{i}]") for i, c in enumerate(items)))
        if "not" in raw:
            self._only(raw, {"not"}, path)
            return Node("not", (self.cond(raw["not"], f"{path}.not"),))
        if "rfm_segment" in raw:
            self._only(raw, {"rfm_segment"}, path)
            names = raw["rfm_segment"]
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not names:
                raise self.fail(f"{path}.rfm_segment", "expected a list of RFM segment names")
            bad = [n for n in names if n not in SEGMENTS]
            if bad:
                raise self.fail(f"{path}.rfm_segment", f"unknown RFM segment {bad[0]!r} (known: {', '.join(SEGMENTS)})")
            return Leaf("rfm_segment", "in", tuple(names), f"rfm_segment in {list(names)}")
        if "feature" in raw:
            self._only(raw, {"feature", "op", "value"}, path)
            name = raw["feature"]
            if self.fs is not None and name not in self.fs.names:
                close = [n for n in self.fs.names if n[:4] == str(name)[:4]][:5] or self.fs.names[:8]
                raise self.fail(f"{path}.feature", f"unknown feature {name!r} (e.g. {', '.join(close)})")
            return self._compare(str(name), raw, path, f"{name}")
        if "score" in raw:
            self._only(raw, {"score", "op", "value"}, path)
            if raw["score"] not in SCORES:
                raise self.fail(f"{path}.score", f"unknown score {raw['score']!r} (known: {', '.join(SCORES)})")
            return self._compare(str(raw["score"]), raw, path, f"score {raw['score']}")
        if "events" in raw:
            self._only(raw, {"events", "op", "value"}, path)
            spec = raw["events"]
            if not isinstance(spec, dict):
                raise self.fail(f"{path}.events", "expected {type: ..., within_days: ...}")
            extra = set(spec) - {"type", "within_days"}
            if extra:
                raise self.fail(f"{path}.events.{min(extra)}", "unknown field (events take type and "
                                "within_days; counts per category are not kept)")
            etype, days = spec.get("type"), spec.get("within_days")
            if not isinstance(etype, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", etype):
                raise self.fail(f"{path}.events.type", f"expected an event type, got {etype!r}")
            if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
                raise self.fail(f"{path}.events.within_days", f"expected a positive whole number of days, got {days!r}")
            column = f"events_{slug(etype)}_{days}d"
            if self.fs is not None:
                found = event_column(self.fs, etype, days)
                if found is None:
                    windows = _event_windows(self.fs, etype)
                    raise self.fail(f"{path}.events.within_days",
                                    f"no count of {etype!r} events over {days} days in this feature set "
                                    f"({'windows: ' + ', '.join(map(str, windows)) if windows else 'none is counted'})")
                column = found
            return self._compare(column, raw, path, f"{etype} events in {days} d", numeric=True)
        raise self.fail(path, f"unknown condition {sorted(raw)} (use feature, score, rfm_segment, events, and, or, not)")

    def _only(self, raw: dict, allowed: set[str], path: str) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            raise self.fail(f"{path}.{extra[0]}", "unknown field here")

    def _compare(self, column: str, raw: dict, path: str, label: str, numeric: bool = False) -> Leaf:
        op = raw.get("op")
        if op in NULL_OPS:
            if "value" in raw:
                raise self.fail(f"{path}.value", f"{op} takes no value")
            return Leaf(column, op, None, f"{label} {op.replace('_', ' ')}")
        if op in LIST_OPS:
            value = raw.get("value")
            if not isinstance(value, list) or not value:
                raise self.fail(f"{path}.value", f"{op} needs a non-empty list")
            return Leaf(column, op, tuple(value), f"{label} {op.replace('_', ' ')} {value}")
        if op not in COMPARE:
            raise self.fail(f"{path}.op", f"expected one of {', '.join((*COMPARE, *LIST_OPS, *NULL_OPS))}, got {op!r}")
        if "value" not in raw:
            raise self.fail(f"{path}.value", "missing")
        value = raw["value"]
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        dtype = self.fs.dtypes.get(column) if self.fs is not None else None
        if dtype == "string" and not numeric:
            if op not in ("==", "!=") or not isinstance(value, str):
                raise self.fail(f"{path}.value", f"{column} is text: compare it with == or != to a string, or in")
        elif (dtype in ("int64", "float64") or numeric or column in SCORES) and not is_number:
            raise self.fail(f"{path}.value", f"expected a number, got {value!r}")
        return Leaf(column, op, value, f"{label} {op} {value}")


def parse_segments(data: object, fs: FeatureSet | None = None, source: str = "segments") -> list[Segment]:
    """The checked segments of a file's content (against ``fs`` when given)."""
    if not isinstance(data, dict) or set(data) != {"segments"} or not isinstance(data["segments"], list):
        raise SegmentError(f"{source}: expected a mapping with one key, segments: a list of segments")
    out: list[Segment] = []
    for i, raw in enumerate(data["segments"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"segments[{i}]" if not isinstance(name, str) else f"segment {name!r}"
        if not isinstance(raw, dict):
            raise SegmentError(f"{source}: {where}: expected a mapping")
        extra = sorted(set(raw) - {"name", "description", "realtime", "where"})
        if extra:
            raise SegmentError(f"{source}: {where}: {extra[0]}: unknown field (name, description, realtime, where)")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SegmentError(f"{source}: {where}: name: lower-case letters, digits and _, starting with a letter")
        if name in {s.name for s in out}:
            raise SegmentError(f"{source}: {where}: name: defined twice")
        if "where" not in raw:
            raise SegmentError(f"{source}: {where}: where: missing")
        realtime = raw.get("realtime", False)
        if not isinstance(realtime, bool):
            raise SegmentError(f"{source}: {where}: realtime: expected true or false")
        try:
            cond = _Parser(fs, name).cond(raw["where"], "where")
        except SegmentError as exc:
            raise SegmentError(f"{source}: {exc}") from None
        out.append(Segment(name, str(raw.get("description") or ""), realtime, cond))
    if not out:
        raise SegmentError(f"{source}: segments: the list is empty")
    return out


def load_segments(path: Path, fs: FeatureSet | None = None) -> list[Segment]:
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
    if explicit is not None:
        return Path(explicit)
    from sources.dataset import BUILTINS

    path = Path(dataset).expanduser()
    if path.is_dir():
        own = path / DATASET_SEGMENTS
        return own if own.is_file() else None
    shipped = SHIPPED / f"{dataset}.yaml"
    return shipped if dataset in BUILTINS and shipped.is_file() else None
