"""Vectorised building blocks of every stage: one random stream per (chunk, component),
keyed bijections turning counters into ids, and Arrow string columns built from ASCII
byte matrices without Python objects."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
