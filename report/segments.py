"""The report's section on the dataset's own segments (``scoring.segments``): their sizes in the
latest batch output with segments up to the report's date and how they moved since the previous
date with segments (entries, exits), or why there is nothing to show."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from base.dates import partition_date, partition_dir, partitions

SIZES_FILE = "segment_sizes.parquet"  # batch.segments_job writes it (a sibling: not imported)


@dataclass(frozen=True)
class SegmentSizes:
    as_of: date  # the batch output the sizes come from
    sizes: pd.DataFrame
    info: dict  # the manifest's ``segments`` entry: file, previous_as_of...


def load_sizes(batch_dir: Path) -> SegmentSizes | None:
    """The sizes of the latest batch output with segments at or before ``batch_dir``'s date, in the
    same output root; None when there is none."""
    batch_dir = Path(batch_dir)
    day = partition_date(batch_dir)
    if day is None:
        candidates = [batch_dir] if (batch_dir / SIZES_FILE).exists() else []
    else:
        root = batch_dir.parent
        candidates = [partition_dir(root, d) for d in reversed(partitions(root)) if d <= day
                      and (partition_dir(root, d) / SIZES_FILE).exists()]
    if not candidates:
        return None
    out = candidates[0]
    manifest = out / "manifest.json"
    info = (json.loads(manifest.read_text()).get("segments") or {}) if manifest.exists() else {}
    return SegmentSizes(partition_date(out) or day, pd.read_parquet(out / SIZES_FILE), info)


def section_html(data: SegmentSizes | None, div: Callable, go, number: str = "", as_of: date | None = None) -> str:
    head = f'<section id="own-segments"><h2>{number}Segments</h2>'
    if data is None or data.sizes.empty:
        return (head + '<p class="note">No batch output with segments up to this date: declare segments in YAML '
                "(experiments/segments/&lt;dataset&gt;.yaml, or segments.yaml in the dataset directory) and run "
                "<code>cvm score-batch</code>, which writes their membership and sizes beside the scores; "
                "<code>cvm segments list</code> shows the rules.</p></section>")
    sizes, prev = data.sizes, data.info.get("previous_as_of")
    fig = go.Figure()
    fig.add_bar(x=sizes["segment"], y=sizes["size"], name="customers", marker_color="#264653")
    moved = prev is not None and sizes["entries"].notna().any()
    if moved:
        fig.add_bar(x=sizes["segment"], y=sizes["entries"].astype(float), name=f"entered since {prev}",
                    marker_color="#2a9d8f")
        fig.add_bar(x=sizes["segment"], y=-sizes["exits"].astype(float), name=f"left since {prev}",
                    marker_color="#e76f51")
    fig.update_layout(title="Segment sizes" + (f" and movement since {prev}" if moved else ""), barmode="group")
    shown = [c for c in ("segment", "size", "share", "entries", "exits", "previous_size", "rule") if c in sizes]
    table = sizes[shown].assign(share=sizes["share"].map("{:.1%}".format))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape('' if pd.isna(v) else str(v))}</td>" for v in r) + "</tr>"
                   for r in table.itertuples(index=False))
    cols = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in shown)
    if moved:
        note = (f"Movement is against the batch of {prev}: entries joined the segment since then, exits left it "
                "(empty where the segment's rule was different then).")
    elif prev is not None:
        note = f"The rules changed since the batch of {prev}: no movement is shown until two runs share them."
    else:
        note = "No earlier batch with segments in this output directory: movement appears from the next run."
    when = (f"From the batch of {data.as_of}" + (f" (the latest with segments; the report is as of {as_of})"
                                                 if as_of is not None and as_of != data.as_of else "") + ". ")
    rules = f" Rules: {data.info['file']}." if data.info.get("file") else ""
    return (head + f'<p class="note">{html.escape(when + note + rules)}</p>' + div(fig)
            + f"<table><thead><tr>{cols}</tr></thead><tbody>{rows}</tbody></table></section>")
