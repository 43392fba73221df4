"""Precision of the SAE training step's matrix products (``ChainConfig.matmul_precision``), set only around the loop.

* ``"fp32"`` (default): exact float32 products; nothing is changed.
* ``"tf32"``: cuBLAS may use TensorFloat-32 for float32 products (``torch.backends.cuda.matmul.allow_tf32``) while
  the step loop runs. Only the CUDA flag is set, so on the CPU this is a no-op (``torch.set_float32_matmul_precision
  ("high")`` would also switch oneDNN's CPU matmuls to TF32 where the hardware has it, so it is not used). The flag is
  restored afterwards, through the same PyTorch API that reports it (``torch.backends.cuda.matmul.fp32_precision``),
  so ``allow_tf32``, ``torch.get_float32_matmul_precision()`` and ``torch.backends.cudnn.allow_tf32`` read the same
  before and after, also when the loop raises.
* ``"bf16"``: the five matrix products of the fused step (:class:`~saetrack.sae.step.StandardSAEStep`) take bfloat16
  operands with float32 accumulation and output (on the CPU emulated: bf16-rounded operands multiplied in float32).
  Weights, gradients and Adam's state stay float32. SAELens' autograd path (when the fused step does not apply, e.g.
  with hooks attached) is not affected and runs in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from saetrack.config.chain import MATMUL_PRECISIONS
from saetrack.sae.model import LinkSAE

__all__ = [
    "MATMUL_DTYPES",
    "check_matmul_precision",
    "training_precision",
]


#: Operand dtype of the fused step's products for each precision (``None``: the SAE's own dtype).
MATMUL_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "tf32": None, "bf16": torch.bfloat16}


def check_matmul_precision(precision: str) -> None:
    """Raise ``ValueError`` unless ``precision`` is one of :data:`~saetrack.config.chain.MATMUL_PRECISIONS`."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision = {precision!r} is invalid: one of {', '.join(map(repr, MATMUL_PRECISIONS))}."
        )


def _restore_cuda_matmul(previous: str) -> None:
    """Put cuBLAS's float32 matmul precision back to ``previous`` (a ``fp32_precision`` value) after a legacy write.

    The legacy flag is written first (the API :func:`training_precision` used), then the new-API value if that did not
    reproduce it (``"none"``, the default, reads ``"ieee"`` after a legacy write of ``False``).
    """
    torch.backends.cuda.matmul.allow_tf32 = previous == "tf32"
    if torch.backends.cuda.matmul.fp32_precision != previous:
        torch.backends.cuda.matmul.fp32_precision = previous


@contextmanager
def training_precision(sae: LinkSAE, precision: str) -> Iterator[None]:
    """Run the block with ``sae``'s training products in ``precision`` (see the module docstring); restore after.

    ``"tf32"`` allows TF32 in cuBLAS (CUDA only; a no-op on the CPU); ``"bf16"`` sets ``sae.matmul_dtype``. The global
    flags and ``sae.matmul_dtype`` are restored on exit, also when the block raises.
    """
    check_matmul_precision(precision)
    previous_dtype = sae.matmul_dtype
    previous_cuda = torch.backends.cuda.matmul.fp32_precision
    try:
        if precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
        sae.matmul_dtype = MATMUL_DTYPES[precision]
        yield
    finally:
        sae.matmul_dtype = previous_dtype
        if precision == "tf32":
            _restore_cuda_matmul(previous_cuda)
