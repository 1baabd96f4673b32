"""``cvm segments``: list a dataset's segment definitions, preview one on a date, export its members.

Thin commands over :mod:`scoring.segments` (rules, evaluation) and :mod:`batch.segments_job`
(the snapshot and the batch scores of a date).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cvm.common import (
    AsOfOpt,
    ConfigOpt,
    HomeOpt,
    UserError,
    as_of_date,
    command,
    console,
    err,
    fail,
    group,
    home_of,
    run,
    warn,
)

segments_app = group("Customer segments declared in YAML: list, preview, export for a campaign tool.")

SegmentsOpt = Annotated[Path | None, typer.Option("--segments", help="Segment definitions YAML (default: the "
                                                  "dataset's segments.yaml or the shipped file of a built-in "
                                                  "dataset).", dir_okay=False)]
DatasetArg = Annotated[str, typer.Option("--dataset", "-d", help="Dataset: a directory or a built-in name.")]
BatchRootOpt = Annotated[Path | None, typer.Option("--batch-root", help="Where cvm score-batch wrote its outputs "
                                                   "(its --out; default $CVM_HOME/batch/<dataset>): the scores "
                                                   "score conditions read.", file_okay=False)]

_NO_FILE = ("dataset {dataset!r} has no segment file: write one (see experiments/segments/) and pass --segments FILE, "
            "or put segments.yaml in the dataset directory")


def _load(dataset: str, segments: Path | None, home: Path | None):
    from features.definitions import feature_set_from_dict
    from features.snapshot import read_schema
    from scoring.segments.definitions import SegmentError, load_segments, resolve_segments_path
    from sources.dataset import dataset_name

    path = resolve_segments_path(dataset, segments)
    if path is None:
        fail(_NO_FILE.format(dataset=dataset))
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
    """The segments of the dataset: name, real-time or not, description and the rule in one line.

    The file is --segments, else segments.yaml in the dataset directory, else the shipped file of a built-in dataset
    (experiments/segments/); it is checked against the dataset's feature set when a snapshot exists."""
    from rich.markup import escape
    from rich.table import Table

    path, defs, _, _ = _load(dataset, segments, home)
    table = Table(title=escape(f"segments of {path}"))
    for col in ("segment", "realtime", "description", "rule"):
        table.add_column(col, overflow="fold")
    for s in defs:
        table.add_row(s.name, "yes" if s.realtime else "", escape(s.description), escape(s.rule()))
    console.print(table)


def _evaluate(dataset, segments, home, as_of: str, name: str, batch_root: Path | None, config: Path | None, *,
              export: bool = False):
    """(day, the segment, customer table, membership) of segment ``name`` on the snapshot of --as-of
    (built when missing, as cvm score-batch builds it) and that date's batch scores."""
    from batch.segments_job import ensure_snapshot, evaluate_at
    from scoring.segments.definitions import (
        SCORES,
        SegmentError,
        leaves,
        load_segments,
        resolve_segments_path,
    )
    from sources.dataset import resolve_dataset
    from training.experiment import dataset_config, load_config

    day = as_of_date(as_of)
    path = resolve_segments_path(dataset, segments)
    if path is None:
        fail(_NO_FILE.format(dataset=dataset))
    h = home_of(home)

    def go():
        ds = resolve_dataset(dataset, h)
        cfg_path = config or dataset_config(ds.name)
        cfg = load_config(cfg_path) if cfg_path is not None else None
        _, fs = ensure_snapshot(ds, h, day, config=cfg, say=lambda line: err.print(line, soft_wrap=True))
        defs = load_segments(path, fs)  # checked against the snapshot's feature set
        chosen = [s for s in defs if s.name == name]
        if not chosen:
            raise UserError(f"no segment {name!r} in {path} (segments: {', '.join(s.name for s in defs)})")
        with err.status(f"evaluating {name} as of {day}"):
            table, members, scored = evaluate_at(ds, h, day, chosen, batch_root or h.batch(ds.name), config=cfg)
        return chosen[0], table, members, scored

    segment, table, members, scored = run(go, SegmentError, ValueError)
    reads_scores = any(leaf.column in SCORES for leaf in leaves(segment.where))
    if not scored and (reads_scores or export):
        what = "its score conditions are false for everyone" if reads_scores else "the export has no score columns"
        warn(f"no batch scores as of {day}: {what} (run cvm score-batch --as-of {day} first)")
    return day, segment, table, members


@command(segments_app, "preview")
def segments_preview(name: Annotated[str, typer.Argument(help="Segment name.")], as_of: AsOfOpt,
                     dataset: DatasetArg = "completejourney", segments: SegmentsOpt = None,
                     batch_root: BatchRootOpt = None, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """How many customers are in the segment on a date, their share, the rule, the RFM segments they come from and a
    few of them.

    Evaluated on the feature snapshot of --as-of (built, as cvm score-batch builds it, when there is none yet) and on
    the batch scores of that date under --batch-root when there are any (without them, score conditions are false).
    Event counts the snapshot does not keep are counted from the dataset's sources, before 00:00 of --as-of."""
    day, segment, table, members = _evaluate(dataset, segments, home, as_of, name, batch_root, config)
    ids = members["customer_id"]
    share = len(ids) / len(table) if len(table) else 0.0
    console.print(f"segment {name} as of {day}: {len(ids):,} of {len(table):,} customers ({share:.1%})",
                  soft_wrap=True)
    console.print(f"rule: {segment.rule()}", soft_wrap=True, markup=False)
    inside = table[table["customer_id"].isin(set(ids))]
    if len(inside):
        mix = inside["rfm_segment"].value_counts()
        console.print("RFM mix: " + ", ".join(f"{seg} {n:,}" for seg, n in mix.items()), soft_wrap=True)
        console.print("e.g. " + ", ".join(ids.head(5)), soft_wrap=True, markup=False)


@command(segments_app, "export")
def segments_export(name: Annotated[str, typer.Argument(help="Segment name.")], as_of: AsOfOpt,
                    out: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv or .parquet.",
                                                      dir_okay=False)],
                    dataset: DatasetArg = "completejourney", segments: SegmentsOpt = None,
                    batch_root: BatchRootOpt = None, config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Write the segment's members on a date for a campaign tool, one row per customer: customer_id, segment, as_of,
    RFM segment, recency, frequency, monetary, average order value, tenure and, when the batch of that date has run,
    the scores and the best offer (CSV or Parquet by the file's suffix; written whole or not at all).

    Evaluated as cvm segments preview evaluates it."""
    from batch.segments_job import export_rows

    if out.suffix not in (".csv", ".parquet"):
        fail(f"--out {out}: give a .csv or .parquet file")
    day, _, table, members = _evaluate(dataset, segments, home, as_of, name, batch_root, config, export=True)
    rows = export_rows(table, members, name, day)
    tmp = out.with_name(f".{out.name}.tmp")

    def write() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if out.suffix == ".csv":
                rows.to_csv(tmp, index=False)
            else:
                rows.to_parquet(tmp, index=False)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)

    run(write)
    console.print(f"{out}: {len(rows):,} customers of segment {name} as of {day}", soft_wrap=True, markup=False)
