"""Python onnxruntime peer of crates/llmem-providers/benches/embed.rs.

Same model (MiniLM-L6-v2 int8 from the llmem cache), same tokenizer (padding to the batch's
longest), same sentences, same pooling (attention-masked mean, L2 norm). Writes
OUTDIR/onnxruntime.json with embeddings per second at batch 1 and 32.

    $LLMEM_PYTHON benches/peers/onnxruntime_bench.py OUTDIR
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ROOT / "crates/llmem-providers/benches/sentences.txt"


def cache_dir() -> Path:
    if os.environ.get("LLMEM_CACHE_DIR"):
        return Path(os.environ["LLMEM_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "llmem"
    return Path.home() / ".cache" / "llmem"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    model_dir = cache_dir() / "models/all-minilm-l6-v2"
    if not (model_dir / "model.onnx").exists():
        sys.exit(f"{model_dir}/model.onnx is missing: run `cargo xtask setup`")
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_padding()  # pad to the batch's longest, not to 128
    opts = ort.SessionOptions()
    threads = int(os.environ.get("LLMEM_ONNX_THREADS", "0"))
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    texts = [l for l in SENTENCES.read_text().splitlines() if l]

    def embed(batch):
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        h = sess.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        v = (h * m).sum(1) / m.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    results = {}
    for batch in (1, 32):
        for i in range(3):
            embed(texts[:batch])
        n, start, i = 0, time.perf_counter(), 0
        while time.perf_counter() - start < 3.0:
            s = (i * batch) % (len(texts) - batch + 1)
            embed(texts[s : s + batch])
            n += batch
            i += 1
        results[f"batch_{batch}"] = {"embeddings_per_second": n / (time.perf_counter() - start)}
    report = {"runtime": f"onnxruntime {ort.__version__} (Python)", "model": "all-minilm-l6-v2 int8", "results": results}
    (out / "onnxruntime.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
