"""Training speed: Lanterne's GPT beside HuggingFace's GPT2LMHeadModel in the same loop, same run.

Both models start from the same weights and see the same batches of character-level Shakespeare
with the same AdamW schedule; we report tokens per second, the final loss of each, and MFU
against the measured matrix-multiply peak of this machine.

    python benchmarks/training.py [--steps-small 300] [--steps-large 30] [--out benchmarks/results/training.json] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# This folder holds tokenizers.py, which would hide HuggingFace's `tokenizers` package from transformers.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import torch  # noqa: E402

from lanterne.config import GPTConfig  # noqa: E402
from lanterne.errors import LanterneError  # noqa: E402
from lanterne.files import atomic_write_text  # noqa: E402
from lanterne.training.data import prepare_corpus, sample_windows  # noqa: E402
from lanterne.training.hardware import cpu_has_bf16, matmul_peak_flops  # noqa: E402
from lanterne.training.schedule import learning_rate_at, make_optimizer  # noqa: E402
from lanterne.transformer import GPT  # noqa: E402

GOAL_SPEEDUP = 1.5
SETUPS = {
    # nanoGPT's shakespeare_char CPU settings
    "4 layers, 128 dims, context 64, batch 12": dict(n_layers=4, n_heads=4, d_model=128, context_length=64, batch_size=12),
    # nanoGPT's shakespeare_char GPU settings, run on the same CPU
    "6 layers, 384 dims, context 256, batch 12": dict(n_layers=6, n_heads=6, d_model=384, context_length=256, batch_size=12),
}


def models_with_the_same_weights(config: GPTConfig):
    """A random HF GPT2LMHeadModel and Lanterne's GPT holding the same numbers."""
    import transformers

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.d_model, n_head=config.n_heads,
            n_layer=config.n_layers, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT.from_pretrained(folder)
    return ours.train(), hf.train()


def train_steps(loss_of, model, corpus, context_length: int, batch_size: int, steps: int, peak: float, *, warmup: int = 3) -> dict:
    """The shared loop: AdamW (decay on matrices), warmup + cosine, clipping at 1.0; timing excludes `warmup` steps."""
    optimizer = make_optimizer(model, learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.99), device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(1337)
    losses, started = [], None
    for step in range(steps + warmup):
        if step == warmup:
            started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, peak=1e-3, minimum=1e-4, warmup_steps=10, decay_steps=steps + warmup)
        inputs, targets = sample_windows(corpus.train, batch_size, context_length, generator)
        loss = loss_of(model, inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    tokens_per_second = steps * batch_size * context_length / seconds
    return {"tokens_per_s": tokens_per_second, "seconds_per_step": seconds / steps, "final_loss": sum(losses[-10:]) / 10}


def ours_loss(model, inputs, targets):
    return model(inputs, targets, check=False).loss  # as the trainer calls it: its ids come from its tokenizer


def ours_bf16_loss(model, inputs, targets):
    # The trainer's dtype=bfloat16: matrix products in bf16 (native on AVX512-BF16/AMX CPUs), the rest fp32.
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        return model(inputs, targets, check=False).loss


def hf_loss(model, inputs, targets):
    # Our targets are already shifted by one; HF's `labels` would shift again, so the loss is taken here, as ours is.
    logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--steps-small", type=int, default=300)
    parser.add_argument("--steps-large", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="also time Lanterne under torch.compile")
    parser.add_argument("--out", default="benchmarks/results/training.json")
    parser.add_argument("--quick", action="store_true", help="a few steps, to check the script")
    args = parser.parse_args()
    try:
        corpus = prepare_corpus(args.data, "char", show_progress=False)
    except LanterneError as error:
        print(f"training benchmark: {error}", file=sys.stderr)
        return 1
    peak = matmul_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0)
    peak_bf16 = matmul_peak_flops(torch.device("cpu"), torch.bfloat16, seconds=1.0) if cpu_has_bf16() else None
    print(f"measured matmul peak: fp32 {peak / 1e9:.1f} GFLOP/s, bf16 {(peak_bf16 or 0) / 1e9:.1f}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for name, setup in SETUPS.items():
        steps = 5 if args.quick else (args.steps_small if setup["context_length"] == 64 else args.steps_large)
        config = GPTConfig(
            vocab_size=corpus.tokenizer.vocab_size, context_length=setup["context_length"], d_model=setup["d_model"],
            n_heads=setup["n_heads"], n_layers=setup["n_layers"], activation="gelu", bias=True,
        )
        ours, hf = models_with_the_same_weights(config)
        shape = (corpus, config.context_length, setup["batch_size"], steps, peak)
        contenders = {"lanterne": (ours_loss, ours), "huggingface": (hf_loss, hf)}
        if args.compile:
            compiled_ours, _ = models_with_the_same_weights(config)
            contenders["lanterne (torch.compile)"] = (ours_loss, torch.compile(compiled_ours))
        if cpu_has_bf16():
            bf16_ours, _ = models_with_the_same_weights(config)
            contenders["lanterne (bf16 autocast)"] = (ours_bf16_loss, bf16_ours)
            if args.compile:
                bf16_compiled, _ = models_with_the_same_weights(config)
                contenders["lanterne (bf16 + compile)"] = (ours_bf16_loss, torch.compile(bf16_compiled))
        results = {}
        for label, (loss_of, model) in contenders.items():
            result = train_steps(loss_of, model, *shape)
            flops_per_token = ours.flops_per_token(config.context_length)
            result["mfu"] = flops_per_token * result["tokens_per_s"] / (peak_bf16 if "bf16" in label else peak)
            results[label] = result
            print(f"{name} | {label:>24}: {result['tokens_per_s']:8.0f} tok/s, final loss {result['final_loss']:.4f}, MFU {100 * result['mfu']:.1f}%", flush=True)
        hf_speed = results["huggingface"]["tokens_per_s"]
        speedups = {label: result["tokens_per_s"] / hf_speed for label, result in results.items() if label != "huggingface"}
        speedup = results["lanterne"]["tokens_per_s"] / hf_speed
        rows.append({"setup": name, "steps": steps, "parameters": ours.num_parameters(), "results": results, "speedup": speedup,
                     "speedups": speedups, "loss_difference": results["lanterne"]["final_loss"] - results["huggingface"]["final_loss"]})
        print(f"{name}: " + ", ".join(f"{label} / HF = {value:.2f}x" for label, value in speedups.items()), flush=True)
    result = {
        "benchmark": "training tokens/s, same loop, same weights, same batches (char-level tinyshakespeare)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_peak_gflops": peak / 1e9,
                    "bf16_matmul_peak_gflops": peak_bf16 / 1e9 if peak_bf16 else None},
        "rows": rows,
        "goal": f"lanterne >= {GOAL_SPEEDUP}x HF tokens/s at equal loss (HF in fp32 eager)",
        "goal_met_eager_fp32": {row["setup"]: row["speedup"] >= GOAL_SPEEDUP for row in rows},
        "goal_met_best_option": {row["setup"]: max(row["speedups"].values()) >= GOAL_SPEEDUP for row in rows},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
