"""Real-model benchmark: Gemma 3 270M and SmolLM2-135M (the packaged GGUF files), Lanterne beside transformers.

For each installed model, in one run: load time (first, which dequantises, and cached), prefill
tokens/s on 512 tokens, and decode tokens/s at batch 1 (128 greedy tokens after a 32-token prompt)
in fp32 and bf16, against `transformers` reading the same GGUF file and against the memory-bandwidth
bound (every weight read once per token). Writes a JSON.

    python benchmarks/models.py [--out benchmarks/results/models.json] [--repeat 3] [--models smollm2-135m-instruct ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

import torch  # noqa: E402

from lanterne.files import atomic_write_text  # noqa: E402
from lanterne.interop.gguf import load_gguf  # noqa: E402
from lanterne.models import NAMED_MODELS, is_installed, model_file  # noqa: E402


def _generation_benchmark():
    """benchmarks/generation.py, whose timing helpers this script shares (loaded by path: the folder
    is kept off sys.path, where our tokenizers.py would hide HuggingFace's package)."""
    spec = importlib.util.spec_from_file_location("generation_benchmark", _HERE / "generation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shared = _generation_benchmark()
PREFILL_TOKENS = 512
GOALS = {"decode_bf16_vs_transformers": 1.5, "prefill_vs_transformers": 1.0, "cached_load_seconds": 2.0}


def load_transformers(path: Path, dtype: torch.dtype):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()


@torch.inference_mode()
def hf_prefill_speed(hf, vocab_size: int, length: int, repeat: int) -> float:
    ids = torch.randint(0, vocab_size, (1, length))
    return length / shared.best_of(lambda: hf(ids, use_cache=True, logits_to_keep=1), repeat, torch.device("cpu"))


def benchmark_model(name: str, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="lanterne-bench-") as folder:  # a fresh cache: the first load is a real first load
        return _benchmark_model(name, repeat, Path(folder))


def _benchmark_model(name: str, repeat: int, cache: Path) -> dict:
    path = model_file(name, cache)
    start = time.perf_counter()
    load_gguf(path, cache)
    first_load = time.perf_counter() - start
    start = time.perf_counter()
    ours, _ = load_gguf(path, cache)
    cached_load = time.perf_counter() - start
    start = time.perf_counter()
    hf = load_transformers(path, torch.float32)
    hf_load = time.perf_counter() - start
    result = {"file": path.name, "load_seconds": {"ours_first": first_load, "ours_cached": cached_load, "transformers": hf_load}}
    bandwidth = shared.memory_bandwidth(torch.device("cpu"))
    torch.manual_seed(0)
    prompt = torch.randint(0, ours.config.vocab_size, (1, shared.PROMPT_TOKENS))
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ours, hf = ours.to(dtype), hf.to(dtype)
        decode = shared.decode_speed(ours, hf, prompt, repeat, torch.device("cpu"))
        bound = bandwidth / shared.weight_bytes(ours)
        with torch.inference_mode():
            ours_prefill = shared.prefill_speed(ours, PREFILL_TOKENS, repeat, torch.device("cpu"))
        hf_prefill = hf_prefill_speed(hf, ours.config.vocab_size, PREFILL_TOKENS, repeat)
        result[label] = {
            **decode,
            "bandwidth_bound_tokens_per_s": bound,
            "ours_fraction_of_bound": decode["ours_tokens_per_s"] / bound,
            "ours_prefill_tokens_per_s": ours_prefill,
            "hf_prefill_tokens_per_s": hf_prefill,
            "prefill_ratio": ours_prefill / hf_prefill,
        }
    result["goals"] = {
        "decode_bf16_vs_transformers": result["bf16"]["speedup"] >= GOALS["decode_bf16_vs_transformers"],
        "prefill_vs_transformers": min(result["fp32"]["prefill_ratio"], result["bf16"]["prefill_ratio"]) >= GOALS["prefill_vs_transformers"],
        "cached_load_seconds": cached_load <= GOALS["cached_load_seconds"],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.json"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(NAMED_MODELS))
    args = parser.parse_args(argv)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "settings": {"prompt_tokens": shared.PROMPT_TOKENS, "new_tokens": shared.NEW_TOKENS, "prefill_tokens": PREFILL_TOKENS, "repeat": args.repeat},
        "goals": GOALS,
        "models": {},
    }
    for name in args.models:
        if not is_installed(name):
            print(f"{name}: not installed ({NAMED_MODELS[name].install}); skipped")
            continue
        print(f"{name} ...", flush=True)
        row = report["models"][name] = benchmark_model(name, args.repeat)
        loads = row["load_seconds"]
        print(f"  load: ours first {loads['ours_first']:.1f} s, cached {loads['ours_cached']:.2f} s; transformers {loads['transformers']:.1f} s")
        for label in ("fp32", "bf16"):
            figures = row[label]
            print(
                f"  {label}: decode ours {figures['ours_tokens_per_s']:.1f} tok/s (plain {figures['ours_plain_tokens_per_s']:.1f}),"
                f" transformers {figures['hf_tokens_per_s']:.1f} ({figures['speedup']:.2f}x), bound {figures['bandwidth_bound_tokens_per_s']:.0f}"
                f" ({figures['ours_fraction_of_bound']:.0%}); prefill {figures['ours_prefill_tokens_per_s']:.0f} vs"
                f" {figures['hf_prefill_tokens_per_s']:.0f} tok/s ({figures['prefill_ratio']:.2f}x); same tokens: {figures['same_tokens_as_hf']}"
            )
        print(f"  goals: {row['goals']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
