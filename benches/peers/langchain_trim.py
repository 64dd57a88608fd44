"""LangChain peer of crates/llmem-window/benches/turn.rs.

Per-turn cost of LangChain's `trim_messages` (langchain-core) keeping the last messages of a
conversation under 3584 tokens (a 4096-token budget less a 512-token answer reserve), system
message included, counted exactly with tiktoken o200k_base and OpenAI's chat framing (3 tokens
per message, 3 per request: what llmem's gpt-4o counter counts). One turn = append one message to
the history, then trim. The conversation cycles the LoCoMo turns (speaker A is the user), at
100, 1k, 10k and 100k messages of history (env SIZES to change).

Two counters: `exact` (a `list[BaseMessage] -> int` function encoding every message, as the
LangChain docs show) and `exact_memo` (the same, memoising each message's count by identity).

Offline: the BPE ranks are the `o200k_base.tiktoken` file that tiktoken-rs ships in its crate
(found in the cargo registry, or given as $LLMEM_O200K), handed to tiktoken instead of a download.

    $LLMEM_PYTHON benches/peers/langchain_trim.py OUTDIR     # writes OUTDIR/langchain_trim.json
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
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages

ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 4096 - 512


def ranks_file() -> Path:
    if os.environ.get("LLMEM_O200K"):
        return Path(os.environ["LLMEM_O200K"])
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    found = sorted(glob.glob(str(cargo_home / "registry/src/*/tiktoken-rs-0.12*/assets/o200k_base.tiktoken")))
    if not found:
        sys.exit("o200k_base.tiktoken not found: build llmem-tokens once (cargo fetches tiktoken-rs) or set LLMEM_O200K")
    return Path(found[-1])


def turns() -> list[tuple[bool, str]]:
    path = Path(os.environ.get("LLMEM_LOCOMO", ROOT.parent / "shared/data/locomo/locomo-dev.json"))
    if not path.exists():
        print(f"LoCoMo not found at {path}; using a generated conversation", file=sys.stderr)
        return [(i % 2 == 0, f"Turn {i}: I went to the park on day {i // 2} and saw {i % 7} squirrels there.") for i in range(2000)]
    out = []
    for sample in json.loads(path.read_text()):
        conv = sample["conversation"]
        a = conv.get("speaker_a", "")
        keys = [k for k in conv if k.startswith("session_") and not k.endswith("date_time")]
        keys.sort(key=lambda k: int(k.removeprefix("session_") or 0))
        for k in keys:
            for t in conv[k] or []:
                if "text" in t and "speaker" in t:
                    out.append((t["speaker"] == a, t["text"]))
    return out


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    data = ranks_file().read_bytes()
    tiktoken.load.read_file = lambda blobpath: data
    tiktoken.load.read_file_cached = lambda blobpath, expected_hash=None: data
    enc = tiktoken.Encoding(**openai_public.o200k_base())

    def exact(messages) -> int:
        return sum(len(enc.encode_ordinary(m.content)) + 3 for m in messages) + 3

    memo: dict[int, int] = {}

    def exact_memo(messages) -> int:
        total = 3
        for m in messages:
            n = memo.get(id(m))
            if n is None:
                n = memo[id(m)] = len(enc.encode_ordinary(m.content)) + 3
            total += n
        return total

    conv = turns()

    def message(i: int):
        user, text = conv[i % len(conv)]
        return HumanMessage(text) if user else AIMessage(text)

    sizes = [int(s) for s in os.environ.get("SIZES", "100,1000,10000,100000").split(",")]
    results = {"max_tokens": MAX_TOKENS, "sizes": sizes, "per_turn_us": {}}
    for name, counter in [("exact", exact), ("exact_memo", exact_memo)]:
        per = {}
        for n in sizes:
            memo.clear()
            history = [SystemMessage("You are a companion who remembers the user's life.")]
            history.extend(message(i) for i in range(n))
            i = n

            def turn():
                nonlocal i
                history.append(message(i))
                i += 1
                kept = trim_messages(
                    history,
                    max_tokens=MAX_TOKENS,
                    token_counter=counter,
                    strategy="last",
                    include_system=True,
                    start_on="human",
                    allow_partial=False,
                )
                return kept

            kept = turn()  # warm-up
            assert exact(kept) <= MAX_TOKENS and kept[0].type == "system"
            reps, t0 = 0, time.perf_counter()
            while True:
                turn()
                reps += 1
                dt = time.perf_counter() - t0
                if dt >= 2.0 or (reps >= 2 and dt >= 0.5 and n >= 100_000):
                    break
            per[n] = dt / reps * 1e6
            print(f"langchain trim_messages ({name}) history {n}: {per[n]:.1f} us/turn ({reps} turns)")
        results["per_turn_us"][name] = per
    (out / "langchain_trim.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
