"""Source records and what they carry: the records each person holds and their ids, each
person's true identifiers and the identity rows written from them (emails, phones, cards,
cookies, devices, written messily, with traps), and the customers table's attribute rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sources.synth.arrays import (
    _categorical,
    _digits,
    _ids,
    _join,
    _lengths_to_index,
    _mix,
    _permute_decimal,
    _pick,
    _template,
)
from sources.synth.defects import _duplicate_rows, _Quality
from sources.synth.entities import _Persons, _Records
from sources.synth.params import (
    _CARD_PREFIX,
    _CARD_TEMPLATE_SHARE,
    _CARD_TEMPLATES,
    _DOMAIN_SHARE,
    _DOMAIN_TYPOS,
    _DOMAINS,
    _FIRST_NAMES,
    _LAST_NAMES,
    _PHONE_TEMPLATE_SHARE,
    _PHONE_TEMPLATES,
    _PLUS_TAGS,
    _SLOT_SYSTEM,
    _TIER_RATE,
    APP,
    CARD,
    COOKIE,
    CRM,
    CRM_ID,
    DEVICE,
    EMAIL,
    GENDERS,
    ID_TYPES,
    JUNK_EMAILS,
    JUNK_PHONES,
    MINUTE,
    ONLINE_APP,
    ONLINE_WEB,
    PHONE,
    POS,
    REGIONS,
    SLOTS,
    STORE,
    SYSTEMS,
    TIERS,
    WEB,
    SynthParams,
)
from sources.synth.world import _World


# --------------------------------------------------------------------- records
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
