"""Chroma (in-process) on the same vectors as crates/llmem-tiers/benches/tiers.rs.

Usage: python benches/peers/chroma_bench.py OUTDIR   (needs `chromadb` installed; installs nothing)

Writes OUTDIR/chroma.json with insert throughput and top-10 query latency (with a metadata
filter) on N x DIM deterministic unit vectors (N=100000, DIM=384 by default; env N, DIM).
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
import chromadb


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python benches/peers/chroma_bench.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    n = int(os.environ.get("N", "100000"))
    dim = int(os.environ.get("DIM", "384"))
    rng = np.random.default_rng(42)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    client = chromadb.PersistentClient(path=tempfile.mkdtemp(prefix="chroma-bench-"))
    col = client.create_collection("bench", metadata={"hnsw:space": "cosine"})
    t = time.perf_counter()
    batch = 5000
    for s in range(0, n, batch):
        e = min(s + batch, n)
        col.add(
            ids=[f"r{i}" for i in range(s, e)],
            embeddings=vecs[s:e].tolist(),
            metadatas=[{"tenant": "u", "even": i % 2 == 0} for i in range(s, e)],
        )
    insert_s = time.perf_counter() - t
    queries = rng.standard_normal((100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    lat = []
    recall_hits = 0
    for q in queries:
        t = time.perf_counter()
        res = col.query(query_embeddings=[q.tolist()], n_results=10, where={"even": True})
        lat.append(time.perf_counter() - t)
        scores = vecs @ q
        scores[1::2] = -np.inf
        truth = {f"r{i}" for i in np.argsort(-scores)[:10]}
        recall_hits += len(truth & set(res["ids"][0]))
    lat.sort()
    result = {
        "engine": "chromadb " + chromadb.__version__,
        "n": n,
        "dim": dim,
        "insert_per_s": n / insert_s,
        "query_filtered_top10_p50_ms": lat[len(lat) // 2] * 1000,
        "query_filtered_top10_p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
        "recall_at_10": recall_hits / (10 * len(queries)),
    }
    with open(os.path.join(out, "chroma.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
