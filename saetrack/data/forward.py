"""The model forward that makes an activation (Eq. 6): the hooked activation of block ``l`` (by default the residual
stream entering it; any hook of :data:`~saetrack.config.data.CACHE_HOOKS`), in batches of contexts, the forward stopped
at the hook.

Both activation paths run it the same way - the cache (notebook 01) writes its output to disk, the streamed source
feeds it to the SAE - so the same contexts in the same batches give the same activations on either path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from saetrack.config.data import CACHE_HOOKS
from saetrack.config.run import RunConfig
from saetrack.data.cache_plan import TORCH_DTYPES
from saetrack.data.shuffle import to_device
from saetrack.distributed.gather import dealt_out
from saetrack.distributed.ranks import SINGLE, Ranks

__all__ = [
    "FORWARD_DTYPES",
    "activation_at_hook",
    "activations_at_hooks",
    "fill_activations",
    "forward_context",
    "layered_chunks",
    "residual_at_layer",
    "residual_chunks",
    "truncate_at_layer",
]


#: ``cache.forward_dtype`` -> the autocast dtype of the model forward (``None``: plain float32).
FORWARD_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


class _Captured(Exception):
    """Raised by the capturing hook to end the forward pass right after the hooked activation was computed."""


def _check_hook(model: Any, layer: int, hook: str) -> None:
    """Raise unless ``blocks.{layer}.hook_{hook}`` is an activation ``model`` computes (the layer in range)."""
    if hook not in CACHE_HOOKS:
        raise ValueError(f"hook = {hook!r} is invalid: one of {', '.join(CACHE_HOOKS)}.")
    if not hasattr(model, "blocks"):
        raise TypeError(f"hook {hook!r} needs a HookedTransformer, not a {type(model).__name__}.")
    n_blocks = len(model.blocks)
    if not 0 <= layer < n_blocks and not (hook == "resid_pre" and layer == n_blocks):
        raise ValueError(f"layer = {layer} is invalid for hook {hook!r} of a model of {n_blocks} blocks.")
    name = f"blocks.{layer}.hook_{hook}"
    if hook != "resid_pre" and name not in model.hook_dict:
        why = " (attention and MLP run in parallel: no residual between them)" if hook == "resid_mid" else ""
        raise ValueError(f"the model has no hook {name}{why}.")


def activation_at_hook(model: Any, tokens: torch.Tensor, layer: int, hook: str = "resid_pre") -> torch.Tensor:
    """The activation ``x^(l, C, q, t)`` of Eq. 6 at ``blocks.{layer}.hook_{hook}``, ``[batch, pos, d_model]``, with
    no compute past the hook.

    ``resid_pre``: ``model(tokens, stop_at_layer=layer)`` runs the embedding and blocks ``0 .. layer-1`` only and
    returns the residual stream entering block ``layer``; ``resid_post``: the same with ``stop_at_layer=layer + 1``
    (the residual leaving block ``layer``). ``resid_mid``, ``attn_out``, ``mlp_out``: the forward runs into block
    ``layer``, and a forward hook on the hook point keeps the value and ends the pass there (raising an exception the
    function catches), so the rest of the block is never computed either. Raises ``ValueError`` for a hook the model
    does not compute (``resid_mid`` of a parallel-attention model) or a layer out of range (``resid_pre`` is checked
    by transformer_lens, as before; any model with ``forward(tokens, stop_at_layer)`` serves it).
    """
    if hook != "resid_pre":
        _check_hook(model, layer, hook)
    with torch.inference_mode():
        if hook in ("resid_pre", "resid_post"):
            return model(tokens, stop_at_layer=layer + (hook == "resid_post"))
        held: list[torch.Tensor] = []

        def capture(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            held.append(output)
            raise _Captured

        handle = model.hook_dict[f"blocks.{layer}.hook_{hook}"].register_forward_hook(capture)
        try:
            model(tokens, stop_at_layer=layer + 1)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not held:
            raise RuntimeError(f"the forward pass never reached blocks.{layer}.hook_{hook}.")
        return held[0]


def activations_at_hooks(
    model: Any, tokens: torch.Tensor, layers: Sequence[int], hook: str = "resid_pre"
) -> list[torch.Tensor]:
    """The activations of Eq. 6 at ``blocks.{l}.hook_{hook}`` for every ``l`` of ``layers``, from **one** forward
    pass run to the deepest of them only: one ``[batch, pos, d_model]`` tensor per layer, in the order given.

    A forward hook on each shallower hook point keeps its value; the deepest is reached as
    :func:`activation_at_hook` reaches it (``resid_pre``: the output of ``model(tokens, stop_at_layer=deepest)``;
    any other hook: its hook point, which ends the pass), so nothing past it is computed and a model cut by
    :func:`truncate_at_layer` at the deepest layer serves. Each value is the one :func:`activation_at_hook` returns
    for that layer alone (the same operations on the same batch: bit-identical), which is what lets several layers
    share a checkpoint's forward (``cache.layers``).
    """
    deepest = max(layers)
    for layer in layers:
        _check_hook(model, layer, hook)
        name = f"blocks.{layer}.hook_{hook}"
        if (layer != deepest or hook != "resid_pre") and name not in model.hook_dict:
            raise ValueError(f"layer = {layer} is invalid for several layers at once: the model has no {name}.")
    held: dict[int, torch.Tensor] = {}

    def keeper(layer: int) -> Any:
        def keep(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            held[layer] = output
            if layer == deepest:
                raise _Captured

        return keep

    kept = [layer for layer in dict.fromkeys(layers) if layer != deepest or hook != "resid_pre"]
    handles = [model.hook_dict[f"blocks.{layer}.hook_{hook}"].register_forward_hook(keeper(layer)) for layer in kept]
    try:
        with torch.inference_mode():
            out = model(tokens, stop_at_layer=deepest + (hook != "resid_pre"))
        held[deepest] = out  # resid_pre: the residual entering block `deepest` (no hook fired past it)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if deepest not in held:
        raise RuntimeError(f"the forward pass never reached blocks.{deepest}.hook_{hook}.")
    return [held[layer] for layer in layers]


def residual_at_layer(model: Any, tokens: torch.Tensor, layer: int, hook: str = "resid_pre") -> torch.Tensor:
    """The activation ``x^(l, C, q, t)`` of Eq. 6: by default ``blocks.{layer}.hook_resid_pre``, the forward pass
    stopped there (:func:`activation_at_hook`, which any other ``hook`` goes through as well)."""
    return activation_at_hook(model, tokens, layer, hook)


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
    hook: str = "resid_pre",
    ranks: Ranks = SINGLE,
) -> Iterator[torch.Tensor]:
    """Eq. 6 activations at ``blocks.{layer}.hook_{hook}`` (:func:`activation_at_hook`) of ``tokens``
    ``[n_contexts, ctx]``: one float32 ``[rows, d]`` tensor per batch, on ``device``.

    Batches are ``batch_contexts`` contexts counted from context 0 (so skipping to ``first_context`` keeps the same
    batch boundaries, and thus bit-identical activations); values are rounded through ``store_dtype`` as the cache
    stores them. Rows are ``c * ctx + q`` in the order of the contexts. ``tf32`` allows TF32 matmuls during each
    batch's forward only (:func:`forward_context`), never while the consumer runs between batches. With several
    ``ranks`` the batches are dealt out (rank ``r`` runs the model on every ``W``-th) and every rank receives every
    batch's rows (:func:`~saetrack.distributed.gather.dealt_out`): the same rows, ``W`` times fewer forwards each.
    """
    n_contexts, ctx = tokens.shape
    begin = (first_context // batch_contexts) * batch_contexts

    def batch_rows(start: int) -> torch.Tensor:
        # one batch of token ids as int64 on the host, uploaded pinned and non-blocking when the model is on CUDA
        ids = np.asarray(tokens[start : start + batch_contexts], dtype=np.int64)
        batch = to_device(torch.from_numpy(ids if ids.flags.writeable else ids.copy()), device)
        with forward_context(device, forward_dtype, tf32):
            resid = activation_at_hook(model, batch, layer, hook)
        resid = resid.to(store_dtype).float().clone()  # a normal tensor (autograd may save it), not an inference one
        if start < first_context:
            resid = resid[first_context - start :]
        return resid.reshape(-1, resid.shape[-1])

    def n_rows(start: int) -> int:
        return (min(start + batch_contexts, n_contexts) - max(start, first_context)) * ctx

    starts = range(begin, n_contexts, batch_contexts)
    width = int(model.cfg.d_model) if ranks.distributed else 0  # the gathered rows' width
    yield from dealt_out(starts, batch_rows, n_rows, width, torch.empty(0, device=device), ranks)


def layered_chunks(
    model: Any,
    tokens: np.ndarray,
    layers: Sequence[int],
    *,
    batch_contexts: int,
    device: str | torch.device,
    store_dtype: torch.dtype = torch.float32,
    forward_dtype: str = "float32",
    tf32: bool = False,
    hook: str = "resid_pre",
    first_context: int = 0,
) -> Iterator[list[torch.Tensor]]:
    """:func:`residual_chunks` for several layers from one forward per batch (:func:`activations_at_hooks`): per
    batch of ``batch_contexts`` contexts, one float32 ``[rows, d]`` tensor per layer of ``layers``, each equal to the
    chunk :func:`residual_chunks` yields for that layer alone (the same batches counted from context 0, whatever
    ``first_context``; the same storage rounding)."""
    begin = (first_context // batch_contexts) * batch_contexts
    for start in range(begin, len(tokens), batch_contexts):
        ids = np.asarray(tokens[start : start + batch_contexts], dtype=np.int64)
        batch = to_device(torch.from_numpy(ids if ids.flags.writeable else ids.copy()), device)
        with forward_context(device, forward_dtype, tf32):
            values = activations_at_hooks(model, batch, layers, hook)
        skip = max(first_context - start, 0)
        yield [v[skip:].to(store_dtype).float().clone().reshape(-1, v.shape[-1]) for v in values]


def truncate_at_layer(model: Any, layer: int, hook: str = "resid_pre") -> Any:
    """``model`` (a ``HookedTransformer``) cut to what :func:`activation_at_hook` at ``layer`` and ``hook`` runs:
    blocks ``0 .. layer-1`` kept (``0 .. layer`` for any hook but ``resid_pre``), later blocks, ``ln_final`` and
    ``unembed`` dropped (their memory freed), hooks re-indexed.

    In place; returns ``model``. The activations at the hook are bit-identical to the full model's; anything needing
    logits (the CE loss recovered of the link evaluation) needs the full model instead.
    """
    _check_hook(model, layer, hook)
    model.blocks = model.blocks[: layer + (hook != "resid_pre")]
    model.ln_final = None
    model.unembed = None
    model.setup()  # the hook dictionary of the blocks kept only
    return model


def fill_activations(
    run: RunConfig, model: Any, tokens: np.ndarray, out: np.ndarray, device: str, desc: str = "", progress: bool = False
) -> None:
    """Write the Eq. 6 activations of ``tokens`` ``[n, ctx]`` at the run's hook (``cache.hook_name``) into ``out``
    ``[n * ctx, d]``, batch by batch, with the cache's batching, storage dtype and forward dtype (the activation cache
    and the crosscoder's aligned activations both write through here)."""
    chunks = residual_chunks(
        model,
        tokens,
        run.cache.layer,
        batch_contexts=run.cache.batch_contexts,
        device=device,
        store_dtype=TORCH_DTYPES[run.cache.dtype],
        forward_dtype=run.cache.forward_dtype,
        tf32=run.cache.tf32,
        hook=run.cache.hook,
    )
    total = -(-len(tokens) // run.cache.batch_contexts)
    row = 0
    for chunk in tqdm(chunks, total=total, desc=desc, disable=not progress, leave=False):
        out[row : row + len(chunk)] = chunk.cpu().numpy()
        row += len(chunk)
