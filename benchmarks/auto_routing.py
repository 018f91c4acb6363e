"""What `policy = "auto"` saves: the planted-feature benchmark run with the LLM
policy alone and with auto routing (symbolic first, the LLM only below the
threshold), on the same planted SAE and the same LLM endpoint.

The LLM is the scripted scientist (tests/fakes) served over a loopback socket:
its prompt-token counts come from the real prompts the policy sends (whitespace
words + 3 per message, a close proxy for tokens), its answers are short scripted
JSON. So the token and dollar columns measure what the routing saves; the
recovery columns compare the explainers only as far as a scripted LLM can name
anything (it names nothing), i.e. they show auto is not worse than the LLM alone
here, not how good a real LLM would be.

    python benchmarks/auto_routing.py PLANTED_DIR [--out DIR] [--threshold 0.5]

Writes DIR/planted.md (the bench's own table and per-feature verdicts) and
benchmarks/results/auto_routing_<machine>.md (the savings table)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sagex.bench.planted import BenchSettings, run  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.fakes.scientist import scientist  # noqa: E402

# Assumed prices (US dollars per million tokens) of a hosted frontier model.
PROMPT_USD, COMPLETION_USD = 2.50, 10.00


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("planted", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench-auto"))
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(scientist) as fake:
        config = Path(tmp) / "bench.toml"
        config.write_text("[activation]\nmax_mining_tokens = 60000\n"
                          f"[agent]\nauto_threshold = {args.threshold}\n[agent.llm]\n"
                          f"prompt_usd_per_mtok = {PROMPT_USD}\ncompletion_usd_per_mtok = {COMPLETION_USD}\n")
        settings = BenchSettings(args.planted, explainers=("openai", "auto"), config=str(config),
                                 llm_base_url=fake.base_url, llm_model="fake-scientist", out=args.out,
                                 concurrency=args.concurrency)
        code = run(settings)
    if code:
        return code
    data = json.loads((args.out / "planted.json").read_text())
    rows = {r["explainer"]: r for r in data["summary"]}
    llm, auto = rows["openai"], rows["auto"]
    lines = [
        "# Auto routing: LLM spend saved against the LLM policy alone", "",
        f"Planted SAE {data['sae_id']} ({data['concepts']} concepts), {llm['features']} features; machine "
        f"{data['machine']}; {data['date']}. LLM: scripted fake over a loopback socket (prompt tokens counted "
        f"from the real prompts), priced at ${PROMPT_USD}/M prompt and ${COMPLETION_USD}/M completion tokens; "
        f"auto threshold {args.threshold}. Command: `python benchmarks/auto_routing.py PLANTED_DIR`.", "",
        "| explainer | recovered (planted) | noise flagged | LLM tokens/feature | $/feature | s/feature |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in (llm, auto):
        g = r["groups"]["planted"]
        nf, nn = r["noise_flagged"]
        lines.append(f"| {r['explainer']} | {g['recovered']}/{g['n']} | {nf}/{nn} | "
                     f"{r['llm_tokens_per_feature']:.0f} | {r['usd_per_feature']:.4f} | "
                     f"{r['seconds_per_feature']:.1f} |")
    saved_tok = llm["llm_tokens_per_feature"] - auto["llm_tokens_per_feature"]
    saved_usd = llm["usd_per_feature"] - auto["usd_per_feature"]
    share = saved_tok / llm["llm_tokens_per_feature"] if llm["llm_tokens_per_feature"] else 0.0
    lines += ["", f"Saved per feature by auto: {saved_tok:.0f} LLM tokens ({share:.0%}), ${saved_usd:.4f}."]
    out = ROOT / "benchmarks" / "results" / f"auto_routing_cpu_{platform.machine()}_{os.cpu_count()}cpu.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
