"""The embedded store's sign bits in memory (memory/longterm/sign_bits.py), checked
against a plain count of differing bits, and against sqlite-vec's own quantiser."""

from __future__ import annotations

import numpy as np
import pytest
import sqlean
import sqlite_vec

from memory.longterm.sign_bits import SignBits, sign_bits


def distance(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def expected(
    held: dict[int, bytes], query: bytes, k: int, among: list[int] | None = None
) -> list[int]:
    """The distances of the k nearest, nearest first (ties may fall either way, so it is
    the distances that are compared)."""
    pool = [r for r in held if among is None or r in among]
    return sorted(distance(held[r], query) for r in pool)[:k]


@pytest.mark.parametrize("dims", [8, 40, 64, 384])
def test_nearest_agrees_with_a_plain_count_through_changes(dims: int) -> None:
    rng = np.random.default_rng(dims)
    vectors = {rowid: rng.standard_normal(dims) for rowid in range(1, 3_001)}
    held = {rowid: sign_bits(v.tolist()) for rowid, v in vectors.items()}
    signs = SignBits.load(dims, held.items())
    # Changes as a store makes them: new vectors, replaced ones, removed ones, a rowid
    # below the last (SQLite gives the largest one again once it is deleted).
    changes: dict[int, bytes | None] = {r: None for r in range(1, 3_001, 3)}
    changes |= {r: sign_bits(rng.standard_normal(dims).tolist()) for r in range(2, 3_001, 7)}
    changes |= {r: sign_bits(rng.standard_normal(dims).tolist()) for r in range(3_001, 3_101)}
    for rowid, bits in changes.items():
        if bits is None:
            held.pop(rowid, None)
        else:
            held[rowid] = bits
    signs.apply(changes)
    signs.apply({1: sign_bits(rng.standard_normal(dims).tolist())})  # removed, then back
    held[1] = signs_bits = sign_bits(rng.standard_normal(dims).tolist())
    signs.apply({1: signs_bits})
    assert len(signs) == len(held)
    for _ in range(5):
        query = sign_bits(rng.standard_normal(dims).tolist())
        for k in (1, 10, 90):
            found = signs.nearest(query, k)
            assert len(found) == k and set(found) <= held.keys()
            assert len(set(found)) == len(found)
            # nearest first, and as near as the nearest are
            assert [distance(held[r], query) for r in found] == expected(held, query, k)
        among = [*range(1, 400), 99_999]  # one rowid that holds no vector
        found = signs.nearest(query, 20, among)
        assert set(found) <= set(among) & held.keys()
        assert [distance(held[r], query) for r in found] == expected(held, query, 20, among)
    assert set(signs.nearest(query, 10_000)) == held.keys()  # asking for more gives all


def test_removing_most_compacts_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(1)
    held = {r: sign_bits(rng.standard_normal(64).tolist()) for r in range(1, 5_001)}
    signs = SignBits.load(64, held.items())
    signs.apply({r: None for r in range(1, 4_001)})
    query = held[4_500]
    assert len(signs) == 1_000
    assert signs.nearest(query, 1) == [4_500]
    assert set(signs.nearest(query, 5_000)) == set(range(4_001, 5_001))


def test_an_empty_index_finds_nothing() -> None:
    signs = SignBits.load(384, [])
    assert signs.nearest(sign_bits([1.0] * 384), 10) == []
    assert signs.nearest(sign_bits([1.0] * 384), 10, among=[1, 2]) == []


def test_the_bits_are_those_sqlite_vec_quantises() -> None:
    conn = sqlean.connect(":memory:")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    rng = np.random.default_rng(7)
    for dims in (8, 384, 1536):
        vector = rng.standard_normal(dims).astype(np.float32)
        vector[0] = 0.0  # zero is not above zero
        ours = sign_bits(vector.tolist())
        (theirs,) = conn.execute(
            "SELECT vec_quantize_binary(vec_f32(?))", (vector.tobytes(),)
        ).fetchone()
        assert ours == theirs
