"""The fused Triton encode against a float64 reference: every architecture x output
mode x dtype, on shapes that are not multiples of any block size, with poisoned
output buffers (conftest). Under the CPU interpreter unless a GPU is present."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from sagex.activation.encode import FeatureIds, Selection, Threshold, TopK, encode_sparse
from sagex.activation.kernels import BeyondKernelLimits, CapacityOverflow, encode_sparse_triton, launch
from sagex.activation.sae import EncoderParams
from tests.kernels.reference import (
    assert_matches,
    assert_meaningful,
    expected,
    kernel_device,
    make_params,
)

DEVICE = kernel_device()
ARCHS = ("standard", "jumprelu", "topk", "gated")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
N, D_IN, D_SAE = 37, 72, 300  # no multiple of BM, BK or BN, so every edge mask is live
# Unsorted, first and last column, both sides of the 128-column tile edges.
IDS = (299, 0, 141, 17, 128, 127, 255, 256, 64, 5, 200, 33)
SELECTIONS: dict[str, Selection] = {"active": Threshold(0.0), "subset": FeatureIds(IDS), "topk": TopK(5)}


def _case(
    arch: str, gen: torch.Generator, dtype: torch.dtype = torch.float32, n: int = N, d_in: int = D_IN,
    d_sae: int = D_SAE, **kw: object,
) -> tuple[torch.Tensor, EncoderParams]:
    p = make_params(arch, d_in, d_sae, dtype, gen, **kw).to(DEVICE)  # type: ignore[arg-type]
    x = torch.randn(n, d_in, generator=gen).to(dtype).to(DEVICE)
    return x, p


def _check(x: torch.Tensor, p: EncoderParams, selection: Selection, **kw: object) -> None:
    exp = expected(x, p, selection)
    assert_meaningful(exp)
    rows = encode_sparse_triton(x, p, selection, **kw)  # type: ignore[arg-type]
    cap = selection.k if isinstance(selection, TopK) else None
    assert_matches(rows, exp, DEVICE, max_per_row=cap)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", SELECTIONS)
@pytest.mark.parametrize("arch", ARCHS)
def test_matches_float64_reference(arch: str, mode: str, dtype: str, gen: torch.Generator) -> None:
    x, p = _case(arch, gen, DTYPES[dtype])
    _check(x, p, SELECTIONS[mode])


@pytest.mark.parametrize("arch", ARCHS)
def test_threshold_above_zero(arch: str, gen: torch.Generator) -> None:
    x, p = _case(arch, gen)
    _check(x, p, Threshold(0.4))


@pytest.mark.parametrize(
    ("arch", "selection", "scaled"),
    [
        ("topk", TopK(20), True),
        ("topk", Threshold(0.0), False),
        ("standard", TopK(64), True),
        ("gated", TopK(1), True),
    ],
    ids=["k-above-sae-k", "unscaled-topk", "k64", "k1"],
)
def test_topk_variants(arch: str, selection: Selection, scaled: bool, gen: torch.Generator) -> None:
    x, p = _case(arch, gen, scaled=scaled)
    _check(x, p, selection)


@pytest.mark.parametrize("n", [9, N], ids=["gather-in-kernel", "pre-gathered"])
@pytest.mark.parametrize("arch", ARCHS)
def test_subset_spanning_tiles(arch: str, n: int, gen: torch.Generator) -> None:
    """150 ids span two column tiles; one token block gathers W columns inside the
    kernel, several read a host-gathered copy (launch.launch_subset)."""
    x, p = _case(arch, gen, torch.float16, n=n)
    _check(x, p, FeatureIds(tuple(range(D_SAE - 1, 0, -2))))


@pytest.mark.parametrize(("arch", "selection"), [("topk", Threshold(0.0)), ("jumprelu", TopK(4))])
def test_bitonic_merge_path(
    arch: str, selection: Selection, gen: torch.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU's tl.topk/tl.sort merge, on CPU: the interpreter runs its xor
    reductions per element, so only with tiny tiles (still several per chunk)."""
    monkeypatch.setattr(launch, "TOPK_SELECT", 0)
    monkeypatch.setattr(launch, "blocks_for", lambda *a, **k: launch.Blocks(bm=16, bn=16, bk=32))
    x, p = _case(arch, gen, n=21, d_in=40, d_sae=70, k=3)
    _check(x, p, selection)


def test_overflow_raises(gen: torch.Generator) -> None:
    x, p = _case("standard", gen)
    exp = expected(x, p, Threshold(0.0))
    counts, unsure_rows = exp.keep.sum(dim=1), exp.unsure.any(dim=1)
    with pytest.raises(CapacityOverflow) as info:
        encode_sparse_triton(x, p, Threshold(0.0), capacity=3, on_overflow="raise")
    err = info.value
    assert err.capacity == 3
    flagged = torch.zeros(N, dtype=torch.bool)
    flagged[err.rows] = True
    sure = ~unsure_rows
    assert torch.equal(flagged[sure], (counts > 3)[sure])
    sure_flagged = ~unsure_rows[err.rows]  # their reported counts are exact
    assert torch.equal(err.counts[sure_flagged], counts[err.rows][sure_flagged].to(err.counts.dtype))


def test_overflow_retry_is_logged_and_exact(gen: torch.Generator) -> None:
    from structlog.testing import capture_logs

    x, p = _case("gated", gen)
    exp = expected(x, p, Threshold(0.0))
    cap = int(exp.keep.sum(dim=1).median())  # about half the rows overflow
    with capture_logs() as logs:
        rows = encode_sparse_triton(x, p, Threshold(0.0), capacity=cap)
    assert any(e["event"] == "active_set_capacity_overflow" and e["capacity"] == cap for e in logs)
    assert_matches(rows, exp, DEVICE)


def test_large_k_uses_active_set(gen: torch.Generator) -> None:
    x, p = _case("standard", gen, n=6, d_in=16, d_sae=1100)
    _check(x, p, TopK(1050))
    topk_sae = _case("topk", gen, n=2, d_in=16, d_sae=1100, k=1050)[1]
    with pytest.raises(BeyondKernelLimits):
        encode_sparse_triton(x, topk_sae, TopK(1050))
    # The dispatcher serves such shapes with the torch path, same contract.
    via_dispatch = encode_sparse(x, topk_sae, TopK(1050), backend="triton")
    via_torch = encode_sparse(x, topk_sae, TopK(1050), backend="torch")
    assert torch.equal(via_dispatch.row_offsets, via_torch.row_offsets)
    assert torch.equal(via_dispatch.feature_ids, via_torch.feature_ids)


def test_strided_input_and_edge_cases(gen: torch.Generator) -> None:
    x, p = _case("jumprelu", gen)
    x = x.t().contiguous().t()  # column-major: the kernels take strides, not layouts
    _check(x, p, FeatureIds(IDS))
    dup = encode_sparse_triton(x, p, FeatureIds((17, 5, 17)))
    ref = encode_sparse(x.cpu(), p.to("cpu"), FeatureIds((17, 5, 17)), backend="torch")
    assert torch.equal(dup.feature_ids.cpu(), ref.feature_ids)
    assert torch.equal(dup.row_offsets.cpu(), ref.row_offsets)
    empty = encode_sparse_triton(x, p, FeatureIds(()))
    assert empty.row_offsets.tolist() == [0] * (N + 1) and empty.values.numel() == 0
    none = encode_sparse_triton(x[:0], p, TopK(3))
    assert none.num_rows == 0
    with pytest.raises(ValueError):
        encode_sparse_triton(x, p, FeatureIds((D_SAE,)))


@pytest.mark.parametrize("mode", SELECTIONS)
@pytest.mark.parametrize("arch", ARCHS)
def test_backend_triton_equals_torch(arch: str, mode: str, gen: torch.Generator) -> None:
    x, p = _case(arch, gen)
    selection = SELECTIONS[mode]
    exp = expected(x, p, selection)
    fused = encode_sparse(x, p, selection, backend="triton")
    eager = encode_sparse(x.cpu(), p.to("cpu"), selection, backend="torch")
    assert_matches(fused, exp, DEVICE)
    assert_matches(eager, exp, torch.device("cpu"))
    a, b = fused.to_dense(D_SAE) if not x.is_cuda else _dense_cpu(fused), eager.to_dense(D_SAE)
    assert not bool(((a != 0) ^ (b != 0))[~exp.unsure].any())
    both = (a != 0) & (b != 0)
    torch.testing.assert_close(a[both], b[both], rtol=1e-5, atol=1e-5)


def _dense_cpu(rows: object) -> torch.Tensor:
    from sagex.activation.encode import SparseRows

    assert isinstance(rows, SparseRows)
    return SparseRows(rows.row_offsets.cpu(), rows.feature_ids.cpu(), rows.values.cpu()).to_dense(D_SAE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_sweep(arch: str, dtype: str, gen: torch.Generator) -> None:
    """Native kernels (bf16 through the tensor cores, no upcast) at realistic widths."""
    for n in (1, 64, 1000):
        x, p = _case(arch, gen, DTYPES[dtype], n=n, d_in=576, d_sae=4608 + 77, k=64)
        ids = tuple(torch.randperm(p.d_sae, generator=gen)[:32].tolist())
        for selection in (Threshold(0.0), Threshold(0.5), FeatureIds(ids), TopK(64), TopK(3)):
            exp = expected(x, p, selection)
            rows = encode_sparse_triton(x, p, selection)
            cap = selection.k if isinstance(selection, TopK) else None
            assert_matches(rows, exp, DEVICE, max_per_row=cap)
