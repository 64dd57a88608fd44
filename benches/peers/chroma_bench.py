"""Chroma (in-process) on the same vectors as crates/llmem-tiers/benches/report.rs.

Usage: python benches/peers/chroma_bench.py OUTDIR   (needs `chromadb` installed; installs nothing)

Reads N x DIM little-endian f32 vectors from $VECTORS and the query vectors from $QUERIES_FILE
(both written by the Rust report, so both sides search the very same data); without them it
draws seeded random unit vectors. Row i has id `r{i}` and metadata {"even": i % 2 == 0}.
HNSW with cosine space and ef_search $CHROMA_EF (default 100, as Chroma's own default).
Writes OUTDIR/chroma.json: insert throughput, top-10 latency (p50/p99) unfiltered and with the
filter {"even": true}, and recall@10 of each against brute force; and the same queries as a
numpy brute-force scan (one BLAS thread, like llmem's one-core scan: `vecs @ q`, the filter as a
mask, `argpartition` for the top 10), timed before Chroma is loaded.
"""

import json
import os
import sys
import tempfile
import time

# One BLAS thread: the scan llmem is compared with runs on one core.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np


def load(path, dim):
    v = np.fromfile(path, dtype="<f4")
    return v.reshape(-1, dim)


def run_queries(col, vecs, queries, where):
    lat = []
    hits = 0
    for q in queries:
        kw = {"where": where} if where else {}
        t = time.perf_counter()
        res = col.query(query_embeddings=[q.tolist()], n_results=10, **kw)
        lat.append(time.perf_counter() - t)
        scores = vecs @ q
        if where:
            scores[1::2] = -np.inf
        truth = {f"r{i}" for i in np.argpartition(-scores, 10)[:10]}
        hits += len(truth & set(res["ids"][0]))
    lat.sort()
    p = lambda x: lat[max(0, int(np.ceil(len(lat) * x)) - 1)] * 1000
    return p(0.5), p(0.99), hits / (10 * len(queries))


def numpy_scan(vecs, queries, filtered):
    """Exact top-10 by numpy: p50 and p99 in ms."""
    lat = []
    for q in queries:
        t = time.perf_counter()
        scores = vecs @ q
        if filtered:
            scores[1::2] = -np.inf
        top = np.argpartition(-scores, 10)[:10]
        top = top[np.argsort(-scores[top])]
        lat.append(time.perf_counter() - t)
    lat.sort()
    p = lambda x: lat[max(0, int(np.ceil(len(lat) * x)) - 1)] * 1000
    return p(0.5), p(0.99)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benches/peers/chroma_bench.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    n = int(os.environ.get("N", "100000"))
    dim = int(os.environ.get("DIM", "384"))
    if os.environ.get("VECTORS"):
        vecs = load(os.environ["VECTORS"], dim)[:n]
        queries = load(os.environ["QUERIES_FILE"], dim)
    else:
        rng = np.random.default_rng(42)
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        queries = rng.standard_normal((100, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    n = len(vecs)
    np_p50, np_p99 = numpy_scan(vecs, queries, False)
    np_fp50, np_fp99 = numpy_scan(vecs, queries, True)
    import chromadb

    client = chromadb.PersistentClient(path=tempfile.mkdtemp(prefix="chroma-bench-"))
    ef = int(os.environ.get("CHROMA_EF", "100"))
    col = client.create_collection(
        "bench", metadata={"hnsw:space": "cosine", "hnsw:search_ef": ef}
    )
    t = time.perf_counter()
    batch = 5000
    for s in range(0, n, batch):
        e = min(s + batch, n)
        col.add(
            ids=[f"r{i}" for i in range(s, e)],
            embeddings=vecs[s:e],
            metadatas=[{"tenant": "u", "even": i % 2 == 0} for i in range(s, e)],
        )
    insert_s = time.perf_counter() - t
    p50, p99, rec = run_queries(col, vecs, queries, None)
    fp50, fp99, frec = run_queries(col, vecs, queries, {"even": True})
    result = {
        "engine": "chromadb " + chromadb.__version__,
        "ef_search": ef,
        "n": n,
        "dim": dim,
        "insert_per_s": n / insert_s,
        "query_top10_p50_ms": p50,
        "query_top10_p99_ms": p99,
        "recall_at_10": rec,
        "query_filtered_top10_p50_ms": fp50,
        "query_filtered_top10_p99_ms": fp99,
        "recall_filtered_at_10": frec,
        "numpy": "numpy " + np.__version__,
        "numpy_top10_p50_ms": np_p50,
        "numpy_top10_p99_ms": np_p99,
        "numpy_filtered_top10_p50_ms": np_fp50,
        "numpy_filtered_top10_p99_ms": np_fp99,
    }
    with open(os.path.join(out, "chroma.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
