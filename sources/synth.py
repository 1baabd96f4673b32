"""Synthetic retail dataset: a reproducible, messy, multi-system retail world with ground truth.

Why it exists: the built-in Complete Journey dataset is small (2.5 k households) and has
one clean id per household. The system must also run at 1 M and 3 M customers and link
identities across source systems, so this module writes such a world as a dataset
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
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from cvm.engines import replace_directory

#: marks a directory as synth output, so a rerun may replace it (and nothing else)
MARKER = "_synth.json"
#: bump when the generated content changes for the same arguments
GENERATOR_VERSION = 1
#: ids embed the chunk-local record number in 24 bits
MAX_CHUNK_SIZE = 2_000_000

US_PER_DAY = 86_400_000_000
MINUTE = 1.0 / 1440.0
#: entropy word of the streams shared by all chunks (catalog, stores, campaigns)
_GLOBAL = 2**32

# ---------------------------------------------------------------------------- world
CATEGORIES = ("grocery", "fresh", "dairy", "bakery", "beverages", "alcohol",
              "household", "beauty", "baby", "pets", "electronics", "clothing")
#: median list price (GBP), log-sd, extra units per line (Poisson mean), share sold by weight
_CATEGORY_ECONOMICS = {
    "grocery": (2.2, 0.6, 0.5, 0.0), "fresh": (3.0, 0.6, 0.3, 0.35), "dairy": (1.8, 0.5, 0.6, 0.0),
    "bakery": (1.6, 0.5, 0.4, 0.0), "beverages": (2.0, 0.7, 0.6, 0.0), "alcohol": (9.0, 0.6, 0.3, 0.0),
    "household": (4.0, 0.6, 0.3, 0.0), "beauty": (7.0, 0.7, 0.1, 0.0), "baby": (8.0, 0.6, 0.4, 0.0),
    "pets": (9.0, 0.7, 0.3, 0.0), "electronics": (45.0, 1.0, 0.02, 0.0), "clothing": (18.0, 0.7, 0.15, 0.0),
}
_SUBCATEGORIES = {
    "grocery": ("pasta", "rice", "tinned", "cereal", "sauces", "snacks"),
    "fresh": ("fruit", "vegetables", "meat", "fish"),
    "dairy": ("milk", "cheese", "yogurt", "butter"),
    "bakery": ("bread", "cakes", "pastries"),
    "beverages": ("water", "soft drinks", "juice", "coffee", "tea"),
    "alcohol": ("wine", "beer", "spirits"),
    "household": ("cleaning", "laundry", "paper", "kitchen"),
    "beauty": ("skincare", "haircare", "makeup", "fragrance"),
    "baby": ("nappies", "baby food", "baby care"),
    "pets": ("dog food", "cat food", "pet care"),
    "electronics": ("phones", "audio", "computing", "small appliances"),
    "clothing": ("womenswear", "menswear", "kidswear", "shoes"),
}
#: share of lines of an average shopper, before segment boosts
_BASE_CATEGORY_SHARE = (0.22, 0.14, 0.12, 0.08, 0.10, 0.05, 0.10, 0.05, 0.01, 0.02, 0.02, 0.05)
#: segment -> (share of persons, category boosts)
SEGMENTS: dict[str, tuple[float, dict[str, float]]] = {
    "general": (0.30, {}),
    "families": (0.18, {"baby": 15.0, "household": 2.0, "grocery": 1.5}),
    "pet_owners": (0.12, {"pets": 10.0}),
    "foodies": (0.14, {"fresh": 2.0, "alcohol": 3.0, "bakery": 2.0}),
    "tech": (0.08, {"electronics": 8.0}),
    "fashion": (0.08, {"clothing": 4.0, "beauty": 3.0}),
    "budget": (0.10, {"grocery": 1.6, "electronics": 0.3, "clothing": 0.5, "alcohol": 0.5}),
}
REGIONS = ("London", "South East", "South West", "East of England", "West Midlands", "East Midlands",
           "Yorkshire and the Humber", "North West", "North East", "Wales", "Scotland", "Northern Ireland")
_REGION_SHARE = (0.14, 0.14, 0.09, 0.10, 0.09, 0.07, 0.08, 0.11, 0.04, 0.05, 0.06, 0.03)
N_STORES = 150
TIERS = ("bronze", "silver", "gold", "platinum")
#: purchase rate (orders/day) above which a person holds the next tier
_TIER_RATE = (1 / 60, 1 / 30, 1 / 12)
GENDERS = ("F", "M", "X")

_MONTH_FACTOR = (0.92, 0.88, 0.95, 1.0, 1.0, 0.95, 0.85, 0.80, 0.95, 1.0, 1.2, 1.55)
_WEEKDAY_FACTOR = (0.90, 0.88, 0.92, 0.97, 1.08, 1.28, 1.00)  # Monday .. Sunday
#: store orders are pulled to weekends more than online ones
_WEEKEND_STORE_BOOST = 1.5
_STORE_HOURS = (0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 7, 9, 10, 8, 7, 7, 8, 10, 10, 7, 4, 2, 0, 0)
_ONLINE_HOURS = (2, 1, 1, 0.5, 0.5, 0.5, 1, 2, 3, 4, 4, 4, 5, 5, 4, 4, 4, 5, 6, 8, 9, 9, 7, 4)

# ------------------------------------------------------------------------ systems
SYSTEMS = ("pos", "web", "app", "crm")
POS, WEB, APP, CRM = range(4)
CHANNELS = ("store", "web", "app")
STORE, ONLINE_WEB, ONLINE_APP = range(3)
#: record slots a person may hold, and the system of each
SLOTS = ("pos1", "pos2", "web", "app", "crm1", "crm2")
_SLOT_SYSTEM = (POS, POS, WEB, APP, CRM, CRM)
EVENT_TYPES = ("view", "add_to_cart", "purchase", "email_open", "email_click", "support_ticket")
VIEW, CART, PURCHASE, OPEN, CLICK, TICKET = range(6)
CONTACT_CHANNELS = ("email", "sms", "mail")
ID_TYPES = ("loyalty_card", "email", "phone", "crm_id", "cookie", "device")
CARD, EMAIL, PHONE, CRM_ID, COOKIE, DEVICE = range(6)

_FIRST_NAMES = (
    "oliver", "george", "harry", "jack", "jacob", "noah", "charlie", "muhammad", "thomas", "oscar",
    "william", "james", "leo", "alfie", "henry", "joshua", "freddie", "archie", "ethan", "isaac",
    "alexander", "joseph", "edward", "samuel", "max", "daniel", "arthur", "lucas", "mohammed", "logan",
    "olivia", "amelia", "isla", "ava", "emily", "sophia", "grace", "mia", "poppy", "ella", "lily",
    "evie", "isabella", "sophie", "ivy", "freya", "harper", "willow", "charlotte", "jessica", "rosie",
    "daisy", "alice", "florence", "elsie", "matilda", "evelyn", "phoebe", "sienna", "ruby", "chloe",
    "priya", "aisha", "fatima", "zara", "sarah", "emma", "laura", "rachel", "hannah", "david", "paul",
    "mark", "andrew", "richard", "peter", "stephen", "michael", "john", "robert", "susan", "karen",
    "helen", "claire", "nicola", "gareth", "rhys", "dylan", "owen", "ewan", "callum", "rory", "niamh",
    "aoife", "ciara", "siobhan", "seamus", "kwame", "chen", "wei", "raj", "anil", "deepa", "olu",
)
_LAST_NAMES = (
    "smith", "jones", "williams", "taylor", "brown", "davies", "evans", "wilson", "thomas", "johnson",
    "roberts", "robinson", "thompson", "wright", "walker", "white", "edwards", "hughes", "green", "hall",
    "lewis", "harris", "clarke", "patel", "jackson", "wood", "turner", "martin", "cooper", "hill", "ward",
    "morris", "moore", "clark", "lee", "king", "baker", "harrison", "morgan", "allen", "james", "scott",
    "phillips", "watson", "davis", "parker", "price", "bennett", "young", "griffiths", "mitchell",
    "kelly", "cook", "carter", "richardson", "bailey", "collins", "bell", "shaw", "murphy", "miller",
    "cox", "richards", "khan", "marshall", "anderson", "simpson", "ellis", "adams", "singh", "begum",
    "wilkinson", "foster", "chapman", "powell", "webb", "rogers", "gray", "mason", "ali", "hunt",
    "hussain", "campbell", "matthews", "owen", "palmer", "holmes", "mills", "barnes", "knight", "lloyd",
    "butler", "russell", "barker", "fisher", "stevens", "jenkins", "murray", "dixon", "harvey", "okafor",
)
#: personal email domains; gmail.com first: its addresses get dot / plus / googlemail variants
_DOMAINS = ("gmail.com", "hotmail.co.uk", "outlook.com", "yahoo.co.uk", "btinternet.com", "icloud.com",
            "sky.com", "live.co.uk", "aol.com")
_DOMAIN_SHARE = (0.40, 0.12, 0.12, 0.10, 0.06, 0.08, 0.04, 0.04, 0.04)
#: a typo'd domain per domain, index-aligned with _DOMAINS
_DOMAIN_TYPOS = ("gmial.com", "hotmial.co.uk", "outlok.com", "yaho.co.uk", "btinternet.co", "icloud.co",
                 "sky.co", "live.co.k", "ao.com")
_PLUS_TAGS = ("shop", "news", "promo", "store", "deals", "x")
JUNK_EMAILS = ("noemail@none.com", "test@test.com")
JUNK_PHONES = ("00000000000", "07000000000")
#: written forms of a UK mobile ("#" = the 10 national digits 7xxxxxxxxx); all normalise to 44 7xxxxxxxxx
_PHONE_TEMPLATES = ("+44 #### ######", "0#### ######", "0044-####-######", "(0####) ### ###",
                    "0##########", "+44##########", "44##########")
_PHONE_TEMPLATE_SHARE = (0.25, 0.25, 0.08, 0.08, 0.20, 0.10, 0.04)
_CARD_TEMPLATES = ("################", "#### #### #### ####", "####-####-####-####")
_CARD_TEMPLATE_SHARE = (0.6, 0.25, 0.15)
_CARD_PREFIX = 6345_0000_0000_0000


# ------------------------------------------------------------------------ public
@dataclass(frozen=True)
class SynthParams:
    """Knobs of the simulated world. The defaults give the documented volumes (about 25 M
    order lines per million persons); tests raise the rare rates so that a small run still
    holds every trap."""

    existing_base_share: float = 0.45
    monthly_cohort_growth: float = 0.04
    mean_days_between_orders: float = 40.0
    #: gamma shape of the purchase rate: below 1 gives a long tail of heavy buyers
    purchase_rate_shape: float = 0.7
    mean_lifetime_days: float = 900.0
    dropout_rate_shape: float = 1.5
    extra_lines_per_order: float = 1.5
    #: mean days after acquisition before a non-core category is adopted
    category_adoption_days: float = 240.0
    return_rate: float = 0.005
    pos_share: float = 0.84
    web_share: float = 0.55
    app_share: float = 0.35
    crm_share: float = 0.64
    second_card_share: float = 0.05
    duplicate_crm_share: float = 0.04
    alt_email_share: float = 0.06
    mean_response_propensity: float = 0.04
    #: share of email-carrying records whose email has a typo (breaks the link)
    typo_email_rate: float = 0.015
    #: share of persons sharing an app/web device with 1-2 others of their household
    shared_device_share: float = 0.01
    #: share of CRM records carrying a junk email and/or phone
    junk_identifier_rate: float = 0.005
    #: share of persons whose phone number is later given to another person
    recycled_phone_rate: float = 0.002
    duplicate_identity_rate: float = 0.003
    # bad transaction rows (the loader must quarantine exactly these)
    null_customer_id_rate: float = 1e-4
    nan_amount_rate: float = 1e-4
    duplicate_line_rate: float = 1e-4
    # text-level problems, CSV only
    bad_timestamp_rate: float = 1e-4
    bad_amount_rate: float = 1e-4


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote: where, and how many rows of each table."""

    path: Path
    persons: int
    seed: int
    fmt: str
    rows: dict[str, int]
    records: int
    quality: dict = field(repr=False)


def generate(out: Path, customers: int, seed: int = 0, *, start: date = date(2024, 1, 1),
             end: date = date(2025, 12, 31), fmt: Literal["parquet", "csv"] = "parquet",
             chunk_size: int = 200_000, progress: Callable[[int, int], None] | None = None,
             params: SynthParams | None = None) -> SynthSummary:
    """Write a synthetic dataset of ``customers`` persons to ``out`` and return its summary.

    The same (customers, seed, fmt, chunk_size, params) always gives the same data.
    ``out`` must not exist, be empty, or be a previous synth output (replaced whole);
    anything else raises ``ValueError`` rather than mixing files. ``progress(done, total)``
    is called after each chunk of persons.
    """
    params = params or SynthParams()
    _check_arguments(customers, start, end, fmt, chunk_size)
    out = Path(out).expanduser().resolve()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    try:
        world = _world(seed, start, end, params)
        quality = _Quality()
        records = 0
        with _Writer(staged, fmt) as writer:
            rows = writer.write_products(world.catalog)
            for chunk in range(-(-customers // chunk_size)):
                first = chunk * chunk_size
                n = min(chunk_size, customers - first)
                tables, truth = _chunk(world, seed, chunk, first, n, fmt, quality)
                for name, table in tables.items():
                    rows[name] = rows.get(name, 0) + writer.write_part(name, chunk, table)
                writer.write_truth(truth)
                records += truth["records"].num_rows
                del tables, truth  # free this chunk before building the next
                if progress is not None:
                    progress(first + n, customers)
        summary = SynthSummary(out, customers, seed, fmt, rows, records, quality.as_dict())
        _write_metadata(staged, out.name, summary, start, end, chunk_size, params)
        replace_directory(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return summary


# ------------------------------------------------------------------ arguments
def _check_arguments(customers: int, start: date, end: date, fmt: str, chunk_size: int) -> None:
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if end <= start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be within 1..{MAX_CHUNK_SIZE}, got {chunk_size}")


def _check_target(out: Path) -> None:
    """Refuse to replace anything that is not ours: a wrong path must not delete data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; refusing to write a synthetic dataset there")
    if any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{out} is a non-empty directory that is not a previous synth output "
                         f"(no {MARKER}); refusing to overwrite it. Choose an empty or new directory.")


# ---------------------------------------------------------------- randomness & ids
def _rng(seed: int, chunk: int, component: int) -> np.random.Generator:
    """One independent stream per (chunk, component): components can change without
    shifting the others, and a chunk never depends on the chunks before it."""
    return np.random.default_rng([seed, chunk, component])


def _mix(x: np.ndarray, bits: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, 2**bits): distinct counters give distinct ids that do not
    reveal their order (xor-shift / odd-multiply rounds are each invertible)."""
    mask = np.uint64((1 << bits) - 1)
    half = np.uint64(bits // 2)
    x = (x.astype(np.uint64) ^ np.uint64(key & ((1 << bits) - 1))) & mask
    for mult in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9):
        x ^= x >> half
        x = (x * np.uint64(mult)) & mask
    x ^= x >> half
    return x


def _permute_decimal(x: np.ndarray, digits: int, key: int) -> np.ndarray:
    """A keyed bijection of [0, 10**digits) for numbers that must stay decimal and unique
    (phones, cards, CRM numbers): ``_mix`` on enough bits, cycle-walking until the value
    falls back in range (each walk stays a bijection; a few rounds at most)."""
    modulus = np.uint64(10**digits)
    bits = int(10**digits - 1).bit_length()
    x = x.astype(np.uint64)
    assert not len(x) or int(x.max()) < 10**digits
    y = _mix(x, bits, key)
    out = np.flatnonzero(y >= modulus)
    while len(out):
        y[out] = _mix(y[out], bits, key)
        out = out[y[out] >= modulus]
    return y


def _digits(x: np.ndarray, width: int, base: int) -> np.ndarray:
    """Fixed-width ASCII digits (lower-case hex for base 16) of ``x`` as an (n, width) uint8
    matrix. Ids are formatted by the million: digit rows are filled contiguously with
    uint8 arithmetic (shifts for hex), then transposed once."""
    x = x.astype(np.uint64)
    out = np.empty((width, len(x)), dtype=np.uint8)
    b = np.uint64(base)
    for k in range(width):
        d = ((x >> np.uint64(4 * k)) & np.uint64(15)) if base == 16 else (x % b)
        if base != 16:
            x = x // b
        d = d.astype(np.uint8)
        out[width - 1 - k] = d + np.uint8(48) + (d > 9).astype(np.uint8) * np.uint8(39)
    return out.T


def _strings(mat: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """An Arrow string array from an (n, width) ASCII matrix, without Python objects;
    null where ``valid`` is False."""
    n, width = mat.shape
    if n * width >= 2**31:
        raise ValueError("string column too large for one chunk; lower chunk_size")
    offsets = np.arange(n + 1, dtype=np.int32) * np.int32(width)
    bitmap = None
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(mat)),
                                       bitmap)


def _ids(prefix: str, x: np.ndarray, width: int, base: int = 16) -> pa.Array:
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    mat = np.concatenate([np.broadcast_to(head, (len(x), len(head))), _digits(x, width, base)], axis=1)
    return _strings(mat)


def _template(template: str, digits: np.ndarray) -> pa.Array:
    """Write digit rows into a template, '#' standing for the next digit."""
    slots = [i for i, ch in enumerate(template) if ch == "#"]
    mat = np.tile(np.frombuffer(template.encode(), dtype=np.uint8), (len(digits), 1))
    mat[:, slots] = digits[:, : len(slots)]
    return _strings(mat)


def _pick(codes: np.ndarray, choices: tuple[str, ...] | pa.Array, mask: np.ndarray | None = None) -> pa.Array:
    """Strings by code (null where ``mask``): categorical columns without Python objects."""
    values = choices if isinstance(choices, pa.Array) else pa.array(choices, pa.string())
    return pc.take(values, pa.array(codes.astype(np.int64), mask=mask))


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _categorical(rng: np.random.Generator, probs, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right").clip(0, len(p) - 1)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of nearly sorted input; far faster than np.unique on millions of int64."""
    x = np.sort(x, kind="stable")
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def _lengths_to_index(counts: np.ndarray) -> np.ndarray:
    """Owner index of each item when owner i has counts[i] items."""
    return np.repeat(np.arange(len(counts)), counts)


# ----------------------------------------------------------------------- world
@dataclass(frozen=True)
class _Window:
    """The calendar: day 0 is ``start`` at 00:00; all times are float days from there."""

    start: date
    days: int
    day_factor: np.ndarray  # seasonal intensity per day, mean 1
    weekend: np.ndarray  # bool per day
    month_start: np.ndarray  # first day of each calendar month in the window (+ end)

    @property
    def start_us(self) -> int:
        return int((datetime(self.start.year, self.start.month, self.start.day) - datetime(1970, 1, 1))
                   .total_seconds()) * 1_000_000

    def us(self, days: np.ndarray) -> np.ndarray:
        """Float days to int64 microseconds since the epoch, inside the window."""
        us = np.floor(np.asarray(days, dtype=np.float64) * US_PER_DAY).astype(np.int64)
        return np.clip(us, 0, self.days * US_PER_DAY - 1) + self.start_us

    def timestamps(self, days: np.ndarray) -> pa.Array:
        return pa.array(self.us(days), type=pa.timestamp("us"))


def _window(start: date, end: date) -> _Window:
    days = (end - start).days + 1
    dates = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    months = dates.astype("datetime64[M]").astype(np.int64) % 12
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    factor = np.asarray(_MONTH_FACTOR)[months] * np.asarray(_WEEKDAY_FACTOR)[weekday]
    christmas = (months == 11) & ((dates - dates.astype("datetime64[M]")).astype(np.int64) == 24)
    factor[christmas] *= 0.15  # stores shut on 25 December
    first_of_month = np.flatnonzero(dates == dates.astype("datetime64[M]"))
    month_start = np.unique(np.concatenate([[0], first_of_month, [days]]))
    return _Window(start, days, factor / factor.mean(), weekday >= 5, month_start.astype(np.float64))


@dataclass(frozen=True)
class _Catalog:
    product_id: pa.Array
    category: np.ndarray  # category code per product
    subcategory: pa.Array
    price: np.ndarray
    #: category + cumulative popularity within it: one searchsorted samples a product
    popularity_key: np.ndarray


def _catalog(rng: np.random.Generator) -> _Catalog:
    sizes = rng.integers(50, 401, size=len(CATEGORIES))
    category = _lengths_to_index(sizes)
    rank = np.concatenate([np.arange(1, s + 1) for s in sizes])  # 12 categories: not a per-row loop
    weight = rank ** -1.07  # Zipf-like popularity
    key = np.empty(len(category))
    price = np.empty(len(category))
    sub_names: list[str] = []
    sub_code = np.empty(len(category), dtype=np.int64)
    start = 0
    for c, name in enumerate(CATEGORIES):
        stop = start + sizes[c]
        cum = np.cumsum(weight[start:stop])
        key[start:stop] = c + cum / cum[-1]
        key[stop - 1] = c + 1.0
        median, sigma, _, _ = _CATEGORY_ECONOMICS[name]
        price[start:stop] = np.round(np.maximum(0.2, rng.lognormal(np.log(median), sigma, sizes[c])), 2)
        subs = _SUBCATEGORIES[name]
        sub_code[start:stop] = len(sub_names) + rng.integers(0, len(subs), sizes[c])
        sub_names.extend(subs)
        start = stop
    # ids in random order, so that a product's number says nothing about its popularity
    ids = _ids("P", rng.permutation(len(category)) + 1, 6, base=10)
    return _Catalog(ids, category, _pick(sub_code, tuple(sub_names)), price, key)


@dataclass(frozen=True)
class _Stores:
    region: np.ndarray  # region code per store
    first: np.ndarray  # first store index of each region
    count: np.ndarray  # stores per region
    ids: pa.Array


def _stores() -> _Stores:
    share = np.asarray(_REGION_SHARE) / np.sum(_REGION_SHARE)
    count = np.maximum(2, np.round(share * N_STORES)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    region = _lengths_to_index(count)
    return _Stores(region, first, count, _ids("S", np.arange(len(region)) + 1, 4, base=10))


@dataclass(frozen=True)
class _Campaigns:
    ids: pa.Array
    day: np.ndarray  # send day (float days)
    channel: np.ndarray  # contact channel code
    reach: np.ndarray  # share of CRM records targeted
    offer: np.ndarray  # coupon value (GBP)


def _campaigns(rng: np.random.Generator, window: _Window) -> _Campaigns:
    gaps = rng.integers(14, 29, size=window.days // 14 + 2)
    day = 7 + np.cumsum(gaps) - gaps[0]
    day = day[day < window.days - 1].astype(np.float64)
    n = len(day)
    return _Campaigns(
        ids=_ids("CMP", np.arange(n) + 1, 4, base=10),
        day=day,
        channel=_categorical(rng, (0.6, 0.25, 0.15), n),
        reach=rng.uniform(0.2, 0.4, n),
        offer=rng.choice(np.array([2.0, 3.0, 5.0, 10.0]), n),
    )


@dataclass(frozen=True)
class _World:
    """Everything shared by all chunks: calendar, catalog, stores, campaigns, id keys."""

    window: _Window
    catalog: _Catalog
    stores: _Stores
    campaigns: _Campaigns
    params: SynthParams
    key: int  # keys the id bijections, so ids differ between seeds


def _world(seed: int, start: date, end: date, params: SynthParams) -> _World:
    window = _window(start, end)
    return _World(
        window=window,
        catalog=_catalog(_rng(seed, _GLOBAL, 1)),
        stores=_stores(),
        campaigns=_campaigns(_rng(seed, _GLOBAL, 2), window),
        params=params,
        key=int(_rng(seed, _GLOBAL, 3).integers(0, 2**62)),
    )


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


def _persons(rng: np.random.Generator, world: _World, first: int, n: int) -> _Persons:
    prm, win = world.params, world.window
    segment = _categorical(rng, [s for s, _ in SEGMENTS.values()], n)
    base = rng.random(n) < prm.existing_base_share
    rate = rng.gamma(prm.purchase_rate_shape, 1 / prm.mean_days_between_orders / prm.purchase_rate_shape, n)
    dropout_rate = rng.gamma(prm.dropout_rate_shape, 1 / prm.mean_lifetime_days / prm.dropout_rate_shape, n)
    has = _holdings(rng, prm, n)
    chan_w = rng.gamma(np.array([3.5, 0.8, 0.9]), size=(n, 3))
    chan_w *= np.stack([has["pos1"], has["web"], has["app"]], axis=1)
    primary = np.argmax(chan_w, axis=1)
    acq = _acquisition(rng, win, prm, base, primary)
    lifetime = rng.exponential(1 / dropout_rate)
    dropout = np.where(acq + lifetime < win.days, acq + lifetime, np.inf)
    pref, adopt = _category_tastes(rng, prm, segment, acq)
    region = _categorical(rng, _REGION_SHARE, n)
    home_store = world.stores.first[region] + (rng.random(n) * world.stores.count[region]).astype(np.int64)
    p = _Persons(
        gid=np.arange(first, first + n, dtype=np.int64), segment=segment, base=base, acq=acq, dropout=dropout,
        rate=rate, dropout_rate=dropout_rate, basket=rng.gamma(4.0, 0.25, n), has=has, chan_w=chan_w,
        primary=primary, pref=pref, adopt=adopt, region=region, home_store=home_store,
        birth_year=np.clip(np.round(rng.normal(1979, 15, n)), 1935, 2007).astype(np.int64),
        gender=_categorical(rng, (0.51, 0.47, 0.02), n),
        # heterogeneous, and higher for frequent buyers
        response_p=np.clip(rng.beta(1.2, 1.2 / prm.mean_response_propensity, n)
                           * np.sqrt(rate * prm.mean_days_between_orders).clip(0.3, 3.0), 0, 0.9),
        open_p=rng.beta(2.0, 5.0, n),
        days=float(win.days),
    )
    return p


def _holdings(rng: np.random.Generator, prm: SynthParams, n: int) -> dict[str, np.ndarray]:
    pos = rng.random(n) < prm.pos_share
    web = rng.random(n) < prm.web_share
    app = rng.random(n) < prm.app_share
    pos |= ~(web | app)  # every person can buy somewhere: no account at all means a store card
    crm = rng.random(n) < prm.crm_share
    return {"pos1": pos, "pos2": pos & (rng.random(n) < prm.second_card_share), "web": web, "app": app,
            "crm1": crm, "crm2": crm & (rng.random(n) < prm.duplicate_crm_share)}


def _acquisition(rng: np.random.Generator, win: _Window, prm: SynthParams, base: np.ndarray,
                 primary: np.ndarray) -> np.ndarray:
    """Acquisition day: 0 for the existing base, else in a monthly cohort (cohorts grow),
    at a time of day that suits the channel of the first order."""
    n_months = len(win.month_start) - 1
    month = _categorical(rng, (1 + prm.monthly_cohort_growth) ** np.arange(n_months), len(base))
    lo, hi = win.month_start[month], win.month_start[month + 1]
    day = np.floor(lo + rng.random(len(base)) * (hi - lo))
    acq = day + _time_of_day(rng, primary)
    return np.where(base, 0.0, np.minimum(acq, win.days - MINUTE))


def _category_tastes(rng: np.random.Generator, prm: SynthParams, segment: np.ndarray,
                     acq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preferences around the segment profile; the two favourite categories are bought from
    the start, the others adopted later (sooner when liked more): cross-sell happens."""
    profiles = np.tile(np.asarray(_BASE_CATEGORY_SHARE), (len(SEGMENTS), 1))
    for s, (_, boosts) in enumerate(SEGMENTS.values()):
        for cat, boost in boosts.items():
            profiles[s, CATEGORIES.index(cat)] *= boost
    profiles /= profiles.sum(axis=1, keepdims=True)
    pref = rng.gamma(20.0 * profiles[segment] + 0.02)
    pref /= pref.sum(axis=1, keepdims=True)
    scale = prm.category_adoption_days / np.sqrt(len(CATEGORIES) * pref)
    adopt = acq[:, None] + rng.exponential(scale)
    core = np.argsort(-pref, axis=1)[:, :2]
    np.put_along_axis(adopt, core, -1.0, axis=1)
    return pref.astype(np.float32), adopt


def _time_of_day(rng: np.random.Generator, channel: np.ndarray) -> np.ndarray:
    """Fraction of a day: store orders in opening hours, online ones peaking in the evening."""
    store = np.cumsum(_STORE_HOURS) / np.sum(_STORE_HOURS)
    online = np.cumsum(_ONLINE_HOURS) / np.sum(_ONLINE_HOURS)
    u = rng.random(len(channel))
    hour = np.where(channel == STORE, np.searchsorted(store, u, side="right"),
                    np.searchsorted(online, u, side="right")).clip(0, 23)
    return (hour + rng.random(len(channel))) / 24.0


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


def _records(rng: np.random.Generator, world: _World, p: _Persons, chunk: int) -> _Records:
    """Source records per person and when each was created (the primary account at
    acquisition, others later, never after dropout)."""
    span = p.alive_until - p.acq
    later = p.acq + rng.random(p.n) * span
    created = {
        "pos1": np.where(p.primary == STORE, p.acq, np.where(rng.random(p.n) < 0.5, p.acq, later)),
        "web": np.where(p.primary == ONLINE_WEB, p.acq, np.where(rng.random(p.n) < 0.5, p.acq, p.acq
                                                                  + rng.random(p.n) * span)),
        "app": np.where(p.primary == ONLINE_APP, p.acq, np.where(rng.random(p.n) < 0.4, p.acq, p.acq
                                                                  + rng.random(p.n) * span)),
        "crm1": np.where(rng.random(p.n) < 0.6, p.acq, p.acq + rng.random(p.n) * span * 0.5),
    }
    created["pos2"] = created["pos1"] + rng.random(p.n) * (p.alive_until - created["pos1"])
    created["crm2"] = created["crm1"] + rng.random(p.n) * (p.alive_until - created["crm1"])
    person, system, when, slot = [], [], [], []
    of: dict[str, np.ndarray] = {}
    offset = 0
    for s, name in enumerate(SLOTS):
        idx = np.flatnonzero(p.has[name])
        of[name] = np.full(p.n, -1, dtype=np.int64)
        of[name][idx] = offset + np.arange(len(idx))
        offset += len(idx)
        person.append(idx)
        system.append(np.full(len(idx), _SLOT_SYSTEM[s], dtype=np.int8))
        when.append(created[name][idx])
        slot.append(np.full(len(idx), s, dtype=np.int8))
    system_a = np.concatenate(system)
    number = (np.uint64(chunk) << np.uint64(24)) | np.arange(offset, dtype=np.uint64)
    id_bytes = _record_ids(system_a, _mix(number, 40, world.key))
    return _Records(np.concatenate(person), system_a, np.concatenate(when), np.concatenate(slot), number,
                    id_bytes, of)


def _record_ids(system: np.ndarray, token: np.ndarray) -> np.ndarray:
    """'pos-3fa9c01b2e' etc.: a system prefix and a 40-bit token unrelated to person order."""
    prefixes = np.frombuffer(b"pos-web-app-crm-", dtype=np.uint8).reshape(4, 4)
    return np.concatenate([prefixes[system], _digits(token, 10, 16)], axis=1)


# --------------------------------------------------------------------- orders
_ORDER_FIELDS = ("person", "t", "channel", "record", "campaign", "store")


@dataclass
class _Orders:
    person: np.ndarray
    t: np.ndarray
    channel: np.ndarray
    record: np.ndarray
    campaign: np.ndarray  # -1, or the campaign whose coupon the order redeems
    store: np.ndarray  # store index, -1 online

    def take(self, idx: np.ndarray) -> _Orders:
        return _Orders(*(getattr(self, f)[idx] for f in _ORDER_FIELDS))


def _place_orders(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, person: np.ndarray,
                  day: np.ndarray, campaign: np.ndarray) -> tuple[_Orders, np.ndarray]:
    """Put orders wanted on given days into a channel the person holds an account for (store
    weekends boosted), at a time of day suiting it; drop those falling outside the person's
    life or before that account existed."""
    d = np.floor(day).astype(np.int64).clip(0, world.window.days - 1)
    w = p.chan_w[person].copy()
    w[:, STORE] *= np.where(world.window.weekend[d], _WEEKEND_STORE_BOOST, 1.0)
    created = np.stack([r.created_of(s, person) for s in ("pos1", "web", "app")], axis=1)
    w *= created <= d[:, None] + 1  # accounts opened by the end of that day
    cum = np.cumsum(w, axis=1)
    pick = (rng.random(len(person))[:, None] * cum[:, -1:] >= cum).sum(axis=1).clip(0, 2)
    channel = np.where(cum[:, -1] > 0, pick, p.primary[person])
    t = d + _time_of_day(rng, channel)
    pos2 = r.of["pos2"][person]
    use_pos2 = (pos2 >= 0) & (t >= r.created[np.maximum(pos2, 0)])
    record = np.select([channel == ONLINE_WEB, channel == ONLINE_APP, use_pos2],
                       [r.of["web"][person], r.of["app"][person], pos2], r.of["pos1"][person])
    ok = (record >= 0) & (t > p.acq[person]) & (t < p.alive_until[person])
    ok &= t >= r.created[np.maximum(record, 0)]
    store = _store_of(rng, world, p, person)
    store = np.where(channel == STORE, store, -1)
    keep = np.flatnonzero(ok)
    return _Orders(person, t, channel, record, campaign, store).take(keep), keep


def _store_of(rng: np.random.Generator, world: _World, p: _Persons, person: np.ndarray) -> np.ndarray:
    """Mostly the home store, sometimes another in the region, rarely anywhere."""
    u = rng.random(len(person))
    region = p.region[person]
    local = world.stores.first[region] + (rng.random(len(person)) * world.stores.count[region]).astype(int)
    anywhere = rng.integers(0, len(world.stores.region), len(person))
    return np.where(u < 0.8, p.home_store[person], np.where(u < 0.96, local, anywhere))


def _regular_orders(rng: np.random.Generator, world: _World, p: _Persons, r: _Records) -> _Orders:
    """A Poisson process per person over its life, thinned by the seasonal factor."""
    fmax = float(world.window.day_factor.max())
    span = np.maximum(p.alive_until - p.acq, 0)
    count = rng.poisson(p.rate * fmax * span)
    person = _lengths_to_index(count)
    day = p.acq[person] + rng.random(len(person)) * span[person]
    d = np.floor(day).astype(np.int64).clip(0, world.window.days - 1)
    keep = rng.random(len(person)) * fmax < world.window.day_factor[d]
    person, day = person[keep], day[keep]
    return _place_orders(rng, world, p, r, person, day, np.full(len(person), -1, dtype=np.int64))[0]


def _first_orders(world: _World, p: _Persons, r: _Records) -> _Orders:
    """New customers are acquired by their first order, in their primary channel."""
    person = np.flatnonzero(~p.base)
    channel = p.primary[person]
    record = np.select([channel == ONLINE_WEB, channel == ONLINE_APP],
                       [r.of["web"][person], r.of["app"][person]], r.of["pos1"][person])
    store = np.where(channel == STORE, p.home_store[person], -1)
    return _Orders(person, p.acq[person], channel, record, np.full(len(person), -1, dtype=np.int64), store)


def _concat_orders_unsorted(*parts: _Orders) -> _Orders:
    return _Orders(*(np.concatenate([getattr(o, f) for o in parts]) for f in _ORDER_FIELDS))


def _concat_orders(parts: list[_Orders]) -> _Orders:
    """All orders in time order, so that their lines come out in time order too."""
    merged = _concat_orders_unsorted(*parts)
    return merged.take(np.argsort(merged.t, kind="stable"))


# ------------------------------------------------------------ campaigns
@dataclass
class _Contacts:
    record: np.ndarray
    person: np.ndarray
    campaign: np.ndarray
    t: np.ndarray
    channel: np.ndarray


def _contacts(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
              has_email: np.ndarray) -> _Contacts:
    """Each campaign targets part of the CRM records that exist by then, favouring persons
    still buying (a marketer's selection based on recent activity)."""
    cmp = world.campaigns
    crm = np.flatnonzero(r.system == CRM)
    person = r.person[crm]
    alive = (p.acq[person][:, None] <= cmp.day[None, :]) & (p.dropout[person][:, None] > cmp.day[None, :])
    prob = cmp.reach[None, :] * np.where(alive, 1.4, 0.6)
    hit = (rng.random(prob.shape) < prob) & (r.created[crm][:, None] <= cmp.day[None, :])
    rec_i, cmp_i = np.nonzero(hit)
    record = crm[rec_i]
    channel = cmp.channel[cmp_i]
    # no email address on file: the campaign goes by post
    channel = np.where((channel == 0) & ~has_email[record], 2, channel)
    t = cmp.day[cmp_i] + (6 + rng.random(len(record)) * 6) / 24  # sent in the morning
    return _Contacts(record, r.person[record], cmp_i, t, channel)


def _responses(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
               c: _Contacts) -> tuple[np.ndarray, np.ndarray, _Orders]:
    """Responses of alive persons with their propensity, each with a same-day coupon order;
    at most one per person and campaign (duplicate CRM records are contacted twice)."""
    alive = (p.acq[c.person] <= c.t) & (p.dropout[c.person] > c.t)
    hit = np.flatnonzero(alive & (rng.random(len(c.t)) < p.response_p[c.person]))
    day = np.floor(c.t[hit]) + rng.integers(1, 14, len(hit))
    order = np.lexsort((day, c.campaign[hit], c.person[hit]))
    hit, day = hit[order], day[order]
    first = np.ones(len(hit), dtype=bool)
    first[1:] = (c.person[hit][1:] != c.person[hit][:-1]) | (c.campaign[hit][1:] != c.campaign[hit][:-1])
    hit, day = hit[first], day[first]
    within = day < world.window.days
    hit, day = hit[within], day[within]
    placed, kept = _place_orders(rng, world, p, r, c.person[hit], day, c.campaign[hit])
    # a response exists only with its order (an order outside the person's life is dropped)
    return hit[kept], placed.t, placed


# ------------------------------------------------------------------ lines
@dataclass
class _Lines:
    order: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    discount: np.ndarray
    coupon: np.ndarray


def _lines(rng: np.random.Generator, world: _World, p: _Persons, o: _Orders) -> _Lines:
    """Baskets of 1 + Poisson lines; categories drawn from the adopted ones by preference,
    products by popularity; a product appears once per order."""
    cat = world.catalog
    n_lines = 1 + rng.poisson(world.params.extra_lines_per_order * p.basket[o.person]).clip(0, 40)
    order = _lengths_to_index(n_lines)
    category = _line_categories(rng, p, o.person[order], o.t[order])
    product = np.searchsorted(cat.popularity_key, category + rng.random(len(order)), side="right")
    product = product.clip(0, len(cat.category) - 1)
    key = _sorted_unique(order.astype(np.int64) * len(cat.category) + product)
    order, product = key // len(cat.category), key % len(cat.category)
    category = cat.category[product]
    extra = np.asarray([e for _, _, e, _ in _CATEGORY_ECONOMICS.values()])[category]
    weighed_share = np.asarray([w for _, _, _, w in _CATEGORY_ECONOMICS.values()])[category]
    weighed = rng.random(len(order)) < weighed_share
    quantity = np.where(weighed, np.round(np.clip(rng.lognormal(np.log(0.6), 0.5, len(order)), 0.05, 5), 3),
                        1.0 + rng.poisson(extra))
    gross = np.round(cat.price[product] * quantity, 2)
    promo_rate = np.where(rng.random(len(order)) < 0.12, rng.uniform(0.1, 0.35, len(order)), 0.0)
    promo = np.round(gross * promo_rate, 2)
    coupon = np.zeros(len(order))
    starts = np.flatnonzero(np.diff(order, prepend=-1) != 0)
    redeem = starts[o.campaign[order[starts]] >= 0]
    offer = world.campaigns.offer[o.campaign[order[redeem]]]
    coupon[redeem] = np.maximum(0.01, np.round(np.minimum(offer, 0.5 * (gross[redeem] - promo[redeem])), 2))
    discount = np.round(promo + coupon, 2)
    return _Lines(order, product, quantity, np.round(gross - discount, 2), discount, coupon)


def _line_categories(rng: np.random.Generator, p: _Persons, person: np.ndarray,
                     t: np.ndarray) -> np.ndarray:
    """Exponential race among adopted categories (equivalent to sampling by preference),
    in blocks to bound memory."""
    out = np.empty(len(person), dtype=np.int64)
    inv_pref = 1.0 / np.maximum(p.pref, 1e-9)
    block = 1_000_000
    for lo in range(0, len(person), block):
        who, when = person[lo:lo + block], t[lo:lo + block]
        race = rng.standard_exponential((len(who), len(CATEGORIES)), dtype=np.float32) * inv_pref[who]
        race[p.adopt[who] > when[:, None]] = np.inf
        out[lo:lo + block] = np.argmin(race, axis=1)
    return out


def _returns(rng: np.random.Generator, world: _World, o: _Orders, lines: _Lines) -> tuple[_Orders, _Lines]:
    """About ``return_rate`` of lines come back 1-28 days later as their own negative order."""
    pick = np.flatnonzero(rng.random(len(lines.order)) < world.params.return_rate)
    src = lines.order[pick]
    t = o.t[src] + rng.integers(1, 29, len(pick)) + rng.random(len(pick)) * 0.3
    ok = t < world.window.days
    pick, src, t = pick[ok], src[ok], t[ok]
    ret = o.take(src)
    ret.t = t
    ret.campaign = np.full(len(src), -1, dtype=np.int64)
    lines_r = _Lines(np.arange(len(src)) + len(o.t), lines.product[pick], -lines.quantity[pick],
                     -lines.amount[pick], np.zeros(len(src)), np.zeros(len(src)))
    return ret, lines_r


# ------------------------------------------------------------------ events
def _events(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, o: _Orders,
            c: _Contacts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(record, time, type) of every behavioural event."""
    parts = [_order_events(rng, o), _browsing(rng, world, p, r), _email_events(rng, world, p, r, c),
             _support_tickets(rng, world, p, r)]
    record = np.concatenate([x[0] for x in parts])
    t = np.concatenate([x[1] for x in parts])
    kind = np.concatenate([x[2] for x in parts])
    ok = (t >= 0) & (t < world.window.days) & (record >= 0)
    return record[ok], t[ok], kind[ok]


def _order_events(rng: np.random.Generator, o: _Orders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Online orders: views 10-60 min before, an add-to-cart 1-10 min before, a purchase.
    Orders in the window's first hour squeeze their session into the time since the start."""
    online = np.flatnonzero(o.channel != STORE)
    n_views = 1 + rng.poisson(0.3, len(online))
    view_of = np.repeat(online, n_views)
    view_t = o.t[view_of] - rng.uniform(10, 60, len(view_of)) * MINUTE
    view_t = np.where(view_t < 0, o.t[view_of] * rng.uniform(0.0, 0.5, len(view_of)), view_t)
    cart_t = o.t[online] - rng.uniform(1, 10, len(online)) * MINUTE
    cart_t = np.where(cart_t < 0, o.t[online] * rng.uniform(0.5, 1.0, len(online)), cart_t)
    record = np.concatenate([o.record[view_of], o.record[online], o.record[online]])
    t = np.concatenate([view_t, cart_t, o.t[online]])
    kind = np.concatenate([np.full(len(view_of), VIEW), np.full(len(online), CART),
                           np.full(len(online), PURCHASE)])
    return record, t, kind


def _online_record(rng: np.random.Generator, p: _Persons, r: _Records, person: np.ndarray,
                   t: np.ndarray) -> np.ndarray:
    """The web or app account a person used at t (by channel preference), -1 if none yet."""
    web_ok = r.created_of("web", person) <= t
    app_ok = r.created_of("app", person) <= t
    w_web = p.chan_w[person, ONLINE_WEB] * web_ok
    w_app = p.chan_w[person, ONLINE_APP] * app_ok
    use_app = rng.random(len(person)) * (w_web + w_app) >= w_web
    rec = np.where(use_app & app_ok, r.of["app"][person], np.where(web_ok, r.of["web"][person], -1))
    return np.where(web_ok | app_ok, rec, -1)


def _browsing(rng: np.random.Generator, world: _World, p: _Persons,
              r: _Records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sessions that do not end in an order: views, and sometimes an abandoned cart."""
    online = p.has["web"] | p.has["app"]
    span = np.where(online, np.maximum(p.alive_until - p.acq, 0), 0)
    count = rng.poisson(p.rate * 0.12 * span)
    person = _lengths_to_index(count)
    t = p.acq[person] + rng.random(len(person)) * span[person]
    record = _online_record(rng, p, r, person, t)
    n_views = 1 + rng.poisson(0.5, len(person))
    view_of = np.repeat(np.arange(len(person)), n_views)
    view_t = t[view_of] + rng.uniform(0, 20, len(view_of)) * MINUTE
    carted = np.flatnonzero(rng.random(len(person)) < 0.4)
    cart_t = t[carted] + rng.uniform(5, 25, len(carted)) * MINUTE
    return (np.concatenate([record[view_of], record[carted]]), np.concatenate([view_t, cart_t]),
            np.concatenate([np.full(len(view_of), VIEW), np.full(len(carted), CART)]))


def _email_events(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
                  c: _Contacts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opens (and clicks) of email contacts, tracked on the person's web or app account."""
    email = np.flatnonzero(c.channel == 0)
    opened = email[rng.random(len(email)) < p.open_p[c.person[email]]]
    t_open = c.t[opened] + rng.exponential(0.5, len(opened))
    rec_open = _online_record(rng, p, r, c.person[opened], t_open)
    clicked = np.flatnonzero(rng.random(len(opened)) < 0.3)
    t_click = t_open[clicked] + rng.uniform(0.2, 15, len(clicked)) * MINUTE
    return (np.concatenate([rec_open, rec_open[clicked]]), np.concatenate([t_open, t_click]),
            np.concatenate([np.full(len(opened), OPEN), np.full(len(clicked), CLICK)]))


def _support_tickets(rng: np.random.Generator, world: _World, p: _Persons,
                     r: _Records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rare tickets, several times likelier in the weeks before a person drops out."""
    span = np.maximum(p.alive_until - p.acq, 0)
    person = _lengths_to_index(rng.poisson(span * 0.1 / 365))
    t = p.acq[person] + rng.random(len(person)) * span[person]
    leaving = np.flatnonzero(np.isfinite(p.dropout) & (rng.random(p.n) < 0.3))
    t_leave = p.dropout[leaving] - rng.uniform(1, 45, len(leaving))
    leaving, t_leave = leaving[t_leave > p.acq[leaving]], t_leave[t_leave > p.acq[leaving]]
    person, t = np.concatenate([person, leaving]), np.concatenate([t, t_leave])
    return _online_record(rng, p, r, person, t), t, np.full(len(person), TICKET)


# ----------------------------------------------------------------- customers
def _customer_rows(rng: np.random.Generator, world: _World, p: _Persons, r: _Records) -> pa.Table:
    """Attributes on CRM records (and some web profiles): up to 3 versions per CRM record
    (a move, a tier change; each persists in later versions) and conflicting values between
    a person's records (self-reported web birth years, a stale duplicate CRM record)."""
    crm = np.flatnonzero(r.system == CRM)
    web = np.flatnonzero(r.system == WEB)
    web = web[rng.random(len(web)) < 0.35]
    rec = np.concatenate([crm, web])
    versions = 1 + (rng.random(len(rec)) < 0.2) + (rng.random(len(rec)) < 0.05)
    versions[len(crm):] = 1
    # per record: the version at which it moves region / changes tier (3 = never)
    move_at = np.where(rng.random(len(rec)) < 0.5, 1, 3)
    tier_at = np.where(move_at == 1, 2, 1)
    new_region = (p.region[r.person[rec]] + rng.integers(1, len(REGIONS), len(rec))) % len(REGIONS)
    tier_step = rng.choice(np.array([-1, 1]), len(rec))
    row = np.repeat(np.arange(len(rec)), versions)
    version = np.arange(len(row)) - np.repeat(np.cumsum(versions) - versions, versions)
    row_rec, person, n = rec[row], r.person[rec[row]], len(row)
    created, end = r.created[row_rec], float(world.window.days)
    # later versions at increasing times: uniforms sorted within each record
    u = rng.random(n)
    u = u[np.lexsort((u, row))]
    updated = np.where(version == 0, created, created + u * (end - created))
    is_web = r.system[row_rec] == WEB
    dup_crm = r.slot[row_rec] == SLOTS.index("crm2")
    misreported = (is_web & (rng.random(n) < 0.15)) | (dup_crm & (rng.random(n) < 0.4))
    birth = p.birth_year[person] + np.where(misreported, rng.integers(-3, 4, n), 0)
    birth_null = rng.random(n) < np.where(is_web, 0.3, 0.08)
    gender = np.where(is_web & (rng.random(n) < 0.03), (p.gender[person] + 1) % 2, p.gender[person])
    gender_null = rng.random(n) < np.where(is_web | dup_crm, 0.25, 0.1)
    region = np.where(version >= move_at[row], new_region[row], p.region[person])
    region = np.where(dup_crm & (rng.random(n) < 0.3), (region + 1) % len(REGIONS), region)  # stale copy
    tier = np.searchsorted(np.asarray(_TIER_RATE), p.rate[person])
    tier = np.clip(tier + np.where(version >= tier_at[row], tier_step[row], 0), 0, len(TIERS) - 1)
    return pa.table({
        "customer_id": r.id_column(row_rec),
        "source_system": _pick(r.system[row_rec], SYSTEMS),
        "updated_at": world.window.timestamps(updated),
        "birth_year": pa.array(birth, pa.int64(), mask=birth_null),
        "gender": _pick(gender, GENDERS, mask=gender_null),
        "region": _pick(region, REGIONS),
        "loyalty_tier": _pick(tier, TIERS),
    })


# ---------------------------------------------------------------- identities
@dataclass
class _PersonIds:
    """Each person's true identifiers, before they are written onto records."""

    email_local: pa.Array  # as the person writes it (dots significant except at gmail)
    alt_local: pa.Array
    domain: np.ndarray
    alt_domain: np.ndarray
    has_alt: np.ndarray
    phone: np.ndarray  # (n, 10) ascii digits of the national number 7xxxxxxxxx
    device: np.ndarray  # uint64 token
    household: np.ndarray  # -1 or the gid of the household's first member
    phone_from: np.ndarray  # -1 or the gid of the person who had the number before
    phone_since: np.ndarray  # the number is on this person's records from then on


def _email_locals(rng: np.random.Generator, world: _World, number: np.ndarray) -> pa.Array:
    """'emma.jones482', 'emmajones482', 'emma_jones482': a permuted ``number`` spells
    (first name, last name, suffix), so different numbers never give the same address,
    not even after gmail's dot removal (no first+last concatenation is ambiguous)."""
    code = _permute_decimal(number, 8, world.key >> 9)
    n_first, n_last = np.uint64(len(_FIRST_NAMES)), np.uint64(len(_LAST_NAMES))
    first = _pick(code % n_first, _FIRST_NAMES)
    last = _pick(code // n_first % n_last, _LAST_NAMES)
    suffix = pc.cast(pa.array((code // (n_first * n_last)).astype(np.int64)), pa.string())
    forms = [_join(first, ".", last, suffix), _join(first, last, suffix), _join(first, "_", last, suffix)]
    return pc.choose(pa.array(_categorical(rng, (0.55, 0.3, 0.15), len(number)).astype(np.int8)), *forms)


def _person_ids(rng: np.random.Generator, world: _World, p: _Persons, r: _Records,
                quality: _Quality) -> _PersonIds:
    prm, n = world.params, p.n
    phone_num = _permute_decimal(p.gid.astype(np.uint64), 9, world.key >> 7)
    phone = np.concatenate([np.full((n, 1), ord("7"), np.uint8), _digits(phone_num, 9, 10)], axis=1)
    device = _mix(p.gid.astype(np.uint64), 56, world.key >> 3)
    household = np.full(n, -1, dtype=np.int64)
    _share_devices(rng, prm, p, device, household)
    phone_from = np.full(n, -1, dtype=np.int64)
    phone_since = np.zeros(n)
    _recycle_phones(rng, prm, p, r, phone, phone_from, phone_since)
    quality.add("identity_traps", "shared_device_persons", int((household >= 0).sum()))
    quality.add("identity_traps", "shared_device_households", len(np.unique(household[household >= 0])))
    quality.add("identity_traps", "recycled_phone", int((phone_from >= 0).sum()))
    return _PersonIds(
        email_local=_email_locals(rng, world, p.gid.astype(np.uint64)),
        # alternative addresses use numbers 5e7 above the main ones: never equal to anyone's main
        alt_local=_email_locals(rng, world, p.gid.astype(np.uint64) + np.uint64(50_000_000)),
        domain=_categorical(rng, _DOMAIN_SHARE, n), alt_domain=_categorical(rng, _DOMAIN_SHARE, n),
        has_alt=rng.random(n) < prm.alt_email_share,
        phone=phone, device=device, household=household, phone_from=phone_from, phone_since=phone_since,
    )


def _share_devices(rng: np.random.Generator, prm: SynthParams, p: _Persons, device: np.ndarray,
                   household: np.ndarray) -> None:
    """Households of 2-3 persons using one tablet: a true shared identifier between
    different persons (over-merges if a linker trusts it)."""
    online = np.flatnonzero(p.has["app"] | p.has["web"])
    k = min(len(online), int(rng.binomial(p.n, prm.shared_device_share)))
    if k < 2:
        return
    members = rng.permutation(online)[:k]
    group = _lengths_to_index(rng.integers(2, 4, k))[:k]  # ids 0, 0, 1, 1, 1, 2, ...
    # a trailing group of one shares with nobody: fold it into the previous group
    if np.sum(group == group[-1]) == 1:
        group[-1] = group[-2]
    head = members[np.flatnonzero(np.diff(group, prepend=-1))][group]
    device[members] = device[head]
    household[members] = p.gid[head]


def _recycle_phones(rng: np.random.Generator, prm: SynthParams, p: _Persons, r: _Records, phone: np.ndarray,
                    phone_from: np.ndarray, phone_since: np.ndarray) -> None:
    """A number given up by one person and reissued to another: it shows on the new
    owner's records only after the last of the old owner's records that carry phones."""
    everyone = np.arange(p.n)
    created = np.stack([r.created_of(s, everyone) for s in ("crm1", "crm2", "app")])
    has_phone_record = np.isfinite(created).any(axis=0)
    last = np.max(np.where(np.isfinite(created), created, 0.0), axis=0)
    can_give = np.flatnonzero(has_phone_record & (last + 90 < p.days - 1))
    k = min(int(rng.binomial(p.n, prm.recycled_phone_rate)), len(can_give), int(has_phone_record.sum()) // 2)
    if k == 0:
        return
    donor = rng.permutation(can_give)[:k]
    taker = rng.permutation(np.setdiff1d(np.flatnonzero(has_phone_record), donor))[:k]
    phone[taker] = phone[donor]
    phone_from[taker] = p.gid[donor]
    phone_since[taker] = last[donor] + rng.uniform(90, 180, k)


@dataclass
class _IdRows:
    record: list[np.ndarray] = field(default_factory=list)
    id_type: list[np.ndarray] = field(default_factory=list)
    value: list[pa.Array] = field(default_factory=list)
    seen: list[np.ndarray] = field(default_factory=list)

    def add(self, record: np.ndarray, id_type: int, value: pa.Array, seen: np.ndarray) -> None:
        self.record.append(record)
        self.id_type.append(np.full(len(record), id_type, dtype=np.int8))
        self.value.append(value)
        self.seen.append(seen)


def _identity_rows(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, ids: _PersonIds,
                   quality: _Quality) -> tuple[pa.Table, np.ndarray]:
    """Identifier rows of every record, written messily; returns the rows and which
    records carry an email (contacts by email need one)."""
    rows = _IdRows()
    end = float(world.window.days)
    pos, web, app, crm = (np.flatnonzero(r.system == s) for s in (POS, WEB, APP, CRM))
    junk_email, junk_phone = _junk(rng, world, r, crm, rows, quality)
    rows.add(pos, CARD, _cards(rng, world, r.number[pos]), r.created[pos])
    # a junk placeholder stands where the real value would be
    email_rec = np.concatenate([np.setdiff1d(crm[rng.random(len(crm)) < 0.95], junk_email), web,
                                app[rng.random(len(app)) < 0.8]])
    rows.add(email_rec, EMAIL, _emails(rng, world, r, ids, email_rec, quality), r.created[email_rec])
    phone_rec = np.concatenate([np.setdiff1d(crm[rng.random(len(crm)) < 0.85], junk_phone),
                                app[rng.random(len(app)) < 0.55]])
    seen = np.maximum(r.created[phone_rec], ids.phone_since[r.person[phone_rec]])
    rows.add(phone_rec, PHONE, _phones(rng, ids.phone[r.person[phone_rec]]), np.minimum(seen, end - MINUTE))
    _crm_cards(rng, world, r, crm, rows)
    rows.add(crm, CRM_ID, _ids("", _permute_decimal(r.number[crm], 10, world.key >> 11), 10, 10),
             r.created[crm])
    _cookies(rng, world, p, r, web, rows)
    device_rec = np.concatenate([app, web[rng.random(len(web)) < 0.5]])
    rows.add(device_rec, DEVICE, _ids("dev-", ids.device[r.person[device_rec]], 14), r.created[device_rec])
    table = _identity_table(world, r, rows)
    has_email = np.zeros(len(r.person), dtype=bool)
    has_email[email_rec] = True
    has_email[junk_email] = True
    return _duplicate_rows(rng, table, world.params.duplicate_identity_rate, quality, "identities"), has_email


def _cookies(rng: np.random.Generator, world: _World, p: _Persons, r: _Records, web: np.ndarray,
             rows: _IdRows) -> None:
    """1-3 browser cookies per web account, first seen while the person is active."""
    n_cookies = 1 + rng.binomial(2, 0.6, len(web))
    rec = np.repeat(web, n_cookies)
    k = np.arange(len(rec)) - np.repeat(np.cumsum(n_cookies) - n_cookies, n_cookies)
    token = _mix(r.number[rec] * np.uint64(4) + k.astype(np.uint64), 56, world.key >> 5)
    active = np.maximum(p.alive_until[r.person[rec]] - r.created[rec], 0)
    rows.add(rec, COOKIE, _ids("ck-", token, 14), r.created[rec] + rng.random(len(rec)) * active)


def _emails(rng: np.random.Generator, world: _World, r: _Records, ids: _PersonIds, rec: np.ndarray,
            quality: _Quality) -> pa.Array:
    """One person's address written many ways: gmail dot / plus / googlemail variants,
    random case, stray spaces (all undone by normalisation); web accounts sometimes use
    the person's other address; a few typos (not undone: they break the link)."""
    n = len(rec)
    person = r.person[rec]
    alt = (r.system[rec] == WEB) & ids.has_alt[person]
    local = pc.if_else(pa.array(alt), pc.take(ids.alt_local, pa.array(person)),
                       pc.take(ids.email_local, pa.array(person)))
    domain = np.where(alt, ids.alt_domain[person], ids.domain[person])
    gmail = domain == 0
    u = rng.random(n)
    no_dots = gmail & (u < 0.25)
    local = pc.if_else(pa.array(no_dots), pc.replace_substring(local, ".", ""), local)
    extra_dot = gmail & (u >= 0.25) & (u < 0.35)
    local = pc.if_else(pa.array(extra_dot), _join(pc.utf8_slice_codeunits(local, 0, 2), ".",
                                                  pc.utf8_slice_codeunits(local, 2)), local)
    plus = gmail & (rng.random(n) < 0.15)
    tag = _pick(rng.integers(0, len(_PLUS_TAGS), n), _PLUS_TAGS)
    local = pc.if_else(pa.array(plus), _join(local, "+", tag), local)
    googlemail = gmail & (rng.random(n) < 0.12)
    typo = rng.random(n) < world.params.typo_email_rate
    typo_domain = typo & (rng.random(n) < 0.5)
    letter = _pick(rng.integers(0, 26, n), tuple("abcdefghijklmnopqrstuvwxyz"))
    local = pc.if_else(pa.array(typo & ~typo_domain), _join(pc.utf8_slice_codeunits(local, 0, 1), letter,
                                                            pc.utf8_slice_codeunits(local, 1)), local)
    domain_s = pc.if_else(pa.array(typo_domain), _pick(domain, _DOMAIN_TYPOS), _pick(domain, _DOMAINS))
    domain_s = pc.if_else(pa.array(googlemail & ~typo_domain), pa.scalar("googlemail.com"), domain_s)
    email = _join(local, "@", domain_s)
    case = _categorical(rng, (0.75, 0.12, 0.08, 0.05), n)
    email = pc.choose(pa.array(case.astype(np.int8)), email, pc.utf8_capitalize(email), pc.utf8_upper(email),
                      pc.utf8_title(email))
    space = _categorical(rng, (0.92, 0.03, 0.03, 0.02), n)
    email = pc.choose(pa.array(space.astype(np.int8)), email, _join(" ", email), _join(email, " "),
                      _join("  ", email, " "))
    quality.add("identity_traps", "typo_email", int(typo.sum()))
    quality.add("identity_noise", "gmail_without_dots", int(no_dots.sum()))
    quality.add("identity_noise", "gmail_extra_dot", int(extra_dot.sum()))
    quality.add("identity_noise", "gmail_plus_tag", int(plus.sum()))
    quality.add("identity_noise", "googlemail_domain", int((googlemail & ~typo_domain).sum()))
    quality.add("identity_noise", "email_not_lowercase", int((case > 0).sum()))
    quality.add("identity_noise", "email_whitespace", int((space > 0).sum()))
    return email


def _phones(rng: np.random.Generator, digits: np.ndarray) -> pa.Array:
    fmt = _categorical(rng, _PHONE_TEMPLATE_SHARE, len(digits))
    forms = [_template(t, digits) for t in _PHONE_TEMPLATES]
    return pc.choose(pa.array(fmt.astype(np.int8)), *forms)


def _card_digits(world: _World, number: np.ndarray) -> np.ndarray:
    return _digits(np.uint64(_CARD_PREFIX) + _permute_decimal(number, 12, world.key >> 13), 16, 10)


def _cards(rng: np.random.Generator, world: _World, number: np.ndarray) -> pa.Array:
    digits = _card_digits(world, number)
    fmt = _categorical(rng, _CARD_TEMPLATE_SHARE, len(number))
    return pc.choose(pa.array(fmt.astype(np.int8)), *[_template(t, digits) for t in _CARD_TEMPLATES])


def _crm_cards(rng: np.random.Generator, world: _World, r: _Records, crm: np.ndarray, rows: _IdRows) -> None:
    """CRM records list the loyalty cards registered to the person (a second card only sometimes)."""
    for slot, share in (("pos1", 0.9), ("pos2", 0.6)):
        card = r.of[slot][r.person[crm]]
        on = (card >= 0) & (rng.random(len(crm)) < share)
        rec, card = crm[on], card[on]
        seen = np.maximum(r.created[rec], r.created[card])
        rows.add(rec, CARD, _cards(rng, world, r.number[card]), seen)


def _junk(rng: np.random.Generator, world: _World, r: _Records, crm: np.ndarray, rows: _IdRows,
          quality: _Quality) -> tuple[np.ndarray, np.ndarray]:
    """Placeholder identifiers typed by staff when the customer gave none: shared by many
    unrelated records; a linker must not merge on them."""
    junk = crm[rng.random(len(crm)) < world.params.junk_identifier_rate]
    has_junk_email = rng.random(len(junk)) < 0.7
    email = junk[has_junk_email]
    # every junk record has a junk email, a junk phone, or both
    phone = junk[~has_junk_email | (rng.random(len(junk)) < 0.4)]
    email_v = _pick(_categorical(rng, (0.85, 0.15), len(email)), JUNK_EMAILS)
    email_v = pc.if_else(pa.array(rng.random(len(email)) < 0.3), pc.utf8_upper(email_v), email_v)
    rows.add(email, EMAIL, email_v, r.created[email])
    rows.add(phone, PHONE, _pick(_categorical(rng, (0.8, 0.2), len(phone)), JUNK_PHONES), r.created[phone])
    quality.add("identity_traps", "junk_email", len(email))
    quality.add("identity_traps", "junk_phone", len(phone))
    return email, phone


def _identity_table(world: _World, r: _Records, rows: _IdRows) -> pa.Table:
    record = np.concatenate(rows.record)
    seen = np.concatenate(rows.seen)
    order = np.lexsort((np.concatenate(rows.id_type), record))
    return pa.table({
        "source_system": _pick(r.system[record[order]], SYSTEMS),
        "source_id": r.id_column(record[order]),
        "id_type": _pick(np.concatenate(rows.id_type)[order], ID_TYPES),
        "value": pc.take(pa.concat_arrays([v.cast(pa.string()) for v in rows.value]), pa.array(order)),
        "seen_at": world.window.timestamps(seen[order]),
    })


def _duplicate_rows(rng: np.random.Generator, table: pa.Table, rate: float, quality: _Quality,
                    name: str) -> pa.Table:
    """Write some rows twice, right after themselves (an export retried, a double scan)."""
    k = int(rng.binomial(table.num_rows, rate)) if table.num_rows else 0
    dup = rng.choice(table.num_rows, k, replace=False) if k else np.zeros(0, dtype=np.int64)
    quality.add("bad_rows", f"{name}.duplicate_row", k)
    if not k:
        return table
    return table.take(pa.array(np.sort(np.concatenate([np.arange(table.num_rows), dup]))))


# ------------------------------------------------------------------ quality
class _Quality:
    """Counts of injected problems by section and kind; written to truth/quality.json."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, section: str, kind: str, n: int) -> None:
        bucket = self.counts.setdefault(section, {})
        bucket[kind] = bucket.get(kind, 0) + int(n)

    def as_dict(self) -> dict:
        out: dict[str, dict] = {}
        for section, kinds in sorted(self.counts.items()):
            if section == "bad_rows":  # "table.kind" -> {table: {kind: n}}
                nested: dict[str, dict[str, int]] = {}
                for key, n in sorted(kinds.items()):
                    table, kind = key.split(".", 1)
                    nested.setdefault(table, {})[kind] = n
                out[section] = nested
            else:
                out[section] = dict(sorted(kinds.items()))
        return out


def _bad_lines(rng: np.random.Generator, n: int, prm: SynthParams,
               quality: _Quality) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of ``n`` lines get a null customer id, a NaN amount, or are written twice
    (disjoint, counted). Returns the row index to write (duplicates right after their
    original) and the null / NaN masks over it."""
    ks = [int(rng.binomial(n, rate)) for rate in (prm.null_customer_id_rate, prm.nan_amount_rate,
                                                  prm.duplicate_line_rate)]
    ks = [k if sum(ks) <= n else 0 for k in ks]
    chosen = rng.choice(n, sum(ks), replace=False) if sum(ks) else np.zeros(0, dtype=np.int64)
    rows = np.sort(np.concatenate([np.arange(n), chosen[ks[0] + ks[1]:]]))
    null_id, nan_amount = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    null_id[chosen[: ks[0]]] = True
    nan_amount[chosen[ks[0]: ks[0] + ks[1]]] = True
    quality.add("bad_rows", "transactions.null_customer_id", ks[0])
    quality.add("bad_rows", "transactions.nan_amount", ks[1])
    quality.add("bad_rows", "transactions.duplicate_row", ks[2])
    return rows, null_id[rows], nan_amount[rows]


def _text_problems(rng: np.random.Generator, table: pa.Table, prm: SynthParams,
                   quality: _Quality) -> pa.Table:
    """CSV only: timestamps no parser accepts and amounts in a European shop format, on
    rows free of other problems (so each bad row has exactly one reason)."""
    text = pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})
    clean = np.flatnonzero(pc.is_valid(table["customer_id"]).to_numpy(zero_copy_only=False)
                           & ~np.isnan(table["amount"].to_numpy()))
    # rows written twice must stay identical: never touch a duplicated line
    keys = pc.binary_join_element_wise(text["order_id"], text["product_id"], text["amount"], "|")
    unique = pc.value_counts(keys)
    dup_keys = unique.field("values").filter(pc.greater(unique.field("counts"), 1))
    clean = clean[~pc.is_in(keys, value_set=dup_keys).to_numpy(zero_copy_only=False)[clean]]
    ks = [int(rng.binomial(len(clean), rate)) for rate in (prm.bad_timestamp_rate, prm.bad_amount_rate)]
    chosen = rng.choice(clean, min(sum(ks), len(clean)), replace=False) if sum(ks) else np.zeros(0, np.int64)
    bad_ts, bad_amount = np.sort(chosen[: ks[0]]), np.sort(chosen[ks[0]:])
    ts_mask = np.zeros(table.num_rows, dtype=bool)
    ts_mask[bad_ts] = True
    amount_mask = np.zeros(table.num_rows, dtype=bool)
    amount_mask[bad_amount] = True
    junk_ts = _pick(rng.integers(0, 3, len(bad_ts)), ("2024-13-45", "31/02/2025 25:61", "yesterday"))
    amount = text["amount"].combine_chunks()
    euro = _join(pc.replace_substring(pc.take(amount, pa.array(bad_amount)), ".", ","), "€")
    text = text.set_column(text.schema.get_field_index("timestamp"), "timestamp",
                           pc.replace_with_mask(text["timestamp"].combine_chunks(), pa.array(ts_mask),
                                                junk_ts))
    text = text.set_column(text.schema.get_field_index("amount"), "amount",
                           pc.replace_with_mask(amount, pa.array(amount_mask), euro))
    quality.add("bad_rows", "transactions.unparseable_timestamp", len(bad_ts))
    quality.add("bad_rows", "transactions.non_numeric_amount", len(bad_amount))
    return text


# -------------------------------------------------------------------- chunk
def _chunk(world: _World, seed: int, chunk: int, first: int, n: int, fmt: str,
           quality: _Quality) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """All tables of persons [first, first + n): their rows depend on (seed, chunk) only."""
    p = _persons(_rng(seed, chunk, 1), world, first, n)
    r = _records(_rng(seed, chunk, 2), world, p, chunk)
    pids = _person_ids(_rng(seed, chunk, 3), world, p, r, quality)
    identities, has_email = _identity_rows(_rng(seed, chunk, 4), world, p, r, pids, quality)
    contacts = _contacts(_rng(seed, chunk, 5), world, p, r, has_email)
    resp_contact, resp_t, resp_orders = _responses(_rng(seed, chunk, 6), world, p, r, contacts)
    orders = _concat_orders([_regular_orders(_rng(seed, chunk, 7), world, p, r), _first_orders(world, p, r),
                             resp_orders])
    lines = _lines(_rng(seed, chunk, 8), world, p, orders)
    ret_orders, ret_lines = _returns(_rng(seed, chunk, 9), world, orders, lines)
    events = _events(_rng(seed, chunk, 10), world, p, r, orders, contacts)
    tables = {
        "transactions": _transactions(_rng(seed, chunk, 11), world, r, chunk, orders, lines, ret_orders,
                                      ret_lines, quality),
        "events": _events_table(world, r, *events),
        "contacts": _contacts_table(world, r, contacts),
        "responses": _responses_table(world, r, contacts, resp_contact, resp_t),
        "identities": identities,
        "customers": _customer_rows(_rng(seed, chunk, 12), world, p, r),
    }
    if fmt == "csv":
        tables["transactions"] = _text_problems(_rng(seed, chunk, 13), tables["transactions"], world.params,
                                                quality)
    truth = {"persons": _truth_persons(world, p, pids), "records": _truth_records(world, r, p)}
    return tables, truth


def _transactions(rng: np.random.Generator, world: _World, r: _Records, chunk: int, o: _Orders,
                  lines: _Lines, ro: _Orders, rl: _Lines, quality: _Quality) -> pa.Table:
    """Order lines and returns in time order, with the counted bad rows injected."""
    orders = _concat_orders_unsorted(o, ro)
    order = np.concatenate([lines.order, rl.order])
    # lines are in time order but for the returns appended last: a stable sort merges them
    # and keeps each order's lines together
    sort = np.argsort(orders.t[order], kind="stable")
    rows, null_id, nan_amount = _bad_lines(rng, len(sort), world.params, quality)
    sort = sort[rows]
    order = order[sort]
    cat = world.catalog
    product = np.concatenate([lines.product, rl.product])[sort]
    number = (np.uint64(chunk) << np.uint64(32)) | order.astype(np.uint64)
    record = orders.record[order]
    store = orders.store[order]
    col = lambda a, b: np.concatenate([a, b])[sort]  # noqa: E731
    return pa.table({
        "customer_id": r.id_column(record, ~null_id),
        "source_system": _pick(r.system[record], SYSTEMS),
        "order_id": _ids("ord-", _mix(number, 52, world.key >> 1), 13),
        "timestamp": world.window.timestamps(orders.t[order]),
        "amount": pa.array(np.where(nan_amount, np.nan, col(lines.amount, rl.amount)), pa.float64()),
        "product_id": pc.take(cat.product_id, pa.array(product)),
        "category": _pick(cat.category[product], CATEGORIES),
        "quantity": pa.array(col(lines.quantity, rl.quantity), pa.float64()),
        "discount": pa.array(col(lines.discount, rl.discount), pa.float64()),
        "coupon_discount": pa.array(col(lines.coupon, rl.coupon), pa.float64()),
        "channel": _pick(orders.channel[order], CHANNELS),
        "store_id": pc.take(world.stores.ids, pa.array(np.maximum(store, 0), mask=store < 0)),
    })


def _events_table(world: _World, r: _Records, record: np.ndarray, t: np.ndarray,
                  kind: np.ndarray) -> pa.Table:
    order = np.argsort(t, kind="stable")
    record, t, kind = record[order], t[order], kind[order]
    return pa.table({
        "customer_id": r.id_column(record),
        "source_system": _pick(r.system[record], SYSTEMS),
        "timestamp": world.window.timestamps(t),
        "event_type": _pick(kind, EVENT_TYPES),
    })


def _contacts_table(world: _World, r: _Records, c: _Contacts) -> pa.Table:
    order = np.argsort(c.t, kind="stable")
    return pa.table({
        "customer_id": r.id_column(c.record[order]),
        "source_system": _pick(r.system[c.record[order]], SYSTEMS),
        "campaign_id": pc.take(world.campaigns.ids, pa.array(c.campaign[order])),
        "timestamp": world.window.timestamps(c.t[order]),
        "channel": _pick(c.channel[order], CONTACT_CHANNELS),
    })


def _responses_table(world: _World, r: _Records, c: _Contacts, contact: np.ndarray,
                     t: np.ndarray) -> pa.Table:
    order = np.argsort(t, kind="stable")
    contact, t = contact[order], t[order]
    return pa.table({
        "customer_id": r.id_column(c.record[contact]),
        "source_system": _pick(r.system[c.record[contact]], SYSTEMS),
        "campaign_id": pc.take(world.campaigns.ids, pa.array(c.campaign[contact])),
        "timestamp": world.window.timestamps(t),
    })


def _truth_persons(world: _World, p: _Persons, ids: _PersonIds) -> pa.Table:
    win = world.window
    gmail = ids.domain == 0
    local = pc.utf8_lower(ids.email_local)
    local = pc.if_else(pa.array(gmail), pc.replace_substring(local, ".", ""), local)
    email = _join(local, "@", _pick(ids.domain, _DOMAINS))
    alt_local = pc.utf8_lower(ids.alt_local)
    alt_local = pc.if_else(pa.array(ids.alt_domain == 0), pc.replace_substring(alt_local, ".", ""), alt_local)
    alt = _join(alt_local, "@", _pick(ids.alt_domain, _DOMAINS))
    return pa.table({
        "person_id": pa.array(p.gid, pa.int64()),
        "segment": _pick(p.segment, tuple(SEGMENTS)),
        "existing_base": pa.array(p.base),
        "acquired_at": win.timestamps(p.acq),
        "dropout_at": pa.array(win.us(np.where(np.isfinite(p.dropout), p.dropout, 0)), pa.timestamp("us"),
                               mask=~np.isfinite(p.dropout)),
        "purchase_rate": pa.array(p.rate, pa.float64()),
        "dropout_rate": pa.array(p.dropout_rate, pa.float64()),
        "basket_size_factor": pa.array(p.basket, pa.float64()),
        "store_weight": pa.array(p.chan_w[:, STORE]),
        "web_weight": pa.array(p.chan_w[:, ONLINE_WEB]),
        "app_weight": pa.array(p.chan_w[:, ONLINE_APP]),
        "response_propensity": pa.array(p.response_p),
        "email_open_rate": pa.array(p.open_p),
        **{f"pref_{c}": pa.array(p.pref[:, i].astype(np.float64)) for i, c in enumerate(CATEGORIES)},
        "region": _pick(p.region, REGIONS),
        "home_store": pc.take(world.stores.ids, pa.array(p.home_store)),
        "birth_year": pa.array(p.birth_year, pa.int64()),
        "gender": _pick(p.gender, GENDERS),
        "email": email,
        "alt_email": pc.if_else(pa.array(ids.has_alt), alt, pa.scalar(None, pa.string())),
        "phone": _strings(np.concatenate([np.full((p.n, 2), ord("4"), np.uint8), ids.phone], axis=1)),
        "household_id": pa.array(ids.household, pa.int64(), mask=ids.household < 0),
        "phone_previous_owner": pa.array(ids.phone_from, pa.int64(), mask=ids.phone_from < 0),
    })


def _truth_records(world: _World, r: _Records, p: _Persons) -> pa.Table:
    return pa.table({
        "source_system": _pick(r.system, SYSTEMS),
        "source_id": r.ids,
        "person_id": pa.array(p.gid[r.person], pa.int64()),
        "created_at": world.window.timestamps(r.created),
    })


# ------------------------------------------------------------------ writing
class _Writer:
    """Writes one part per table per chunk, the catalog once, and the truth as single files."""

    def __init__(self, root: Path, fmt: str) -> None:
        self.root, self.fmt = root, fmt
        (root / "truth").mkdir()
        self.truth: dict[str, pq.ParquetWriter] = {}

    def write_products(self, catalog: _Catalog) -> dict[str, int]:
        table = pa.table({
            "product_id": catalog.product_id,
            "category": _pick(catalog.category, CATEGORIES),
            "subcategory": catalog.subcategory,
            "list_price": pa.array(catalog.price, pa.float64()),
        })
        if self.fmt == "csv":
            pacsv.write_csv(_as_text(table), self.root / "products.csv")
        else:
            pq.write_table(table, self.root / "products.parquet", compression="zstd")
        return {"products": table.num_rows}

    def write_part(self, name: str, chunk: int, table: pa.Table) -> int:
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        if self.fmt == "csv":
            pacsv.write_csv(_as_text(table), folder / f"part-{chunk:05d}.csv")
        else:
            pq.write_table(table, folder / f"part-{chunk:05d}.parquet", compression="zstd")
        return table.num_rows

    def write_truth(self, truth: dict[str, pa.Table]) -> None:
        for name, table in truth.items():
            if name not in self.truth:
                self.truth[name] = pq.ParquetWriter(self.root / "truth" / f"{name}.parquet", table.schema,
                                                    compression="zstd")
            self.truth[name].write_table(table)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.truth.values():
            w.close()


def _as_text(table: pa.Table) -> pa.Table:
    return pa.table({c: pc.cast(table[c], pa.string()) for c in table.column_names})


def _write_metadata(root: Path, name: str, summary: SynthSummary, start: date, end: date, chunk_size: int,
                    params: SynthParams) -> None:
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "name": name,
        "category_column": "category",
        "description": f"synthetic, {summary.persons} persons, seed {summary.seed}",
    }, sort_keys=False))
    (root / "truth" / "quality.json").write_text(json.dumps(summary.quality, indent=2, sort_keys=True) + "\n")
    (root / MARKER).write_text(json.dumps({
        "generator_version": GENERATOR_VERSION, "persons": summary.persons, "seed": summary.seed,
        "fmt": summary.fmt, "chunk_size": chunk_size, "start": start.isoformat(), "end": end.isoformat(),
        "params": asdict(params), "rows": summary.rows, "records": summary.records,
    }, indent=2, sort_keys=True) + "\n")
