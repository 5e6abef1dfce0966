"""Generation speed and the cost of context: Lanterne beside HuggingFace `generate`, same weights, same run.

GPT-2 124M with random weights, batch 1, a 32-token prompt and 128 new greedy tokens, fp32 and
bf16; prefill speed at 1,024 tokens; decode time per token and peak memory at growing context
positions; forward time and memory at growing sequence lengths. JSON and a PNG chart out.

    python benchmarks/generation.py [--out benchmarks/results/generation.json] [--quick] [--device cpu|cuda]
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
from lanterne.generation.fast_decoding import disable_fast_decoding, enable_fast_decoding  # noqa: E402
from lanterne.files import atomic_path, atomic_write_text  # noqa: E402
from lanterne.generation import generate_ids  # noqa: E402
from lanterne.inspect.cost import PeakMemory, best_of, forward_cost_at, synchronize  # noqa: E402
from lanterne.generation.sampling import SamplingSettings  # noqa: E402
from lanterne.model.transformer import GPT  # noqa: E402

PROMPT_TOKENS = 32
NEW_TOKENS = 128
GOAL_SPEEDUP = 1.5  # ours / HF tokens per second, batch 1, CPU
GOAL_BANDWIDTH_FRACTION = 0.5  # of the memory-bandwidth bound
GREEDY = SamplingSettings(temperature=0)


# -- measuring ----------------------------------------------------------------------------------


def memory_bandwidth(device: torch.device, megabytes: int = 1024, repeat: int = 5) -> float:
    """Read bandwidth in bytes/s: the best time to sum a large fp32 tensor (every byte read once)."""
    data = torch.ones(megabytes * 2**20 // 4, device=device)
    return data.numel() * 4 / best_of(data.sum, repeat, device)


# -- the models ---------------------------------------------------------------------------------


def build_models(config: GPTConfig):
    import transformers

    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.context_length, n_embd=config.d_model, n_head=config.n_heads,
        n_layer=config.n_layers, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = GPT.from_pretrained(folder).eval()
    return ours, hf


def weight_bytes(model: GPT) -> int:
    """Bytes of parameters read for one decoded token (tied matrices once; position table: one row, ignored)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if model.embeddings.position is not None:
        total -= model.embeddings.position.weight.numel() * next(model.parameters()).element_size()
    return total


# -- the measurements ---------------------------------------------------------------------------


def decode_speed(ours, hf, prompt: torch.Tensor, repeat: int, device: torch.device) -> dict:
    """Tokens/s of 128 greedy tokens after a 32-token prompt: ours (plain, and with fast decoding) and HF's."""
    tokens: dict[str, list[int]] = {}

    def run_ours(label: str):
        def run():
            tokens[label] = [step[0] for step in generate_ids(ours, [prompt[0].tolist()], NEW_TOKENS, GREEDY)]

        return run

    def run_hf():
        with torch.inference_mode():
            output = hf.generate(
                prompt, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                pad_token_id=0, attention_mask=torch.ones_like(prompt),
            )
        tokens["hf"] = output[0, prompt.shape[1]:].tolist()

    plain_seconds = best_of(run_ours("plain"), repeat, device)
    enable_fast_decoding(ours)
    start = time.perf_counter()
    list(generate_ids(ours, [prompt[0].tolist()], 2, GREEDY))  # compiles the kernels
    compile_seconds = time.perf_counter() - start
    fast_seconds = best_of(run_ours("fast"), repeat, device)
    disable_fast_decoding(ours)
    hf_seconds = best_of(run_hf, repeat, device)
    return {
        "ours_tokens_per_s": NEW_TOKENS / fast_seconds,
        "ours_plain_tokens_per_s": NEW_TOKENS / plain_seconds,
        "hf_tokens_per_s": NEW_TOKENS / hf_seconds,
        "speedup": hf_seconds / fast_seconds,
        "speedup_plain": hf_seconds / plain_seconds,
        "fast_decoding_compile_seconds": compile_seconds,
        "same_tokens_as_hf": tokens["fast"] == tokens["hf"],
        "same_tokens_plain_and_fast": tokens["fast"] == tokens["plain"],
        "tokens_equal_to_hf_before_first_difference": next(
            (i for i, (a, b) in enumerate(zip(tokens["fast"], tokens["hf"])) if a != b), NEW_TOKENS
        ),
    }


@torch.inference_mode()
def prefill_speed(ours, length: int, repeat: int, device: torch.device) -> float:
    ids = torch.randint(0, ours.config.vocab_size, (1, length), device=device)

    def run():
        ours(ids, cache=ours.new_cache(1, length), last_only=True)  # sized as generation sizes it

    return length / best_of(run, repeat, device)


@torch.inference_mode()
def decode_cost_at(ours, position: int, steps: int, device: torch.device) -> dict:
    """ms per decoded token with `position` tokens already in the cache, and the peak memory of the
    cache (sized for this text) plus the prefill and decode work, above what the weights already use."""
    ids = torch.randint(0, ours.config.vocab_size, (1, position + steps), device=device)
    with PeakMemory(device) as memory:
        cache = ours.new_cache(1, position + steps)
        ours(ids[:, :position], cache=cache, last_only=True)
        synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            ours(ids[:, position + step : position + step + 1], cache=cache, last_only=True, check=False)
        synchronize(device)
        seconds = time.perf_counter() - start
    cache_bytes = cache.keys.numel() * cache.keys.element_size() * 2
    return {"position": position, "ms_per_token": 1000 * seconds / steps, "kv_cache_bytes": cache_bytes, "peak_added_bytes": memory.added}


def draw(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ((decode_time, decode_memory), (forward_time, forward_memory)) = plt.subplots(2, 2, figsize=(11, 8))
    decode = result["context_cost"]["decode"]
    forward = result["context_cost"]["forward"]
    positions = [row["position"] for row in decode]
    decode_time.plot(positions, [row["ms_per_token"] for row in decode], marker="o")
    decode_time.set(title="Decode: time per new token", xlabel="tokens already in context", ylabel="ms / token")
    decode_memory.plot(positions, [row["kv_cache_bytes"] / 2**20 for row in decode], marker="o", label="KV cache (computed)")
    if all(row["peak_added_bytes"] is not None for row in decode):
        decode_memory.plot(positions, [row["peak_added_bytes"] / 2**20 for row in decode], marker="x", label="peak added (measured)")
    decode_memory.set(title="Decode: KV cache and peak memory (prefill + decode)", xlabel="tokens already in context", ylabel="MiB")
    decode_memory.legend()
    lengths = [row["length"] for row in forward]
    forward_time.plot(lengths, [row["ms"] for row in forward], marker="o")
    forward_time.set(title="Forward pass over the whole sequence", xlabel="sequence length (tokens)", ylabel="ms")
    if all(row["peak_added_bytes"] is not None for row in forward):
        forward_memory.plot(lengths, [row["peak_added_bytes"] / 2**20 for row in forward], marker="o")
    forward_memory.set(title="Forward pass: peak memory added", xlabel="sequence length (tokens)", ylabel="MiB")
    figure.suptitle(f"The cost of context — GPT-2 {result['model']['preset']}, {result['machine']['device']}, fp32")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/generation.json")
    parser.add_argument("--plot", default=None, help="PNG path (default: the JSON path with .png)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 2-layer model, to check the script")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    config = GPTConfig.preset("gpt2")
    if args.quick:
        config = config.with_changes(n_layers=2)
    ours, hf = build_models(config)
    ours, hf = ours.to(device), hf.to(device)
    prompt = torch.randint(0, config.vocab_size, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(1)).to(device)

    bandwidth = memory_bandwidth(device)
    speeds = {}
    for dtype in (torch.float32, torch.bfloat16):
        ours_typed, hf_typed = ours.to(dtype=dtype), hf.to(dtype=dtype)
        row = decode_speed(ours_typed, hf_typed, prompt, args.repeat, device)
        bound = bandwidth / weight_bytes(ours_typed)
        row.update(weight_bytes=weight_bytes(ours_typed), bandwidth_bound_tokens_per_s=bound, fraction_of_bound=row["ours_tokens_per_s"] / bound)
        name = str(dtype).replace("torch.", "")
        speeds[name] = row
        print(
            f"{name:>8}: ours {row['ours_tokens_per_s']:7.1f} tok/s (plain {row['ours_plain_tokens_per_s']:.1f}), "
            f"HF {row['hf_tokens_per_s']:7.1f} tok/s: {row['speedup']:.2f}x (plain {row['speedup_plain']:.2f}x); "
            f"bandwidth bound {bound:7.1f} tok/s ({100 * row['fraction_of_bound']:.0f}%); "
            f"same tokens as HF: {row['same_tokens_as_hf']}",
            flush=True,
        )
    ours, hf = ours.to(dtype=torch.float32), hf.to(dtype=torch.float32)
    del hf
    enable_fast_decoding(ours)  # the context sweep measures the fast engine
    prefill = prefill_speed(ours, config.context_length, args.repeat, device)
    print(f"prefill of {config.context_length} tokens: {prefill:.0f} tok/s", flush=True)
    positions = [128, 256, 384, 512, 640, 768, 896, config.context_length - 16]
    decode = [decode_cost_at(ours, position, 16, device) for position in positions]
    forward = [forward_cost_at(ours, length, device).as_dict() for length in (128, 256, 384, 512, 640, 768, 896, 1024)]
    for row in decode:
        print(f"decode at position {row['position']:>5}: {row['ms_per_token']:6.1f} ms/token, KV cache {row['kv_cache_bytes'] / 2**20:6.1f} MiB")
    for row in forward:
        added = row["peak_added_bytes"]
        print(f"forward over {row['length']:>5} tokens: {row['ms']:7.1f} ms, peak added {added / 2**20 if added is not None else float('nan'):7.1f} MiB")

    result = {
        "benchmark": f"greedy generation, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "measured_read_bandwidth_gb_per_s": bandwidth / 1e9,
        },
        "model": {"preset": "124M" if not args.quick else "2 layers (--quick)", "parameters": ours.num_parameters()},
        "generation": speeds,
        "prefill_tokens_per_s": prefill,
        "context_cost": {"decode_path": "fast decoding (compiled matrix-vector kernels)", "decode": decode, "forward": forward},
        "goals": {
            f"ours >= {GOAL_SPEEDUP}x HF tokens/s (fp32)": speeds["float32"]["speedup"] >= GOAL_SPEEDUP,
            f"ours >= {GOAL_SPEEDUP}x HF tokens/s (bf16)": speeds["bfloat16"]["speedup"] >= GOAL_SPEEDUP,
            f">= {GOAL_BANDWIDTH_FRACTION:.0%} of the bandwidth bound (fp32)": speeds["float32"]["fraction_of_bound"] >= GOAL_BANDWIDTH_FRACTION,
        },
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    draw(result, plot)
    for goal, met in result["goals"].items():
        print(f"[{'met' if met else 'NOT met'}] {goal}")
    print(f"wrote {args.out} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
