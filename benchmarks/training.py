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

from lanterne.model.config import GPTConfig  # noqa: E402
from lanterne.errors import LanterneError  # noqa: E402
from lanterne.files import atomic_write_text  # noqa: E402
from lanterne.training.data import prepare_corpus, sample_windows  # noqa: E402
from lanterne.training.hardware import cpu_has_bf16, matmul_peak_flops  # noqa: E402
from lanterne.training.schedule import learning_rate_at, make_optimizer  # noqa: E402
from lanterne.model.transformer import GPT  # noqa: E402

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

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.d_model, n_head=config.n_heads,
            n_layer=config.n_layers, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=None, eos_token_id=None,  # GPT-2's 50256 lies outside a character vocabulary
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT.from_pretrained(folder)
    return ours.train(), hf.train()


class Contender:
    """One model in the race: its own optimizer and batch stream, advanced a chunk of steps at a time."""

    def __init__(self, loss_of, model, corpus, context_length: int, batch_size: int, steps: int) -> None:
        # The shared recipe: AdamW (decay on matrices), warmup + cosine, clipping at 1.0.
        self.loss_of, self.model, self.corpus = loss_of, model, corpus
        self.context_length, self.batch_size, self.steps = context_length, batch_size, steps
        self.optimizer = make_optimizer(model, learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.99), device=torch.device("cpu"))
        self.generator = torch.Generator().manual_seed(1337)
        self.step, self.seconds, self.timed_steps, self.losses = 0, 0.0, 0, []

    def run(self, count: int, *, timed: bool = True) -> None:
        started = time.perf_counter()
        for _ in range(count):
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate_at(self.step, peak=1e-3, minimum=1e-4, warmup_steps=10, decay_steps=self.steps)
            inputs, targets = sample_windows(self.corpus.train, self.batch_size, self.context_length, self.generator)
            loss = self.loss_of(self.model, inputs, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.losses.append(loss.item())
            self.step += 1
        if timed:
            self.seconds += time.perf_counter() - started
            self.timed_steps += count

    def result(self) -> dict:
        tokens_per_second = self.timed_steps * self.batch_size * self.context_length / self.seconds
        return {"tokens_per_s": tokens_per_second, "seconds_per_step": self.seconds / self.timed_steps,
                "final_loss": sum(self.losses[-10:]) / 10}


def race(contenders: dict[str, Contender], steps: int, *, chunk: int, warmup: int = 3) -> None:
    """Warm every contender up (untimed), then advance them in turn, `chunk` steps each, until all ran `steps`.

    Interleaving puts every model through the same moments of a machine whose speed drifts (a shared VM's does).
    """
    for contender in contenders.values():
        contender.run(warmup, timed=False)
    remaining = steps - warmup
    while remaining > 0:
        count = min(chunk, remaining)
        for contender in contenders.values():
            contender.run(count)
        remaining -= count


def ours_loss(model, inputs, targets):
    return model(inputs, targets, check=False).loss  # as the trainer calls it: its ids come from its tokenizer


def hf_loss(model, inputs, targets):
    # Our targets are already shifted by one; HF's `labels` would shift again, so the loss is taken here, as ours is.
    logits = model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1))


def in_bf16(loss_of):
    """The same loss under bf16 autocast: matrix products in bf16 (native on AVX512-BF16/AMX CPUs), weights fp32."""

    def bf16_loss(model, inputs, targets):
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return loss_of(model, inputs, targets)

    return bf16_loss


def measured_peaks() -> tuple[float, float | None]:
    fp32 = matmul_peak_flops(torch.device("cpu"), torch.float32, seconds=1.0)
    bf16 = matmul_peak_flops(torch.device("cpu"), torch.bfloat16, seconds=1.0) if cpu_has_bf16() else None
    return fp32, bf16


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
    peaks = [measured_peaks()]
    rows = []
    for name, setup in SETUPS.items():
        steps = 6 if args.quick else (args.steps_small if setup["context_length"] == 64 else args.steps_large)
        config = GPTConfig(
            vocab_size=corpus.tokenizer.vocab_size, context_length=setup["context_length"], d_model=setup["d_model"],
            n_heads=setup["n_heads"], n_layers=setup["n_layers"], activation="gelu", bias=True,
        )
        ours, hf = models_with_the_same_weights(config)
        losses = {"lanterne": (ours_loss, ours), "huggingface": (hf_loss, hf)}
        if args.compile:
            losses["lanterne (torch.compile)"] = (ours_loss, torch.compile(models_with_the_same_weights(config)[0]))
        if cpu_has_bf16():
            bf16_ours, bf16_hf = models_with_the_same_weights(config)
            losses["lanterne (bf16 autocast)"] = (in_bf16(ours_loss), bf16_ours)
            losses["huggingface (bf16 autocast)"] = (in_bf16(hf_loss), bf16_hf)
            if args.compile:
                losses["lanterne (bf16 + compile)"] = (in_bf16(ours_loss), torch.compile(models_with_the_same_weights(config)[0]))
        contenders = {label: Contender(loss_of, model, corpus, config.context_length, setup["batch_size"], steps)
                      for label, (loss_of, model) in losses.items()}
        race(contenders, steps, chunk=max(1, min(10, steps // 15)))  # at least ~15 turns each
        results = {label: contender.result() for label, contender in contenders.items()}
        rows.append({"setup": name, "steps": steps, "parameters": ours.num_parameters(),
                     "flops_per_token": ours.flops_per_token(config.context_length), "results": results})
        for label, result in results.items():
            print(f"{name} | {label:>28}: {result['tokens_per_s']:8.0f} tok/s, final loss {result['final_loss']:.4f}", flush=True)
    peaks.append(measured_peaks())  # the machine's speed drifts: the best of before and after is the peak
    peak = max(p[0] for p in peaks)
    peak_bf16 = max((p[1] for p in peaks if p[1]), default=None)
    for row in rows:
        for label, result in row["results"].items():
            result["mfu"] = row["flops_per_token"] * result["tokens_per_s"] / (peak_bf16 if "bf16" in label else peak)
        speed = {label: result["tokens_per_s"] for label, result in row["results"].items()}
        row["speedups"] = {f"{label} / huggingface": value / speed["huggingface"] for label, value in speed.items() if label.startswith("lanterne")}
        if "huggingface (bf16 autocast)" in speed:
            row["speedups"]["lanterne (bf16 autocast) / huggingface (bf16 autocast)"] = speed["lanterne (bf16 autocast)"] / speed["huggingface (bf16 autocast)"]
        row["loss_difference"] = row["results"]["lanterne"]["final_loss"] - row["results"]["huggingface"]["final_loss"]
        print(f"{row['setup']}: " + ", ".join(f"{label} = {value:.2f}x" for label, value in row["speedups"].items()), flush=True)
    print(f"measured matmul peak: fp32 {peak / 1e9:.1f} GFLOP/s, bf16 {(peak_bf16 or 0) / 1e9:.1f}, {torch.get_num_threads()} threads")
    result = {
        "benchmark": "training tokens/s, same loop, same weights, same batches (char-level tinyshakespeare), interleaved in turns of up to 10 steps (at least ~15 turns each)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "matmul_peak_gflops": peak / 1e9,
                    "bf16_matmul_peak_gflops": peak_bf16 / 1e9 if peak_bf16 else None},
        "rows": rows,
        "goal": f"lanterne >= {GOAL_SPEEDUP}x HF tokens/s at equal loss",
        "goal_met_same_number_format": {
            row["setup"]: {label: value >= GOAL_SPEEDUP for label, value in row["speedups"].items()
                           if label in ("lanterne / huggingface", "lanterne (bf16 autocast) / huggingface (bf16 autocast)")}
            for row in rows
        },
        "goal_met_trainer_default_vs_hf_fp32": {
            row["setup"]: row["speedups"].get("lanterne (bf16 autocast) / huggingface", row["speedups"]["lanterne / huggingface"]) >= GOAL_SPEEDUP
            for row in rows
        },
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
