"""``cvm segments``: list a dataset's segment definitions, preview one on a date, export its members.

Thin commands over :mod:`scoring.segments` (rules, evaluation) and :mod:`batch.segments_job`
(the snapshot and the batch scores of a date).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvm.common import AsOfOpt, HomeOpt, as_of_date, command, console, fail, group, home_of, run, warn

segments_app = group("Customer segments declared in YAML: list, preview, export for a campaign tool.")

SegmentsOpt = Annotated[Path | None, typer.Option("--segments", help="Segment definitions YAML (default: the "
                                                  "dataset's segments.yaml or the shipped file of a built-in "
                                                  "dataset).", dir_okay=False)]
DatasetArg = Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
BatchRootOpt = Annotated[Path | None, typer.Option("--batch-root", help="Where cvm score-batch wrote its outputs "
                                                   "(its --out; default $CVM_HOME/batch/<dataset>): the scores "
                                                   "score conditions read.", file_okay=False)]


def _load(dataset: str, segments: Path | None, home: Path | None):
    from features.definitions import feature_set_from_dict
    from features.snapshot import read_schema
    from scoring.segments.definitions import SegmentError, load_segments, resolve_segments_path
    from sources.dataset import dataset_name

    path = resolve_segments_path(dataset, segments)
    if path is None:
        fail(f"dataset {dataset!r} has no segment file: write one (see experiments/segments/) and pass "
             "--segments FILE, or put segments.yaml in the dataset directory")
    h = home_of(home)
    name = run(lambda: dataset_name(dataset))
    schema = read_schema(h.features(name))
    fs = feature_set_from_dict(schema) if schema is not None else None
    if fs is None:
        warn(f"no feature snapshot of {name} yet: the rules are checked without the feature set")
    return path, run(lambda: load_segments(path, fs), SegmentError), h, name


@command(segments_app, "list")
def segments_list(dataset: DatasetArg = "completejourney", segments: SegmentsOpt = None,
                  home: HomeOpt = None) -> None:
    """The segments of the dataset: name, real-time or not, description and the rule in one line (checked against
    the dataset's feature set when a snapshot exists)."""
    from rich.table import Table

    path, defs, _, _ = _load(dataset, segments, home)
    table = Table(title=f"segments of {path}")
    for col in ("segment", "realtime", "description", "rule"):
        table.add_column(col, overflow="fold")
    for s in defs:
        table.add_row(s.name, "yes" if s.realtime else "", s.description, s.rule())
    console.print(table)


def _evaluate(dataset, segments, home, as_of: str, name: str, batch_root: Path | None):
    from batch.segments_job import evaluate_at

    path, defs, h, ds = _load(dataset, segments, home)
    if name not in {s.name for s in defs}:
        fail(f"no segment {name!r} in {path} (segments: {', '.join(s.name for s in defs)})")
    day = as_of_date(as_of)
    chosen = [s for s in defs if s.name == name]
    table, members, scored = run(lambda: evaluate_at(h.features(ds), batch_root or h.batch(ds), day, chosen))
    if not scored:
        warn(f"no batch scores as of {day}: score conditions match nobody (run cvm score-batch --as-of {day})")
    return day, table, members


@command(segments_app, "preview")
def segments_preview(name: Annotated[str, typer.Argument(help="Segment name.")], as_of: AsOfOpt,
                     dataset: DatasetArg = "completejourney", segments: SegmentsOpt = None,
                     batch_root: BatchRootOpt = None, home: HomeOpt = None) -> None:
    """How many customers are in the segment on a date, their share, the RFM segments they come from and a few of
    them (evaluated on that date's feature snapshot and batch scores)."""
    day, table, members = _evaluate(dataset, segments, home, as_of, name, batch_root)
    ids = members["customer_id"]
    share = len(ids) / len(table) if len(table) else 0.0
    console.print(f"segment {name} as of {day}: {len(ids):,} of {len(table):,} customers ({share:.1%})",
                  soft_wrap=True)
    inside = table[table["customer_id"].isin(set(ids))]
    if len(inside):
        mix = inside["rfm_segment"].value_counts()
        console.print("RFM mix: " + ", ".join(f"{seg} {n:,}" for seg, n in mix.items()), soft_wrap=True)
        console.print("e.g. " + ", ".join(ids.head(5)), soft_wrap=True)


@command(segments_app, "export")
def segments_export(name: Annotated[str, typer.Argument(help="Segment name.")], as_of: AsOfOpt,
                    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv or .parquet.",
                                                      dir_okay=False)],
                    dataset: DatasetArg = "completejourney", segments: SegmentsOpt = None,
                    batch_root: BatchRootOpt = None, home: HomeOpt = None) -> None:
    """Write the segment's members on a date for a campaign tool: customer_id, segment, RFM segment, recency,
    frequency, monetary, average order value and the scores (CSV or Parquet by the file's suffix)."""
    from batch.segments_job import export_rows

    if out.suffix not in (".csv", ".parquet"):
        fail(f"--out {out}: give a .csv or .parquet file")
    day, table, members = _evaluate(dataset, segments, home, as_of, name, batch_root)
    rows = export_rows(table, members, name, day)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".csv":
        rows.to_csv(tmp, index=False)
    else:
        rows.to_parquet(tmp, index=False)
    tmp.replace(out)
    console.print(f"{out}: {len(rows):,} customers of segment {name} as of {day}", soft_wrap=True)
