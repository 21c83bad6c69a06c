"""Why the embedded store uses sqlite-vec: it against LanceDB at 100,000 vectors of 384
dimensions, the same vectors and queries, in one process.

The vectors are clustered (2,000 centres, members at cosine ~0.7), closer to real
sentence embeddings than uniform noise; each query is a stored vector, slightly moved,
so that its ten true neighbours are known (an exact search with NumPy). LanceDB is not
one of steward's dependencies:

    uv run --with lancedb python -m bench.vector_choice
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import numpy as np
import sqlean
import sqlite_vec

N, D, QUERIES = 100_000, 384, 100


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name: str, build: float, times: list[float], found: list[set[int]], exact: Any) -> None:
    recall = statistics.fmean(len(f & e) / 10 for f, e in zip(found, exact, strict=True))
    print(
        f"  {name:<40} build {build:5.1f} s  p50 {percentile(times, 50):7.2f} ms  "
        f"p95 {percentile(times, 95):7.2f} ms  recall@10 {recall:.3f}",
        flush=True,
    )


def main() -> None:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((2000, D)).astype(np.float32)
    vectors = centres[rng.integers(0, 2000, N)] + 0.6 * rng.standard_normal((N, D)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, N, QUERIES)]
    queries = queries + 0.03 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [set(np.argsort(-(vectors @ q))[:10].tolist()) for q in queries]
    folder = tempfile.mkdtemp(prefix="steward-vector-choice-")
    print(f"{N:,} vectors of {D} dimensions, {QUERIES} queries, top 10 against an exact search")

    conn = sqlean.connect(f"{folder}/vectors.db")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    began = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE bits USING vec0 (embedding bit[{D}])")
    conn.execute("CREATE TABLE floats (rowid INTEGER PRIMARY KEY, vector BLOB)")
    conn.execute("BEGIN")
    for n in range(N):
        blob = vectors[n].tobytes()
        conn.execute("INSERT INTO floats VALUES (?, ?)", (n, blob))
        conn.execute(
            "INSERT INTO bits (rowid, embedding) VALUES (?, vec_quantize_binary(vec_f32(?)))",
            (n, blob),
        )
    conn.execute("COMMIT")
    build = time.perf_counter() - began
    contenders = {
        "sqlite-vec, floats, brute force": (
            "SELECT rowid, vec_distance_cosine(vector, ?) AS d FROM floats ORDER BY d LIMIT 10",
            1,
        ),
        "sqlite-vec, bits k=90 + floats (steward)": (
            "WITH near AS (SELECT rowid FROM bits "
            "WHERE embedding MATCH vec_quantize_binary(vec_f32(?)) AND k = 90) "
            "SELECT f.rowid, vec_distance_cosine(f.vector, ?) AS d FROM near "
            "JOIN floats f ON f.rowid = near.rowid ORDER BY d LIMIT 10",
            2,
        ),
    }
    for name, (sql, params) in contenders.items():
        times, found = [], []
        for query in queries:
            blob = query.tobytes()
            began = time.perf_counter()
            rows = conn.execute(sql, (blob,) * params).fetchall()
            times.append((time.perf_counter() - began) * 1000)
            found.append({row[0] for row in rows})
        report(name, build, times, found, exact)

    try:
        import lancedb  # type: ignore[import-not-found]
    except ImportError:
        print("  LanceDB: not installed (uv run --with lancedb python -m bench.vector_choice)")
        return
    db = lancedb.connect(f"{folder}/lance")
    began = time.perf_counter()
    table = db.create_table("v", data=[{"id": n, "vector": vectors[n]} for n in range(N)])
    build = time.perf_counter() - began

    def lance(name: str, build: float, **options: Any) -> None:
        times, found = [], []
        for query in queries:
            began = time.perf_counter()
            search = table.search(query).metric("cosine").limit(10)
            for option, value in options.items():
                search = getattr(search, option)(value)
            rows = search.to_list()
            times.append((time.perf_counter() - began) * 1000)
            found.append({row["id"] for row in rows})
        report(name, build, times, found, exact)

    lance("LanceDB, flat", build)
    began = time.perf_counter()
    from lancedb.index import IvfPq  # type: ignore[import-not-found]

    index = IvfPq(distance_type="cosine", num_partitions=256, num_sub_vectors=48)
    table.create_index("vector", config=index)
    indexed = time.perf_counter() - began
    lance("LanceDB, IVF_PQ, nprobes 20", indexed, nprobes=20)
    lance("LanceDB, IVF_PQ, nprobes 20, refine 10", indexed, nprobes=20, refine_factor=10)


if __name__ == "__main__":
    main()
