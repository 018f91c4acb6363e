"""The torch encode path against a float64 reference, for every architecture and
selection, and the SAE folds against sae-lens's own encode."""

from __future__ import annotations

import pytest
import torch

from sagex.activation.encode import FeatureIds, Threshold, TopK, encode_sparse
from sagex.activation.sae import fold
from tests.builders import ARCHITECTURES, random_sae


def _reference(sae, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return sae.encode(x)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fold_matches_sae_lens(arch: str) -> None:
    sae = random_sae(arch, d_in=40, d_sae=130, hook_name="model.layers.0", seed=11)
    x = torch.randn(29, 40, generator=torch.Generator().manual_seed(5)) * 8
    expected = _reference(sae, x)
    rows = encode_sparse(x, fold(sae), Threshold(0.0), backend="torch")
    torch.testing.assert_close(rows.to_dense(130), expected, rtol=1e-4, atol=1e-4)
    assert (expected > 0).any()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_selections(arch: str) -> None:
    sae = random_sae(arch, d_in=40, d_sae=130, hook_name="model.layers.0", seed=3)
    x = torch.randn(33, 40, generator=torch.Generator().manual_seed(9)) * 8
    dense = _reference(sae, x)
    p = fold(sae)
    ids = (129, 0, 17, 64)
    sub = encode_sparse(x, p, FeatureIds(tuple(sorted(ids))), backend="torch").to_dense(130)
    torch.testing.assert_close(sub[:, list(ids)], dense[:, list(ids)], rtol=1e-4, atol=1e-4)
    assert sub.count_nonzero() == dense[:, list(ids)].count_nonzero()
    top = encode_sparse(x, p, TopK(3), backend="torch")
    for t in range(x.shape[0]):
        lo, hi = top.row_offsets[t], top.row_offsets[t + 1]
        fids = top.feature_ids[lo:hi]
        assert fids.tolist() == sorted(fids.tolist()), "ids ascend within a row"
        assert len(fids) == min(3, int((dense[t] > 0).sum()))
        torch.testing.assert_close(top.values[lo:hi], dense[t, fids.long()], rtol=1e-4, atol=1e-4)
    high = encode_sparse(x, p, Threshold(0.5), backend="torch").to_dense(130)
    torch.testing.assert_close(high, torch.where(dense > 0.5, dense, 0.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("min_activation", [0.0, 0.5, -1.0])
def test_topk_threshold_rows_are_the_dense_paths_bits(min_activation: float) -> None:
    """Mining's path (a TopK SAE, Threshold): rows built from the top k directly are
    exactly the rows of densifying and scanning, across several token blocks."""
    from sagex.activation.encode import SparseRows, _rows_from_dense, encode_dense_torch

    p = fold(random_sae("topk", d_in=40, d_sae=130, hook_name="model.layers.0", seed=4))
    x = torch.randn(1100, 40, generator=torch.Generator().manual_seed(2)) * 8
    got = encode_sparse(x, p, Threshold(min_activation), backend="torch")
    dense = [encode_dense_torch(x[s : s + 512], p) for s in range(0, len(x), 512)]
    want = SparseRows.concat([_rows_from_dense(torch.where(d > min_activation, d, 0.0)) for d in dense])
    assert int(got.row_offsets[-1]) > 0
    for a, b in zip((got.row_offsets, got.feature_ids, got.values), (want.row_offsets, want.feature_ids, want.values),
                    strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
