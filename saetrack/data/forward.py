"""The model forward that makes an activation (Eq. 6): residual stream entering block ``l``, in batches of contexts.

Both activation paths run it the same way - the cache (notebook 01) writes its output to disk, the streamed source
feeds it to the SAE - so the same contexts in the same batches give the same activations on either path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import TORCH_DTYPES
from saetrack.data.shuffle import to_device

__all__ = [
    "FORWARD_DTYPES",
    "fill_activations",
    "forward_context",
    "residual_at_layer",
    "residual_chunks",
    "truncate_at_layer",
]


#: ``cache.forward_dtype`` -> the autocast dtype of the model forward (``None``: plain float32).
FORWARD_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def residual_at_layer(model: Any, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The activation ``x^(l, C, q, t)`` of Eq. 6: ``blocks.{layer}.hook_resid_pre``, stopping the forward pass there.

    ``model(tokens, stop_at_layer=layer)`` runs the embedding and blocks ``0 .. layer-1`` only and
    returns the residual stream entering block ``layer`` - no compute past the hook.
    """
    with torch.inference_mode():
        return model(tokens, stop_at_layer=layer)


@contextlib.contextmanager
def _tf32_matmuls(allowed: bool) -> Iterator[None]:
    """TF32 CUDA matmuls allowed (``allowed``) inside the block only; the global flag is restored on leaving it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def forward_context(
    device: str | torch.device, forward_dtype: str = "float32", tf32: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """The numerics of the model forward, scoped to it: bfloat16 autocast on ``device`` when asked, and TF32 CUDA
    matmuls when ``tf32`` (``cache.tf32``); nothing outside the block changes, so no other stage inherits them."""
    stack = contextlib.ExitStack()
    if tf32:
        stack.enter_context(_tf32_matmuls(True))
    dtype = FORWARD_DTYPES[forward_dtype]
    if dtype is not None:
        stack.enter_context(torch.autocast(device_type=torch.device(device).type, dtype=dtype))
    return stack


def residual_chunks(
    model: Any,
    tokens: np.ndarray,
    layer: int,
    *,
    batch_contexts: int,
    device: str | torch.device,
    store_dtype: torch.dtype = torch.float32,
    forward_dtype: str = "float32",
    first_context: int = 0,
    tf32: bool = False,
) -> Iterator[torch.Tensor]:
    """Eq. 6 activations of ``tokens`` ``[n_contexts, ctx]``: one float32 ``[rows, d]`` tensor per batch, on ``device``.

    Batches are ``batch_contexts`` contexts counted from context 0 (so skipping to ``first_context`` keeps the same
    batch boundaries, and thus bit-identical activations); values are rounded through ``store_dtype`` as the cache
    stores them. Rows are ``c * ctx + q`` in the order of the contexts. ``tf32`` allows TF32 matmuls during each
    batch's forward only (:func:`forward_context`), never while the consumer runs between batches.
    """
    n_contexts, _ = tokens.shape
    begin = (first_context // batch_contexts) * batch_contexts
    for start in range(begin, n_contexts, batch_contexts):
        # one batch of token ids as int64 on the host, uploaded pinned and non-blocking when the model is on CUDA
        ids = np.asarray(tokens[start : start + batch_contexts], dtype=np.int64)
        batch = to_device(torch.from_numpy(ids if ids.flags.writeable else ids.copy()), device)
        with forward_context(device, forward_dtype, tf32):
            resid = residual_at_layer(model, batch, layer)
        resid = resid.to(store_dtype).float().clone()  # a normal tensor (autograd may save it), not an inference one
        if start < first_context:
            resid = resid[first_context - start :]
        yield resid.reshape(-1, resid.shape[-1])
        del ids, batch, resid  # not alive while the next batch is computed


def truncate_at_layer(model: Any, layer: int) -> Any:
    """``model`` (a ``HookedTransformer``) cut to what :func:`residual_at_layer` at ``layer`` runs: blocks
    ``0 .. layer-1`` kept, later blocks, ``ln_final`` and ``unembed`` dropped (their memory freed), hooks re-indexed.

    In place; returns ``model``. The activations at ``layer`` are bit-identical to the full model's; anything needing
    logits (the CE loss recovered of the link evaluation) needs the full model instead.
    """
    if not 0 <= layer <= len(model.blocks):
        raise ValueError(f"layer = {layer} is invalid for a model of {len(model.blocks)} blocks.")
    model.blocks = model.blocks[:layer]
    model.ln_final = None
    model.unembed = None
    model.setup()  # the hook dictionary of the blocks kept only
    return model


def fill_activations(
    run: RunConfig, model: Any, tokens: np.ndarray, out: np.ndarray, device: str, desc: str = "", progress: bool = False
) -> None:
    """Write the Eq. 6 activations of ``tokens`` ``[n, ctx]`` at the run's hook into ``out`` ``[n * ctx, d]``, batch
    by batch, with the cache's batching, storage dtype and forward dtype (the activation cache and the crosscoder's
    aligned activations both write through here)."""
    chunks = residual_chunks(
        model,
        tokens,
        run.cache.layer,
        batch_contexts=run.cache.batch_contexts,
        device=device,
        store_dtype=TORCH_DTYPES[run.cache.dtype],
        forward_dtype=run.cache.forward_dtype,
        tf32=run.cache.tf32,
    )
    total = -(-len(tokens) // run.cache.batch_contexts)
    row = 0
    for chunk in tqdm(chunks, total=total, desc=desc, disable=not progress, leave=False):
        out[row : row + len(chunk)] = chunk.cpu().numpy()
        row += len(chunk)
