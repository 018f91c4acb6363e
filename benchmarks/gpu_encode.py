"""Fused Triton SAE encode vs SAELens-style encode on one CUDA GPU (design, targets
and how to run: benchmarks/GPU_ENCODE.md).

One run measures the roofline (copy bandwidth, bf16 GEMM rate), then for each SAE
shape x batch x output mode times, as medians of ``triton.testing.do_bench``:

  fused_bf16 / fused_fp32    encode_sparse_triton (sagex.activation.kernels)
  eager_fp32 / eager_bf16    (x - b_dec) @ W + b, activation, then the sparsify
                             step the service needs (nonzero -> CSR, topk, index)
  compile_bf16               torch.compile of the eager_bf16 function

and writes a table (markdown + JSON) to benchmarks/results/gpu_encode_<device>.*.
Random SAEs are built in-process; nothing is downloaded. Without CUDA it prints
that the GPU numbers are still owed and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

SHAPES = {
    "gemma-16k": (2304, 16384),
    "gemma-65k": (2304, 65536),
    "gpt2-24k": (768, 24576),
    "embedded": (576, 4608),  # the repository's embedded SAE
}
GEMMA = ("gemma-16k", "gemma-65k")
BATCHES = (1, 64, 4096)
MODES = ("active", "topk64", "subset32")
L0 = 80  # target active features per token for the random JumpReLU SAEs
RESULTS = Path(__file__).resolve().parent / "results"
DEVICE = "cuda"


@dataclass
class Row:
    shape: str
    d_in: int
    d_sae: int
    arch: str
    tokens: int
    mode: str
    method: str
    median_ms: float
    speedup_vs_eager_bf16: float | None = None
    roofline_fraction: float | None = None
    floor_ms: float | None = None


@dataclass
class RandomSae:
    """SAELens-layout weights (fp32) plus the folded ``EncoderParams`` per dtype."""

    arch: str
    w_enc: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor | None
    k: int

    def params(self, dtype: torch.dtype):  # type: ignore[no-untyped-def]
        from sagex.activation.sae import EncoderParams

        bias = self.b_enc - self.b_dec @ self.w_enc
        w = self.w_enc.to(dtype).contiguous()
        if self.arch == "jumprelu":
            return EncoderParams("jumprelu", w, bias, threshold=self.threshold)
        return EncoderParams("topk", w, bias, k=self.k)


def random_sae(arch: str, d_in: int, d_sae: int, gen: torch.Generator) -> RandomSae:
    dev = DEVICE
    w = torch.randn(d_in, d_sae, device=dev, generator=gen) / d_in**0.5
    b_dec = torch.randn(d_in, device=dev, generator=gen) * 0.1
    b_enc = torch.randn(d_sae, device=dev, generator=gen) * 0.1
    threshold = None
    if arch == "jumprelu":
        # pre ~ N(b, 1) for unit-variance tokens: put the threshold at the quantile that
        # leaves about L0 features active per token, jittered per feature.
        q = 1 - L0 / d_sae
        base = math.sqrt(2) * torch.special.erfinv(torch.tensor(2 * q - 1)).item()
        threshold = (base + 0.1 * torch.randn(d_sae, device=dev, generator=gen)).clamp_min(0)
    return RandomSae(arch, w, b_enc, b_dec, threshold, k=64)


# ---- SAELens-style baseline ------------------------------------------------------------


def _csr(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, cols = acts.nonzero(as_tuple=True)
    offsets = torch.zeros(acts.shape[0] + 1, dtype=torch.int64, device=acts.device)
    offsets[1:] = torch.bincount(rows, minlength=acts.shape[0]).cumsum(0)
    return offsets, cols.to(torch.int32), acts[rows, cols].float()


def eager_encode(
    x: torch.Tensor, w: torch.Tensor, b_enc: torch.Tensor, b_dec: torch.Tensor,
    threshold: torch.Tensor | None, k: int, mode: str, ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sae-lens's encode (JumpReLU: relu(pre) * (pre > θ); TopK: topk then relu), in
    the dtype of ``w``, then what the service does to get sparse rows."""
    pre = (x - b_dec) @ w + b_enc
    if threshold is not None:
        acts = torch.relu(pre) * (pre > threshold)
    else:
        vals, idx = pre.topk(k, dim=-1)
        acts = torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))
    if mode == "subset32":
        return _csr(acts[:, ids])
    if mode == "topk64":
        vals, idx = acts.topk(64, dim=-1)
        idx, order = idx.sort(dim=-1)
        vals = vals.gather(-1, order)
        return _csr(torch.zeros_like(acts).scatter_(-1, idx, vals))
    return _csr(acts)


# ---- measurement -----------------------------------------------------------------------


def bench(fn: Callable[[], object], rep_ms: int) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=max(10, rep_ms // 4), rep=rep_ms, return_mode="median"))


def roofline(rep_ms: int) -> dict[str, float]:
    n_bytes = 1 << 30
    src = torch.empty(n_bytes, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    copy_ms = bench(lambda: dst.copy_(src), rep_ms)
    n = 8192
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    gemm_ms = bench(lambda: a @ b, rep_ms)
    return {"copy_GBps": 2 * n_bytes / copy_ms / 1e6, "bf16_gemm_TFLOPs": 2 * n**3 / gemm_ms / 1e9}


def floors_ms(roof: dict[str, float], tokens: int, d_in: int, d_sae: int, mode: str) -> tuple[float, float]:
    """(compute floor, memory floor) of the bf16 fused encode, in ms."""
    cols = 32 if mode == "subset32" else d_sae
    flops = 2 * tokens * d_in * cols
    n_bytes = 2 * (d_in * cols + tokens * d_in)
    return flops / roof["bf16_gemm_TFLOPs"] / 1e9, n_bytes / roof["copy_GBps"] / 1e6


def agreement(fused, x: torch.Tensor, sae: RandomSae) -> float:  # type: ignore[no-untyped-def]
    """Share of the fp32 eager active set the fused bf16 result also has (sanity)."""
    no_ids = torch.zeros(0, dtype=torch.int64, device=x.device)
    args = (sae.w_enc, sae.b_enc, sae.b_dec, sae.threshold, sae.k)
    offsets, ids, _ = eager_encode(x.float(), *args, "active", no_ids)
    n = x.shape[0]
    d_sae = sae.w_enc.shape[1]

    def keys(off: torch.Tensor, fid: torch.Tensor) -> torch.Tensor:
        rows = torch.repeat_interleave(torch.arange(n, device=off.device), off.diff())
        return rows.long() * d_sae + fid.long()

    ref = keys(offsets, ids)
    got = keys(fused.row_offsets, fused.feature_ids)
    return float(torch.isin(ref, got).float().mean()) if ref.numel() else 1.0


def run_case(
    name: str, arch: str, tokens: int, modes: tuple[str, ...], sae: RandomSae, roof: dict[str, float],
    rep_ms: int, compiled: Callable[..., object] | None,
) -> list[Row]:
    from sagex.activation.encode import FeatureIds, Threshold, TopK
    from sagex.activation.kernels import encode_sparse_triton

    d_in, d_sae = sae.w_enc.shape
    gen = torch.Generator(device=DEVICE).manual_seed(tokens)
    x32 = torch.randn(tokens, d_in, device=DEVICE, generator=gen) + sae.b_dec
    x16 = x32.to(torch.bfloat16)
    ids = torch.randperm(d_sae, device=DEVICE, generator=gen)[:32].sort().values
    selections = {"active": Threshold(0.0), "topk64": TopK(64), "subset32": FeatureIds(tuple(ids.tolist()))}
    p16, p32 = sae.params(torch.bfloat16), sae.params(torch.float32)
    w16 = sae.w_enc.to(torch.bfloat16)
    b_enc16, b_dec16 = sae.b_enc.to(torch.bfloat16), sae.b_dec.to(torch.bfloat16)
    thr16 = sae.threshold.to(torch.bfloat16) if sae.threshold is not None else None
    fp32_args = (sae.w_enc, sae.b_enc, sae.b_dec, sae.threshold, sae.k)
    bf16_args = (w16, b_enc16, b_dec16, thr16, sae.k)
    rows: list[Row] = []
    for mode in modes:
        sel = selections[mode]
        timings = {
            "fused_bf16": bench(lambda sel=sel: encode_sparse_triton(x16, p16, sel), rep_ms),
            "fused_fp32": bench(lambda sel=sel: encode_sparse_triton(x32, p32, sel), rep_ms),
            "eager_fp32": bench(lambda m=mode: eager_encode(x32, *fp32_args, m, ids), rep_ms),
            "eager_bf16": bench(lambda m=mode: eager_encode(x16, *bf16_args, m, ids), rep_ms),
        }
        if compiled is not None:
            timings["compile_bf16"] = bench(lambda m=mode: compiled(x16, *bf16_args, m, ids), rep_ms)
        compute_ms, memory_ms = floors_ms(roof, tokens, d_in, d_sae, mode)
        floor = max(compute_ms, memory_ms)
        for method, ms in timings.items():
            rows.append(Row(
                name, d_in, d_sae, arch, tokens, mode, method, ms,
                speedup_vs_eager_bf16=timings["eager_bf16"] / ms,
                roofline_fraction=floor / ms if method.endswith("bf16") else None,
                floor_ms=floor,
            ))
        if mode == "active" and tokens == 64:
            frac = agreement(encode_sparse_triton(x16, p16, sel), x32, sae)
            print(f"  sanity {name} {arch}: fused bf16 keeps {frac:.4f} of the fp32 eager active set")
    return rows


# ---- targets and report ---------------------------------------------------------------


def targets(rows: list[Row], roof: dict[str, float]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []

    def find(shape: str, tokens: int, mode: str, method: str, arch: str = "jumprelu") -> Row | None:
        key = (shape, tokens, mode, method, arch)
        return next((r for r in rows if (r.shape, r.tokens, r.mode, r.method, r.arch) == key), None)

    for shape in GEMMA:
        for mode in ("active", "topk64"):
            fused = find(shape, 4096, mode, "fused_bf16")
            if fused is None:
                continue
            d_in, d_sae = SHAPES[shape]
            compute_ms, _ = floors_ms(roof, 4096, d_in, d_sae, mode)
            label = f"{shape} {mode} 4096 tok"
            out.append(_target(f"{label}: speedup vs SAELens bf16 eager", fused.speedup_vs_eager_bf16, 1.5))
            out.append(_target(f"{label}: fraction of GEMM roofline", compute_ms / fused.median_ms, 0.65))
        fused64 = find(shape, 64, "active", "fused_bf16")
        if fused64 is not None:
            d_in, d_sae = SHAPES[shape]
            _, memory_ms = floors_ms(roof, 64, d_in, d_sae, "active")
            frac = memory_ms / fused64.median_ms
            out.append(_target(f"{shape} active 64 tok: fraction of memory floor", frac, 0.75))
        sub = find(shape, 4096, "subset32", "fused_bf16")
        if sub is not None:
            label = f"{shape} subset32 4096 tok: speedup vs encode-then-index"
            out.append(_target(label, sub.speedup_vs_eager_bf16, 30.0))
    return out


def _target(name: str, value: float | None, goal: float) -> dict[str, object]:
    return {"target": name, "value": value, "goal": goal, "met": value is not None and value >= goal}


def markdown(device: str, roof: dict[str, float], rows: list[Row], goals: list[dict[str, object]]) -> str:
    lines = [
        f"# Fused SAE encode on {device}",
        "",
        f"Roofline: copy {roof['copy_GBps']:.0f} GB/s, bf16 GEMM {roof['bf16_gemm_TFLOPs']:.0f} TFLOP/s. "
        "Times are medians (ms) of triton.testing.do_bench; speedup is eager_bf16 time / this time; "
        "roofline is max(compute, memory floor) / time, for bf16 methods.",
        "",
        "| shape | arch | tokens | mode | method | median ms | speedup vs eager bf16 | roofline |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        frac = f"{r.roofline_fraction:.2f}" if r.roofline_fraction is not None else ""
        lines.append(
            f"| {r.shape} ({r.d_in}x{r.d_sae}) | {r.arch} | {r.tokens} | {r.mode} | {r.method} | "
            f"{r.median_ms:.4f} | {r.speedup_vs_eager_bf16:.2f} | {frac} |"
        )
    lines += ["", "## Targets", "", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for g in goals:
        value = f"{g['value']:.2f}" if g["value"] is not None else "n/a"
        lines.append(f"| {g['target']} | {value} | {g['goal']} | {'yes' if g['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "yes", "on", "y")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"subset of {','.join(SHAPES)}")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--topk-arch", action=argparse.BooleanOptionalAction, default=True,
                    help="also time a TopK-architecture SAE (k=64), active mode")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--rep-ms", type=int, default=200, help="do_bench measuring time per case")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("no CUDA device: GPU numbers still owed (run benchmarks/gpu_encode.py on a CUDA GPU)")
        return 0
    if _interpreting():
        print("TRITON_INTERPRET=1 is set: unset it to time the compiled kernels", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name()
    print(f"device: {device}; torch {torch.__version__}")
    roof = roofline(args.rep_ms)
    print(f"roofline: copy {roof['copy_GBps']:.0f} GB/s, bf16 GEMM {roof['bf16_gemm_TFLOPs']:.0f} TFLOP/s")
    # One compiled function serves every shape, batch and mode: lift dynamo's
    # recompile limit so it never silently falls back to eager.
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 512)
    compiled = torch.compile(eager_encode) if args.compile else None

    rows: list[Row] = []
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    modes = tuple(m for m in args.modes.split(",") if m)
    for name in args.shapes.split(","):
        d_in, d_sae = SHAPES[name]
        archs = [("jumprelu", modes)] + ([("topk", ("active",))] if args.topk_arch else [])
        for arch, arch_modes in archs:
            sae = random_sae(arch, d_in, d_sae, gen)
            for tokens in (int(b) for b in args.batches.split(",")):
                t0 = time.time()
                rows += run_case(name, arch, tokens, arch_modes, sae, roof, args.rep_ms, compiled)
                print(f"  {name} {arch} {tokens} tok done in {time.time() - t0:.0f}s", flush=True)
            del sae
            torch.cuda.empty_cache()

    goals = targets(rows, roof)
    report = markdown(device, roof, rows, goals)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    (args.out / f"gpu_encode_{slug}.md").write_text(report)
    (args.out / f"gpu_encode_{slug}.json").write_text(json.dumps(
        {"device": device, "torch": torch.__version__, "roofline": roof,
         "rows": [asdict(r) for r in rows], "targets": goals}, indent=1))
    print(f"wrote {args.out / f'gpu_encode_{slug}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
