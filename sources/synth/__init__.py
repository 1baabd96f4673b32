"""Synthetic retail dataset: a reproducible, messy, multi-system retail world with ground truth.

Why it exists: the built-in Complete Journey dataset is small (2.5 k households) and has
one clean id per household. The system must also run at 1 M and 3 M customers and link
identities across source systems, so this package writes such a world as a dataset
directory honouring ``sources.contract`` (found by ``sources.dataset.open_directory``),
plus the ground truth a test needs and no real dataset has: which source record belongs
to which person, each person's latent parameters, and a count of every injected
data-quality problem (``truth/``, ignored by the loader).

How it stays reproducible and fast: persons are generated in chunks, and every component
of a chunk draws from its own generator seeded with ``[seed, chunk, component]``, so a
chunk's content depends on nothing but the seed and its index; no global random state,
no clock. Everything is vectorised numpy / pyarrow (no Python loop per person or row),
and one Parquet part per table is written per chunk, so memory is bounded by the chunk.
Output is staged in a hidden directory beside ``out`` and swapped in at the end: a
killed run leaves no half dataset behind.

The model, in brief:

* persons: an existing base active from ``start`` plus monthly cohorts that grow; each
  has a gamma-distributed purchase rate and dropout rate (Pareto/NBD style), a latent
  segment giving category preferences, and categories adopted over time (cross-sell);
* orders: a Poisson process thinned by yearly (Nov-Dec peak, summer dip) and weekly
  seasonality, placed in a channel (store / web / app) the person has an account for,
  with baskets of 1 + Poisson lines; about 0.5 % of lines are returned later;
* campaigns every 2-4 weeks reach 20-40 % of CRM records (favouring alive persons);
  responses (heterogeneous propensity) come with a same-day order using a coupon;
* events: views and an add-to-cart before online orders, a purchase event, browsing
  sessions with abandoned carts, email opens / clicks after email contacts, support
  tickets (more likely shortly before dropout);
* identities: 1-5 source records per person (pos cards, web and app accounts, CRM
  records, duplicates) carrying emails, phones, cards, cookies and devices written in
  the many ways people write them, plus traps: typo'd emails, shared household devices,
  junk identifiers, recycled phone numbers, exact duplicate rows.

Modules, each importing only those above it in this list:

* ``params``: ``SynthParams`` (the knobs) and the constant tables: categories, segments,
  regions, tiers, seasonality, systems / channels / event and id-type codes, names,
  email domains, phone and card templates;
* ``arrays``: vectorised helpers: random streams per (seed, chunk, component), keyed
  bijections for ids, Arrow string columns from ASCII matrices, categorical picks;
* ``world``: what all chunks share: calendar window, catalog, stores, campaigns (``_world``);
* ``entities``: the per-chunk persons and source records (``_Persons``, ``_Records``);
* ``defects``: injected bad rows (null ids, NaN amounts, duplicate lines and identity rows,
  CSV text problems) and the ``_Quality`` counts of every injected problem;
* ``behaviour``: persons, holdings, acquisition, tastes; orders, lines, returns; contacts,
  responses; events;
* ``identities``: source records and their ids; person identifiers (emails, phones, cards,
  cookies, devices) with their messy forms and traps; the identities and customers rows;
* ``writer``: the output tables and truth of a chunk, the part / truth / metadata files,
  the marker, the target check, ``SynthSummary``;
* ``generator``: ``generate``, the chunked driver (``_chunk`` seeds every component).
"""

from sources.synth.generator import generate
from sources.synth.params import JUNK_EMAILS, JUNK_PHONES, MAX_CHUNK_SIZE, SynthParams
from sources.synth.writer import GENERATOR_VERSION, MARKER, SynthSummary

__all__ = [
    "GENERATOR_VERSION",
    "JUNK_EMAILS",
    "JUNK_PHONES",
    "MARKER",
    "MAX_CHUNK_SIZE",
    "SynthParams",
    "SynthSummary",
    "generate",
]
