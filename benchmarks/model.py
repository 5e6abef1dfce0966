"""Forward throughput of Lanterne's GPT beside HuggingFace's GPT2LMHeadModel, same weights, same run.

GPT-2 124M with random weights, fp32 and bf16, sequences of 256 and 1,024 tokens: tokens per
second for each model, their ratio, and a check that both computed the same logits.

    python benchmarks/model.py [--out benchmarks/results/model.json] [--repeat 3] [--quick]
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
from lanterne.files import atomic_write_text  # noqa: E402
from lanterne.model.transformer import GPT  # noqa: E402

GOAL_RATIO = 1.0  # ours / HF tokens per second, on CPU


def best_seconds_interleaved(runs, repeat: int) -> list[float]:
    """Best wall time of each run, timed in turns (A, B, A, B, ...) so that a passing load hits both alike."""
    for run in runs:
        run()  # warm-up: allocations, kernel selection
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def build_models(config: GPTConfig):
    """A random HF GPT-2 and the same weights in Lanterne (through the HF folder format)."""
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.d_model,
        n_head=config.n_heads, n_layer=config.n_layers, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT.from_pretrained(folder).eval()
    return ours, hf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/model.json")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a 2-layer model, to check the script")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    config = GPTConfig.preset("gpt2")
    if args.quick:
        config = config.with_changes(n_layers=2)
    ours, hf = build_models(config)
    device = torch.device(args.device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        ours_typed, hf_typed = ours.to(device=device, dtype=dtype), hf.to(device=device, dtype=dtype)
        for sequence in (256, 1024):
            ids = torch.randint(0, config.vocab_size, (1, sequence), generator=torch.Generator().manual_seed(1)).to(device)

            def run_ours():
                with torch.inference_mode():
                    logits = ours_typed(ids).logits
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return logits

            def run_hf():
                with torch.inference_mode():
                    logits = hf_typed(ids, use_cache=False).logits
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return logits

            difference = (run_ours().float() - run_hf().float()).abs().max().item()
            ours_seconds, hf_seconds = best_seconds_interleaved([run_ours, run_hf], args.repeat)
            row = {
                "dtype": str(dtype).replace("torch.", ""),
                "sequence": sequence,
                "ours_tokens_per_s": sequence / ours_seconds,
                "hf_tokens_per_s": sequence / hf_seconds,
                "ratio": hf_seconds / ours_seconds,
                "max_abs_logit_difference": difference,
            }
            rows.append(row)
            print(
                f"{row['dtype']:>8} seq {sequence:>5}: ours {row['ours_tokens_per_s']:9.1f} tok/s, "
                f"HF {row['hf_tokens_per_s']:9.1f} tok/s, ratio {row['ratio']:.2f}x, max |Δlogit| {difference:.1e}",
                flush=True,
            )
    result = {
        "benchmark": "model forward throughput, batch 1",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)},
        "model": {"preset": "gpt2" if not args.quick else "gpt2 (2 layers, --quick)", "parameters": ours.num_parameters()},
        "rows": rows,
        "goal": f"ours >= {GOAL_RATIO}x HF tokens/s",
        "goal_met": all(row["ratio"] >= GOAL_RATIO for row in rows),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"goal {'met' if result['goal_met'] else 'NOT met'}: {result['goal']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
