"""Python tiktoken peer of crates/llmem-tokens/benches/tokens.rs.

Counts o200k_base tokens of the same corpus (LoCoMo turns, one large document and every turn
as a small document) and writes OUTDIR/tiktoken.json with MB/s. Offline: the BPE ranks are the
`o200k_base.tiktoken` file that tiktoken-rs ships in its crate (found in the cargo registry, or
given as $LLMEM_O200K), handed to tiktoken instead of a download.

    $LLMEM_PYTHON benches/peers/tiktoken_bench.py OUTDIR
"""
import glob
import json
import os
import sys
import time
from pathlib import Path

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

ROOT = Path(__file__).resolve().parents[2]


def ranks_file() -> Path:
    if os.environ.get("LLMEM_O200K"):
        return Path(os.environ["LLMEM_O200K"])
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(cargo_home / "registry/src/*/tiktoken-rs-0.12*/assets/o200k_base.tiktoken")))
    if not found:
        sys.exit("o200k_base.tiktoken not found: build llmem-tokens once (cargo fetches tiktoken-rs) or set LLMEM_O200K")
    return Path(found[-1])


def corpus() -> list[str]:
    path = Path(os.environ.get("LLMEM_LOCOMO", ROOT.parent / "shared/data/locomo/locomo-dev.json"))
    data = json.loads(path.read_text())
    turns = []
    for sample in data:
        conv = sample["conversation"]
        keys = [k for k in conv if k.startswith("session_") and not k.endswith("date_time")]
        keys.sort(key=lambda k: int(k.removeprefix("session_") or 0))
        for k in keys:
            for t in conv[k] or []:
                if "text" in t:
                    turns.append(f"{t.get('speaker', '?')}: {t['text']}")
    return turns


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    data = ranks_file().read_bytes()
    tiktoken.load.read_file_cached = lambda blobpath, expected_hash=None: data
    enc = tiktoken.Encoding(**openai_public.o200k_base())
    turns = corpus()
    large = "\n".join(turns)
    results = {"turns": len(turns), "large_bytes": len(large.encode())}

    def timed(fn, nbytes, min_s=3.0):
        fn()  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                return nbytes * n / dt / 1e6, dt / n

    mbs, secs = timed(lambda: len(enc.encode_ordinary(large)), len(large.encode()))
    results["large_mb_per_s"], results["large_s"] = mbs, secs
    small_bytes = sum(len(t.encode()) for t in turns)
    mbs, secs = timed(lambda: sum(len(enc.encode_ordinary(t)) for t in turns), small_bytes)
    results["small_mb_per_s"], results["small_s"] = mbs, secs
    results["large_tokens"] = len(enc.encode_ordinary(large))
    (out / "tiktoken.json").write_text(json.dumps(results, indent=2))
    print(f"tiktoken (python) o200k: large {results['large_mb_per_s']:.1f} MB/s, small {results['small_mb_per_s']:.1f} MB/s, {results['large_tokens']} tokens")


if __name__ == "__main__":
    main()
