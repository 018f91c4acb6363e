"""Fused Triton SAE-encode kernels behind the ``encode_sparse`` contract
(``sagex.activation.encode``). Importing this package imports triton; set
``TRITON_INTERPRET=1`` first to run the kernels on CPU tensors."""

from sagex.activation.kernels.wrapper import BeyondKernelLimits, CapacityOverflow, encode_sparse_triton

__all__ = ["BeyondKernelLimits", "CapacityOverflow", "encode_sparse_triton"]
