"""nanoGPT's CPU recipe, seed by seed: Lanterne's trainer beside a plain-PyTorch statement of the recipe.

nanoGPT's README runs char-level Shakespeare on a CPU with 4 layers, 4 heads, 128 dims, context 64,
batch 12, 2,000 steps, lr 1e-3 decaying to 1e-4, dropout 0, and reports "a loss of only 1.88". That
figure is one seed, estimated on 20 random validation batches. nanoGPT is not on PyPI, so this script
restates its recipe in plain PyTorch (the `Reference*` classes below: model, init, AdamW groups, LR
schedule, clipping, sampling and evaluation, step for step as nanoGPT's train.py and model.py do them),
trains it and Lanterne's trainer on the same seeds, and scores both two ways:

- nanoGPT's own estimate: the mean loss of 20 random validation batches of 12 x 64 (noisy);
- the whole validation text (the last 10%), cut into non-overlapping windows of 64: the same numbers
  for every model, so the seeds' spread is the models' own.

    python benchmarks/nanogpt_recipe.py [--seeds 1337 1 2 3 4] [--out benchmarks/results/nanogpt_recipe.json] [--quick]

About 2 x 100 s per seed on a 2-core laptop CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import lanterne
from lanterne.files import atomic_write_text, read_text_file
from lanterne.training.trainer import TrainingConfig, train

RECIPE = dict(n_layers=4, n_heads=4, d_model=128, context_length=64, batch_size=12, steps=2000, learning_rate=1e-3,
              min_learning_rate=1e-4, warmup_steps=100, weight_decay=0.1, betas=(0.9, 0.99), grad_clip=1.0,
              eval_interval=250, eval_batches=20)
PUBLISHED = 1.88


# -- the reference: nanoGPT's recipe in plain PyTorch ------------------------------------------------


class ReferenceBlock(nn.Module):
    """Pre-norm block without biases (nanoGPT's bias=False): attention, then a 4x GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attention_out = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time_, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, time_, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, time_, width)
        x = x + self.attention_out(mixed)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class ReferenceGPT(nn.Module):
    """Token + position embeddings, blocks, final norm, a head tied to the token embedding; nanoGPT's init."""

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(ReferenceBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.token.weight = self.head.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
        for block in self.blocks:  # residual projections: 0.02 / sqrt(2 * layers)
            for projection in (block.attention_out, block.down):
                nn.init.normal_(projection.weight, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.token(ids) + self.position(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1))


def reference_run(text: str, seed: int) -> dict:
    """Train the reference on nanoGPT's split and schedule; its RNG is drawn in nanoGPT's order."""
    r = RECIPE
    characters = sorted(set(text))
    index = {c: i for i, c in enumerate(characters)}
    cut = int(len(text) * 0.9)
    splits = {name: np.array([index[c] for c in part], dtype=np.int64) for name, part in (("train", text[:cut]), ("val", text[cut:]))}
    torch.manual_seed(seed)
    model = ReferenceGPT(len(characters), r["context_length"], r["d_model"], r["n_heads"], r["n_layers"])
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": r["weight_decay"]}, {"params": others, "weight_decay": 0.0}],
                                  lr=r["learning_rate"], betas=r["betas"])

    def batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        data = splits[split]
        starts = torch.randint(len(data) - r["context_length"], (r["batch_size"],)).numpy()
        windows = torch.from_numpy(data[starts[:, None] + np.arange(r["context_length"] + 1)])
        return windows[:, :-1], windows[:, 1:]

    def learning_rate(step: int) -> float:
        if step < r["warmup_steps"]:
            return r["learning_rate"] * step / r["warmup_steps"]
        progress = (step - r["warmup_steps"]) / (r["steps"] - r["warmup_steps"])
        return r["min_learning_rate"] + 0.5 * (1 + math.cos(math.pi * progress)) * (r["learning_rate"] - r["min_learning_rate"])

    @torch.no_grad()
    def estimate() -> float:
        model.eval()
        means = {split: sum(model(*batch(split)).item() for _ in range(r["eval_batches"])) / r["eval_batches"] for split in ("train", "val")}
        model.train()
        return means["val"]

    started = time.perf_counter()
    inputs, targets = batch("train")
    for step in range(r["steps"] + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        if step % r["eval_interval"] == 0:
            estimated = estimate()  # draws from the same RNG as training batches, as nanoGPT's does
        if step == r["steps"]:
            break
        loss = model(inputs, targets)
        inputs, targets = batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    model.eval()
    whole = whole_validation_loss(lambda x, y: model(x, y).item(), splits["val"])
    return {"estimate_20_batches": estimated, "whole_validation": whole, "seconds": seconds}


# -- Lanterne's trainer --------------------------------------------------------------------------------


def lanterne_run(data: str, text: str, seed: int) -> dict:
    r = RECIPE
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = train(TrainingConfig(
            data=data, tokenizer="char", out=folder, preset="tiny", max_steps=r["steps"], batch_size=r["batch_size"],
            learning_rate=r["learning_rate"], min_learning_rate=r["min_learning_rate"], warmup_steps=r["warmup_steps"],
            weight_decay=r["weight_decay"], beta1=r["betas"][0], beta2=r["betas"][1], grad_clip=r["grad_clip"],
            eval_interval=r["eval_interval"], eval_batches=r["eval_batches"], seed=seed, progress=False,
            model={"n_layers": r["n_layers"], "n_heads": r["n_heads"], "d_model": r["d_model"], "context_length": r["context_length"], "dropout": 0.0},
        ))
        seconds = time.perf_counter() - started
        model, tokenizer = lanterne.load(folder)
    model.eval()
    validation = np.array(tokenizer.encode(text[int(len(text) * 0.9):]), dtype=np.int64)
    whole = whole_validation_loss(lambda x, y: model(x, y).loss.item(), validation)
    return {"estimate_20_batches": result.final_validation_loss, "whole_validation": whole, "seconds": seconds,
            "tokens_per_s": result.tokens_per_second}


def whole_validation_loss(loss_of, ids: np.ndarray, context: int = RECIPE["context_length"], rows: int = 128) -> float:
    """Mean next-token loss over every non-overlapping window of `context` tokens of the validation ids."""
    count = (len(ids) - 1) // context
    inputs = torch.from_numpy(ids[: count * context].reshape(count, context))
    targets = torch.from_numpy(ids[1: count * context + 1].reshape(count, context))
    with torch.no_grad():
        total = sum(loss_of(inputs[i:i + rows], targets[i:i + rows]) * len(inputs[i:i + rows]) for i in range(0, count, rows))
    return total / count


def summary(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2, 3, 4])
    parser.add_argument("--out", default="benchmarks/results/nanogpt_recipe.json")
    parser.add_argument("--quick", action="store_true", help="40 steps, to check the script")
    args = parser.parse_args()
    if args.quick:
        RECIPE.update(steps=40, warmup_steps=10, eval_interval=20)
    try:
        text = read_text_file(args.data)
    except lanterne.LanterneError as error:
        print(f"nanoGPT recipe benchmark: {error}", file=sys.stderr)
        return 1
    runs = {"lanterne": {}, "reference": {}}
    for seed in args.seeds:
        runs["lanterne"][seed] = lanterne_run(args.data, text, seed)
        runs["reference"][seed] = reference_run(text, seed)
        print(f"seed {seed}: " + "; ".join(
            f"{name} 20 batches {r[seed]['estimate_20_batches']:.4f}, whole validation {r[seed]['whole_validation']:.4f} ({r[seed]['seconds']:.0f} s)"
            for name, r in runs.items()), flush=True)
    summaries = {name: {measure: summary([run[measure] for run in r.values()]) for measure in ("estimate_20_batches", "whole_validation")}
                 for name, r in runs.items()}
    for name, measures in summaries.items():
        print(f"{name:>9}: " + ", ".join(f"{m} {s['mean']:.4f} ± {s['stdev']:.4f} ({s['min']:.4f}-{s['max']:.4f})" for m, s in measures.items()))
    result = {
        "benchmark": "nanoGPT's shakespeare_char CPU recipe: Lanterne's trainer vs a plain-PyTorch statement of the recipe, same seeds",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(), "torch": torch.__version__},
        "recipe": {**RECIPE, "betas": list(RECIPE["betas"])},
        "lanterne_dtype": "trainer default (dtype=auto: bf16 autocast where the CPU computes bf16 natively, else fp32)",
        "published_nanogpt_figure": PUBLISHED,
        "runs": {name: {str(seed): run for seed, run in r.items()} for name, r in runs.items()},
        "summary": summaries,
        "whole_validation_difference_of_means": summaries["lanterne"]["whole_validation"]["mean"] - summaries["reference"]["whole_validation"]["mean"],
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
