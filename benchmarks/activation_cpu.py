"""CPU benchmark of the activation service on the embedded model, in one run.

Prints a table of tokens/s and ratios and writes it to
benchmarks/results/activation_cpu_<machine>.{md,json}:

  * in-process engine vs over gRPC (pipelined, several batches in flight);
  * the LM truncated at the hook layer vs the full forward with LM head;
  * N concurrent streams (dynamic batching) vs one stream with one batch at a time.

    python benchmarks/activation_cpu.py [--texts 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

import grpc
import torch
from _machine import cpu_model

from sagex.activation.assets.corpus import load_documents
from sagex.activation.assets.paths import EMBEDDED_SAE_ID, cache_dir
from sagex.activation.config import ActivationConfig
from sagex.activation.encode import TopK
from sagex.activation.engine import WorkItem
from sagex.activation.server import build_runtime, running_activation_server
from sagex.api.activation.v1 import activation_service_pb2 as pb
from sagex.api.activation.v1 import activation_service_pb2_grpc as pb_grpc
from sagex.server.lifecycle import ServerOptions, channel_options

RESULTS = Path(__file__).parent / "results"
BATCH_TEXTS = 8
K = 32


def workload(n: int, tokenize) -> list[list[int]]:  # type: ignore[no-untyped-def]
    docs = load_documents(cache_dir() / "corpus", "heldout")
    out = []
    for doc in docs:
        ids = tokenize(doc.text)[:128]
        if len(ids) >= 96:
            out.append(ids)
        if len(out) == n:
            return out
    raise SystemExit("corpus too small; run `make setup`")


def median_rate(fn, tokens: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates)


def batches(ids: list[list[int]], size: int = BATCH_TEXTS) -> list[list[list[int]]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


async def grpc_rate(
    port: int, ids: list[list[int]], streams: int, inflight: int, repeats: int, batch_texts: int = BATCH_TEXTS
) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options()) as channel:
        stub = pb_grpc.ActivationServiceStub(channel)
        parts = [ids[i::streams] for i in range(streams)]

        async def one_stream(texts: list[list[int]]) -> None:
            queue = batches(texts, batch_texts)
            sent = asyncio.Semaphore(inflight)

            async def gen():  # type: ignore[no-untyped-def]
                for n, b in enumerate(queue):
                    await sent.acquire()
                    yield pb.StreamActivationsRequest(
                        batch_id=str(n), sae_id=EMBEDDED_SAE_ID, token_ids=[pb.TokenIds(ids=t) for t in b],
                        top_k=pb.TopKSelection(k=K),
                    )

            async for msg in stub.StreamActivations(gen()):
                if msg.batch_complete:
                    sent.release()

        total = sum(map(len, ids))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(one_stream(p) for p in parts))
            rates.append(total / (time.perf_counter() - start))
        return statistics.median(rates)


def full_forward_rate(rt, ids: list[list[int]], repeats: int) -> float:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    from sagex.activation.engine import resolve_model_dir

    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(None), dtype=torch.float32).eval()
    total = sum(map(len, ids))

    @torch.inference_mode()
    def run() -> None:
        for b in batches(ids):
            width = max(map(len, b))
            x = torch.tensor([t + [0] * (width - len(t)) for t in b])
            mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in b])
            model(input_ids=x, attention_mask=mask)

    return median_rate(run, total, repeats)


async def main(n_texts: int, repeats: int) -> dict[str, object]:
    config = ActivationConfig(server=ServerOptions(port=0, drain_seconds=0.0))
    rt = build_runtime(config)
    ids = workload(n_texts, rt.engine.lm.encode_text)
    total = sum(map(len, ids))
    items = [WorkItem(tuple(t), EMBEDDED_SAE_ID, TopK(K)) for t in ids]

    def in_process() -> None:
        for b in batches([list(i.ids) for i in items]):
            rt.engine.run([WorkItem(tuple(t), EMBEDDED_SAE_ID, TopK(K)) for t in b])

    in_process()  # warm-up
    rows: dict[str, float] = {}
    rows["in-process engine, batches of 8"] = median_rate(in_process, total, repeats)
    async with running_activation_server(config, rt) as (running, _):
        await grpc_rate(running.port, ids[:16], 1, 4, 1)  # warm-up
        rows["gRPC, 1 stream, 4 batches in flight"] = await grpc_rate(running.port, ids, 1, 4, repeats)
        rows["gRPC, 1 stream, 1 batch at a time"] = await grpc_rate(running.port, ids, 1, 1, repeats)
        rows["gRPC, 8 concurrent streams, 1 batch each"] = await grpc_rate(running.port, ids, 8, 1, repeats)
        # The agent's shape: many small requests. Dynamic batching merges them.
        rows["gRPC, 1 stream, 1 text per request, 1 at a time"] = await grpc_rate(running.port, ids, 1, 1, repeats, 1)
        rows["gRPC, 8 concurrent streams, 1 text per request"] = await grpc_rate(running.port, ids, 8, 1, repeats, 1)
    rows["full forward + LM head (transformers), batches of 8"] = full_forward_rate(rt, ids, repeats)
    rt.close()

    lm = rt.engine.lm
    ratios = {
        "gRPC pipelined / in-process": rows["gRPC, 1 stream, 4 batches in flight"]
        / rows["in-process engine, batches of 8"],
        "truncated / full forward": rows["in-process engine, batches of 8"]
        / rows["full forward + LM head (transformers), batches of 8"],
        "expected from layers (n_layers / loaded_layers)": lm.num_layers / lm.loaded_layers,
        "8 concurrent streams / 1 stream (8-text requests)": rows["gRPC, 8 concurrent streams, 1 batch each"]
        / rows["gRPC, 1 stream, 1 batch at a time"],
        "8 concurrent streams / 1 stream (1-text requests)": rows["gRPC, 8 concurrent streams, 1 text per request"]
        / rows["gRPC, 1 stream, 1 text per request, 1 at a time"],
    }
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "workload": f"{len(ids)} held-out texts, {total} tokens, top-{K}, SAE {EMBEDDED_SAE_ID}, median of {repeats}",
        "tokens_per_second": rows,
        "ratios": ratios,
    }


def render(result: dict[str, object]) -> str:
    lines = [
        "# Activation service, CPU benchmark",
        "",
        f"Machine: {result['machine']}  ",
        f"Date: {result['date']}  ",
        f"Workload: {result['workload']}",
        "",
        "| path | tokens/s |",
        "|---|---:|",
        *(f"| {k} | {v:,.0f} |" for k, v in result["tokens_per_second"].items()),  # type: ignore[union-attr]
        "",
        "| ratio | value |",
        "|---|---:|",
        *(f"| {k} | {v:.2f} |" for k, v in result["ratios"].items()),  # type: ignore[union-attr]
        "",
        "All rows come from one run. On 2 shared CPU cores single timings vary by about 30% between runs,",
        "so read ratios, not absolute rates. With 4 batches in flight the batcher merges them into larger",
        "forward passes, which is why pipelined gRPC can exceed the in-process loop of fixed 8-text batches.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    result = asyncio.run(main(args.texts, args.repeats))
    text = render(result)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = f"activation_cpu_{platform.machine()}_{os.cpu_count()}cpu"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
