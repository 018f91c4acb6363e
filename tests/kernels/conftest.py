"""Kernel tests: the Triton kernels run under the CPU interpreter unless a CUDA
device is present (then natively, which also covers the bf16 tensor-core path).

The interpreter must be chosen before triton is imported: ``triton.jit`` reads
TRITON_INTERPRET when each kernel is decorated, i.e. when
``sagex.activation.kernels`` is first imported, which only the tests here do.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def gen(request: pytest.FixtureRequest) -> torch.Generator:
    """Seeded per test case: the node name includes the parameters, so every case
    draws different data, and a failure reproduces."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.name.encode()))


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fill every kernel output buffer with garbage first (NaN, -1 ids, the largest
    int64 key), so a slot the kernels leave unwritten but the host reads shows up."""
    try:
        from sagex.activation.kernels import launch
    except ImportError:  # triton missing: the test modules skip themselves
        yield
        return

    def poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if dtype.is_floating_point:
            fill: float | int = float("nan")
        elif dtype == torch.int64:
            fill = torch.iinfo(torch.int64).max
        else:
            fill = -1
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(launch, "_empty", poisoned)
    yield
