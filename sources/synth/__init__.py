"""Synthetic retail dataset: a reproducible, messy, multi-system retail world with ground truth.

Why it exists: the built-in Complete Journey dataset is small (2.5 k households) and has
one clean id per household. The system must also run at 1 M and 3 M customers and link
identities across source systems, so this package writes such a world as a dataset
directory honouring ``sources.contract`` (found by ``sources.dataset.open_directory``),
plus the ground truth a test needs and no real dataset has: which source record belongs
to which person, each person's latent parameters, a count of every injected
data-quality problem, and each person's true response to an offer in every category
(``truth/``, ignored by the loader; read it with ``sources.synth.truth``).

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
  junk identifiers, recycled phone numbers, exact duplicate rows;
* response truth, for randomised control groups and ``cvm simulate``: per person and
  category, ``p_control`` / ``p_treated``, the chance to buy in the category within
  ``response_horizon_days`` (28) of a contact at the end of the window without / with an
  offer for it, and the uplift ``kind`` (persuadable, sure_thing, lost_cause, sleeping_dog;
  shares set by ``SynthParams``). They follow what the tables show, with noise: p_control
  is the person's habitual rate (about what history shows, 6 % on average), sure things
  buy the category often, persuadables are alive, responsive and like a category they have
  not adopted, sleeping dogs buy often and ignore emails, lost causes have left or rarely
  buy it; the mean true uplift is about +3 points.

Truth files: ``truth/persons.parquet`` (one row per person: segment, latent rates,
preferences, true identifiers), ``truth/records.parquet`` (source_system, source_id,
person_id, created_at), ``truth/quality.json`` (injected problems) and ``truth/response/``
(one Parquet part per chunk: person_id int64, category, kind, p_control and p_treated
float64; horizon_days and as_of in the schema metadata and in ``_synth.json``).

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
* ``uplift``: the response truth: features from a person's behaviour, the kind logit and
  its intercepts calibrated per world (``_uplift_model``), the draws of a chunk (``_response``);
* ``identities``: source records and their ids; person identifiers (emails, phones, cards,
  cookies, devices) with their messy forms and traps; the identities and customers rows;
* ``writer``: the output tables and truth of a chunk, the part / truth / metadata files,
  the marker, the target check, ``SynthSummary``;
* ``generator``: ``generate``, the chunked driver (``_chunk`` seeds every component);
* ``truth``: readers of a written dataset's truth: ``read_response``, ``person_of_record``.

Component numbers of a chunk's streams are fixed for good (14 is the response truth; the
calibration's reference persons use the world's component 4): a new stage takes a new
number, so the other files stay byte-identical for the same seed.
"""

from sources.synth.generator import generate
from sources.synth.params import JUNK_EMAILS, JUNK_PHONES, MAX_CHUNK_SIZE, UPLIFT_KINDS, SynthParams
from sources.synth.truth import person_of_record, read_response
from sources.synth.writer import GENERATOR_VERSION, MARKER, SynthSummary

__all__ = [
    "GENERATOR_VERSION",
    "JUNK_EMAILS",
    "JUNK_PHONES",
    "MARKER",
    "MAX_CHUNK_SIZE",
    "UPLIFT_KINDS",
    "SynthParams",
    "SynthSummary",
    "generate",
    "person_of_record",
    "read_response",
]
