"""Check: ``saetrack watch`` at its default settings on a 768-wide GPT-NeoX training run gives usable links.

The case that motivated the sparsity calibration: a new user points SAE-Track at their own 768-wide GPT-NeoX model
with a few checkpoints and sets nothing. This script builds such a run here, offline, then watches it:

1. **The model**: Pythia-160m's configuration (d_model 768, 12 heads, MLP 3072, rotary 25%, parallel residual,
   vocab 50304) with ``--layers`` layers (default 4), Hugging Face's own initialisation (seeded). The tokenizer is a
   byte-level BPE tokenizer trained here on the State of the Union corpus (4096 tokens; the embedding keeps Pythia's
   50304 rows).
2. **The checkpoints** (``save_pretrained``, one per step of ``--steps``, default 0, 10, 30, then the
   ``saetrack.done`` marker): with ``--random`` (the acceptance check), random weights, a fresh initialisation per
   checkpoint (seeds ``--seed`` + i); else a training run, AdamW at Pythia-160m's learning rate (6e-4) on that corpus
   from one initialisation, so the checkpoints are its first optimizer steps (the harder case: the residual stream's
   scale changes several-fold between them).
3. **The watch**: ``python -m saetrack watch FOLDER`` with no ``--set`` at all (the default preset's budgets; the
   penalty calibrated to the default target L0, ``min(32, d_model/4)`` = 32; the continuity rules at the watch's
   defaults: the outcome rule on, ``chain.restart_l0_ratio`` = 2, the carried-variance rule off).

The check, fixed before the run: every link has explained variance >= 0.5 and an L0 within +-20% of the target
(held-out tokens, the link manifests' metrics). Prints one row per link and the verdict, writes ``check.json`` in
``--work``, and exits 1 when a link fails. Run::

    python benchmarks/check_watch_defaults.py --work runs/watch-768 --random   # about an hour on 2 CPU cores
    python benchmarks/check_watch_defaults.py --work runs/watch-768-trained    # the first steps of a training run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from saetrack.data.documents import Document, split_documents
from saetrack.data.english import sotu_documents
from saetrack.data.tokens import build_tokenizer, tokenize_stream

#: Pythia-160m's ``config.json`` values (EleutherAI/pythia-160m), the layer count aside.
PYTHIA_160M: dict[str, Any] = dict(
    vocab_size=50304,
    hidden_size=768,
    num_attention_heads=12,
    intermediate_size=3072,
    rotary_pct=0.25,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    initializer_range=0.02,
    tie_word_embeddings=False,
)
#: Pythia-160m's peak learning rate.
LEARNING_RATE = 6e-4
MIN_EXPLAINED_VARIANCE = 0.5
L0_TOLERANCE = 0.2


def build_random_run(folder: Path, layers: int, steps: list[int], seed: int) -> None:
    """Save a freshly initialised model (seed ``seed + i``) as the checkpoint of the ``i``-th of ``steps``."""
    build_tokenizer_folder(folder)
    for i, step in enumerate(steps):
        torch.manual_seed(seed + i)
        GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M, num_hidden_layers=layers)).save_pretrained(
            folder / f"step{step}"
        )
        print(f"saved step{step} (random weights, seed {seed + i})", flush=True)
    (folder / "saetrack.done").write_text("")


def build_tokenizer_folder(folder: Path) -> tuple[Any, list[str]]:
    """Train the BPE tokenizer of the module doc, save it in ``folder/tokenizer``; return it and the training texts."""
    docs = [Document(name, text) for name, text in sotu_documents()]
    train_docs, _ = split_documents(docs, 0.05)
    texts = [doc.text for doc in train_docs]
    tokenizer = build_tokenizer(texts, 4096)
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    return tokenizer, texts


def build_training_run(folder: Path, layers: int, steps: list[int], seed: int, batch: int, context: int) -> None:
    """Train the model of the module doc and save a checkpoint at each of ``steps`` into ``folder/step{N}``."""
    tokenizer, texts = build_tokenizer_folder(folder)
    tokens = torch.from_numpy(tokenize_stream(tokenizer, texts).astype(np.int64))
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M, num_hidden_layers=layers))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    for step in range(max(steps) + 1):
        if step in steps:
            model.save_pretrained(folder / f"step{step}")
            print(f"saved step{step}", flush=True)
        if step == max(steps):
            break
        starts = torch.randint(0, tokens.numel() - context, (batch,), generator=generator)
        batch_tokens = torch.stack([tokens[s : s + context] for s in starts.tolist()])
        loss = model(batch_tokens, labels=batch_tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step + 1}: loss {loss.item():.3f}", flush=True)
    (folder / "saetrack.done").write_text("")


def link_rows(run_dir: Path) -> tuple[float, list[dict[str, float]]]:
    """The calibration's target L0 and each link's held-out metrics, read from the run directory."""
    target = float(json.loads((run_dir / "chain" / "calibration.json").read_text())["target_l0"])
    rows = []
    for manifest in sorted(run_dir.glob("chain/step*/manifest.json"), key=lambda p: int(p.parent.name[4:])):
        link = json.loads(manifest.read_text())["link"]
        metrics = link["metrics"]
        rows.append({"step": link["step"], "explained_variance": metrics["explained_variance"], "l0": metrics["l0"],
                     "dead_fraction": metrics["dead_fraction"], "l1_coefficient": link["l1_coefficient"],
                     "train_s": link["training"]["wall_time_s"], "restarted": bool(link.get("restarted")),
                     "restart_cause": link.get("restart_cause"), "previous_l0": link.get("previous_l0"),
                     "continued_l0": link.get("continued_l0"),
                     "carried_explained_variance": link.get("carried_explained_variance")})  # fmt: skip
    return target, rows


def continuity(row: dict[str, Any]) -> str:
    """The continuity rules' readings of a link row: the continued link's L0 against the previous link's, the
    carried explained variance when that rule was on, and whether the chain restarted there."""
    parts = []
    if row["carried_explained_variance"] is not None:
        parts.append(f"carried EV {row['carried_explained_variance']:.3f}")
    if row["continued_l0"] is not None:
        parts.append(f"continued L0 {row['continued_l0']:.1f} vs previous {row['previous_l0']:.1f}")
    if row["restarted"]:
        parts.append(f"restart ({row['restart_cause']})")
    return ", ".join(parts) or "-"


def verdict(target: float, rows: list[dict[str, float]]) -> list[str]:
    """The failures of the fixed rule (module doc), one line each; empty when every link passes."""
    failures = []
    for row in rows:
        if row["explained_variance"] < MIN_EXPLAINED_VARIANCE:
            failures.append(f"step {row['step']}: explained variance {row['explained_variance']:.3f} < 0.5")
        if abs(row["l0"] / target - 1) > L0_TOLERANCE:
            failures.append(f"step {row['step']}: L0 {row['l0']:.1f} outside {target:g} +- 20%")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the checkpoints and the run directory")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 10, 30])
    parser.add_argument("--batch", type=int, default=8, help="training contexts per optimizer step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random", action="store_true", help="random-weight checkpoints (the acceptance check)")
    args = parser.parse_args()
    folder, run_dir = args.work / "checkpoints", args.work / "run"
    started = time.perf_counter()
    if not (folder / "saetrack.done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        if args.random:
            build_random_run(folder, args.layers, sorted(args.steps), args.seed)
        else:
            build_training_run(folder, args.layers, sorted(args.steps), args.seed, args.batch, 128)
    trained = time.perf_counter()
    command = [sys.executable, "-m", "saetrack", "watch", str(folder), "--run-dir", str(run_dir),
               "--settle", "0", "--poll", "1"]  # fmt: skip
    print("$", " ".join(command), flush=True)
    code = subprocess.run(command).returncode
    if code != 0:
        print(f"saetrack watch exited with {code}")
        return 1
    target, rows = link_rows(run_dir)
    print(f"\ntarget L0 {target:g}; pass: explained variance >= 0.5 and L0 within +-20% at every link")
    print("step  explained_var  L0     dead   SAELens-L1 train_s  continuity")
    for row in rows:
        print(f"{row['step']:>4}  {row['explained_variance']:>13.3f}  {row['l0']:>5.1f}  {row['dead_fraction']:>5.3f}"
              f"  {row['l1_coefficient']:.3g}  {row['train_s']:>7.1f}  {continuity(row)}")  # fmt: skip
    failures = verdict(target, rows)
    print("\n".join(failures) if failures else "PASS: every link")
    result = {"target_l0": target, "links": rows, "failures": failures, "layers": args.layers, "steps": args.steps,
              "random": args.random, "calibration": json.loads((run_dir / "chain" / "calibration.json").read_text()),
              "training_run_s": trained - started, "watch_s": time.perf_counter() - trained}  # fmt: skip
    (args.work / "check.json").write_text(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
