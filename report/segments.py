"""The report's section on the dataset's own segments (``scoring.segments``): their sizes in the
batch output and how they moved since the previous date (entries, exits), or why there is nothing
to show."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import pandas as pd

SIZES_FILE = "segment_sizes.parquet"  # batch.segments_job writes it


def load_sizes(batch_dir: Path) -> pd.DataFrame | None:
    path = Path(batch_dir) / SIZES_FILE
    return pd.read_parquet(path) if path.exists() else None


def section_html(sizes: pd.DataFrame | None, manifest: dict, div: Callable, go, number: str = "") -> str:
    head = f'<section id="own-segments"><h2>{number}Segments</h2>'
    if sizes is None or sizes.empty:
        return (head + '<p class="note">no segments in this batch output: declare them in YAML '
                "(experiments/segments/, or segments.yaml in the dataset directory) and run "
                "<code>cvm score-batch</code>; <code>cvm segments list</code> shows them</p></section>")
    info = manifest.get("segments") or {}
    prev = info.get("previous_as_of")
    fig = go.Figure()
    fig.add_bar(x=sizes["segment"], y=sizes["size"], name="customers", marker_color="#264653")
    moved = prev is not None and sizes["entries"].notna().any()
    if moved:
        fig.add_bar(x=sizes["segment"], y=sizes["entries"].astype(float), name=f"entered since {prev}",
                    marker_color="#2a9d8f")
        fig.add_bar(x=sizes["segment"], y=-sizes["exits"].astype(float), name=f"left since {prev}",
                    marker_color="#e76f51")
    fig.update_layout(title="Segment sizes" + (f" and movement since {prev}" if moved else ""), barmode="group")
    table = sizes.assign(share=sizes["share"].map("{:.1%}".format))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape('' if pd.isna(v) else str(v))}</td>" for v in r) + "</tr>"
                   for r in table.itertuples(index=False))
    cols = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    note = (f"Movement is against the batch of {prev}." if moved else
            "No earlier batch with segments in this directory: movement appears from the next run.")
    return (head + f'<p class="note">{html.escape(note)} Rules: {html.escape(str(info.get("file", "")))}</p>'
            + div(fig) + f"<table><thead><tr>{cols}</tr></thead><tbody>{rows}</tbody></table></section>")
