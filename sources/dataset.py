"""Finding a dataset: a directory of Parquet/CSV tables, or a built-in name.

A dataset directory holds one entry per table of the contract (``sources.contract``):
``transactions.parquet``, ``transactions.csv[.gz]`` or a ``transactions/`` folder of
such files. An optional ``dataset.yaml`` (``DatasetConfig``) renames columns and says
which product column is the category. Anything else in the directory is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from base.home import Home, safe_name
from sources.contract import TABLES

FileFormat = Literal["parquet", "csv"]
BUILTINS = ("completejourney",)
CONFIG_FILE = "dataset.yaml"


class DatasetError(ValueError):
    """The dataset cannot be found or does not honour the contract; the message says why."""


class DatasetConfig(BaseModel):
    """Optional ``dataset.yaml`` next to the tables."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Dataset name used under CVM_HOME; default: the directory name.")
    columns: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per-table renames from the file's column name to the contract's, "
        "e.g. {transactions: {txn_ts: timestamp}}.",
    )
    category_column: str = Field(
        "category", description="Column of `products` that gives a product's category (a hierarchy level)."
    )
    categories: list[str] | None = Field(
        None,
        description="Main categories for the spend-share features, in order. "
        "Default: the catalog's categories ranked by number of products.",
    )
    description: str | None = Field(None, description="Free text shown in summaries.")


@dataclass(frozen=True)
class TableFiles:
    name: str
    files: tuple[Path, ...]
    fmt: FileFormat


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path
    config: DatasetConfig
    tables: dict[str, TableFiles] = field(default_factory=dict)

    def has(self, table: str) -> bool:
        return table in self.tables


def _table_files(root: Path, table: str) -> TableFiles | None:
    candidates: list[tuple[Path, FileFormat]] = [
        (root / f"{table}.parquet", "parquet"),
        (root / f"{table}.csv", "csv"),
        (root / f"{table}.csv.gz", "csv"),
    ]
    found = [(p, fmt) for p, fmt in candidates if p.is_file()]
    folder = root / table
    if folder.is_dir():
        parquet = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith(("_", ".")))
        csv = sorted(p for p in folder.rglob("*.csv*") if not p.name.startswith(("_", ".")))
        if parquet and csv:
            raise DatasetError(f"{folder}: mixes Parquet and CSV files; keep one format per table")
        if parquet:
            found.append((folder, "parquet"))
        elif csv:
            found.append((folder, "csv"))
        else:
            raise DatasetError(f"{folder}: folder for table '{table}' holds no .parquet or .csv file")
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(str(p.name) for p, _ in found)
        raise DatasetError(f"{root}: table '{table}' is given more than once ({names}); keep one")
    path, fmt = found[0]
    if path.is_dir():
        pattern = "*.parquet" if fmt == "parquet" else "*.csv*"
        files = tuple(sorted(p for p in path.rglob(pattern) if not p.name.startswith(("_", "."))))
    else:
        files = (path,)
    return TableFiles(table, files, fmt)


def load_config(root: Path) -> DatasetConfig:
    path = root / CONFIG_FILE
    if not path.exists():
        return DatasetConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return DatasetConfig.model_validate(raw)
    except Exception as exc:  # pydantic/yaml errors: name the file
        raise DatasetError(f"{path}: invalid dataset config: {exc}") from exc


def open_directory(root: Path) -> Dataset:
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    config = load_config(root)
    tables = {}
    for name in TABLES:
        tf = _table_files(root, name)
        if tf is not None:
            tables[name] = tf
    if "transactions" not in tables:
        raise DatasetError(
            f"{root}: required table 'transactions' not found "
            "(expected transactions.parquet, transactions.csv or a transactions/ folder)"
        )
    name = safe_name(config.name or root.name)
    return Dataset(name=name, root=root, config=config, tables=tables)


def resolve_dataset(spec: str, home: Home, *, progress: bool = False) -> Dataset:
    """``spec`` is a directory or a built-in name (``completejourney``)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return open_directory(path)
    if spec in BUILTINS:
        from sources import completejourney

        root = completejourney.materialize(home.datasets(ensure=True), progress=progress)
        return open_directory(root)
    raise DatasetError(
        f"dataset {spec!r} is neither an existing directory nor a built-in name ({', '.join(BUILTINS)})"
    )


def dataset_name(spec: str) -> str:
    """The name that keys a dataset's state (snapshots, online store, batch outputs) without
    materialising it: a directory's configured name, or the built-in name itself."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return open_directory(path).name
    return safe_name(spec)


def dataset_file(dataset: str, explicit: str | Path | None, own_name: str, shipped: Path) -> Path | None:
    """A per-dataset configuration file (an offer catalog, segment rules), by one rule: ``explicit``
    as given (a missing file is then the loader's error); a dataset directory's own ``own_name``;
    for a built-in dataset (not a directory), ``shipped`` when it exists; else None. A directory is
    never matched to a shipped file by its name."""
    if explicit is not None:
        return Path(explicit)
    path = Path(dataset).expanduser()
    if path.is_dir():
        own = path / own_name
        return own if own.is_file() else None
    return shipped if dataset in BUILTINS and shipped.is_file() else None
