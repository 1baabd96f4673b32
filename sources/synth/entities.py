"""The two per-chunk entities every stage passes around: persons (``_Persons``, latent
parameters) and their source records (``_Records``). Built by ``behaviour._persons`` and
``identities._records``; kept here because behaviour reads records and identities read persons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sources.synth.arrays import _strings


# --------------------------------------------------------------------- persons
@dataclass
class _Persons:
    gid: np.ndarray  # global person index (person_id)
    segment: np.ndarray
    base: np.ndarray  # in the existing base (active from the start)
    acq: np.ndarray
    dropout: np.ndarray  # inf: alive at the end
    rate: np.ndarray  # orders per day
    dropout_rate: np.ndarray
    basket: np.ndarray  # basket-size multiplier
    has: dict[str, np.ndarray]  # slot -> holds that record
    chan_w: np.ndarray  # (n, 3) channel preference, 0 where no account
    primary: np.ndarray  # channel of the first order
    pref: np.ndarray  # (n, C) category preference
    adopt: np.ndarray  # (n, C) day each category is adopted
    region: np.ndarray
    home_store: np.ndarray
    birth_year: np.ndarray
    gender: np.ndarray
    response_p: np.ndarray
    open_p: np.ndarray
    days: float  # length of the window

    @property
    def n(self) -> int:
        return len(self.gid)

    @property
    def alive_until(self) -> np.ndarray:
        """End of activity: dropout, or the end of the window."""
        return np.minimum(self.dropout, self.days)


# --------------------------------------------------------------------- records
@dataclass
class _Records:
    person: np.ndarray
    system: np.ndarray
    created: np.ndarray
    slot: np.ndarray
    number: np.ndarray  # global record number: chunk << 24 | local index
    id_bytes: np.ndarray  # (n, 14) ASCII of the record ids
    of: dict[str, np.ndarray]  # slot -> record index per person, -1 if none

    @property
    def ids(self) -> pa.Array:
        return _strings(self.id_bytes)

    def id_column(self, record: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
        """Record ids of many rows: a byte gather, much faster than taking strings."""
        return _strings(self.id_bytes[record], valid)

    def created_of(self, slot: str, person: np.ndarray) -> np.ndarray:
        rec = self.of[slot][person]
        return np.where(rec >= 0, self.created[np.maximum(rec, 0)], np.inf)
