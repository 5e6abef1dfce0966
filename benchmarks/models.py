"""Real-model benchmark: Gemma 3 270M and SmolLM2-135M (the packaged GGUF files), Lanterne beside llama.cpp.

For each installed model, in one run, on the same file, the same threads and the same prompt ids:
- decode: 128 greedy tokens after a 32-token prompt, Lanterne as `lanterne generate` runs by default
  (weights 'auto', the compiled step) against llama.cpp (`llama-cpp-python`, in a subprocess);
- prefill of a 512-token prompt, both;
- aggregate decode of 16 sequences at once in 16 slots, against one;
- bytes read per token, and the share of the machine's measured read bandwidth that reaches;
- quality of 'auto' against the 'fp32' reference on held-out French and English text (../shared/data):
  same top-1 token at teacher-forced positions, mean KL divergence; the slide sentence's greedy text.
Writes a JSON. llama.cpp's row is skipped, with the reason, when `llama_cpp` is not installed:

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python==0.3.36

On a CPU with AMX (Sapphire Rapids and later) that build crashed here in ggml's AMX matrix product
(SIGSEGV at `ldtilecfg`); building without AMX instructions works and keeps AVX-512/VNNI/BF16:

    CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
                -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" pip install llama-cpp-python==0.3.36

    python benchmarks/models.py [--out benchmarks/results/models.json] [--threads 2] [--models gemma-3-270m ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

PROMPT_TOKENS, NEW_TOKENS, PREFILL_TOKENS, SLOTS = 32, 128, 512, 16
SLIDE = "Le soleil se lève à l'est et se couche à"
GOALS = {"decode_vs_llama_cpp": 1.0, "prefill_vs_llama_cpp": 1.0, "slots_16_vs_one": 6.0, "top1_agreement": 0.95}


# -- the peer, in its own process (its OpenMP threads and torch's never meet) -----------------------


def llama_cpp_peer(path: str, prompt: list[int], threads: int, repeat: int, held_out: dict[str, list[int]]) -> dict:
    """llama.cpp's prefill and decode speeds, greedy tokens, and its top-1 token at every position of the
    held-out texts (its own quantised arithmetic, for the quality comparison); run as `models.py --llama-cpp-peer`."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False, seed=0)
    long_prompt = (prompt * (PREFILL_TOKENS // len(prompt) + 1))[:PREFILL_TOKENS]
    prefill, decode, tokens = [], [], []
    for _ in range(repeat):
        llm.reset()
        start = time.perf_counter()
        llm.eval(long_prompt)
        prefill.append(time.perf_counter() - start)
        tokens = []
        # llama.cpp's own loop, greedy; timed from the first new token, so the prompt is not counted.
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            tokens.append(int(token))
            if len(tokens) == 1:
                start = time.perf_counter()
            if len(tokens) == NEW_TOKENS + 1:
                break
        decode.append(time.perf_counter() - start)
    del llm
    top1 = {}
    if held_out:
        import numpy as np

        every = Llama(model_path=path, n_threads=threads, n_ctx=1024, n_batch=512, logits_all=True, verbose=False)
        for language, ids in held_out.items():
            every.reset()
            every.eval(ids)
            top1[language] = np.asarray(every.scores[: len(ids)]).argmax(-1).tolist()
    return {"prefill_tokens_per_s": PREFILL_TOKENS / min(prefill), "decode_tokens_per_s": NEW_TOKENS / min(decode), "tokens": tokens,
            "held_out_top1": top1}


def run_llama_cpp(path: Path, prompt: list[int], threads: int, repeat: int, held_out: dict[str, list[int]]) -> dict:
    if importlib.util.find_spec("llama_cpp") is None:
        return {"skipped": 'llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python==0.3.36'}
    command = [sys.executable, __file__, "--llama-cpp-peer", str(path), json.dumps(prompt), str(threads), str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, input=json.dumps(held_out))
    if done.returncode != 0:
        return {"skipped": f"llama.cpp failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or ['no message'])[-1]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- Lanterne -----------------------------------------------------------------------------------


def best_of(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bytes_per_token(model) -> int:
    """Bytes a decoded token reads: every layer's weights as the kernels hold them, norms; one embedding row."""
    import torch

    from lanterne.model.quantized_linear import Int4Linear, Int8Linear

    total = 0
    for module in model.modules():
        if isinstance(module, Int4Linear):
            total += module.out_features * module.in_features // 2 + module.scales.numel() * 2 * 2  # 4 bits; bf16 scale + zero
        elif isinstance(module, Int8Linear):
            total += module.values.numel() + module.scales.numel() * 4
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, torch.nn.Embedding):
            total += module.weight.shape[1] * module.weight.element_size()
            if module.weight is getattr(model.lm_head, "weight", None):  # tied and not quantised: the output layer reads it all
                total += module.weight.numel() * module.weight.element_size()
        elif "norm" in type(module).__name__.lower():
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return total


def held_out_ids(tokenizer, tokens: int) -> dict[str, list[int]]:
    """The last `tokens` ids of the final tenth of each shared text (the part training runs hold out)."""
    folder = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    texts = {"fr": folder / "miserables_fr.txt", "en": folder / "tinyshakespeare.txt"}
    found = {}
    for language, path in texts.items():
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            tail = text[int(len(text) * 0.9):][:20000]
            found[language] = tokenizer.encode(tail)[:tokens]
    return found


def quality(reference, quantised, tokenizer, tokens: int = 512) -> dict:
    """Teacher-forced: how often `quantised` picks `reference`'s top-1 token, and the mean KL(reference ‖ quantised)."""
    import torch

    result = {}
    for language, ids in held_out_ids(tokenizer, tokens).items():
        with torch.inference_mode():
            batch = torch.tensor([ids])
            expected = reference(batch).logits[0].float().log_softmax(-1)
            # One token at a time through the cache: the products decoding computes (a single row
            # rounded to 8 bits in int8 layers; a long prompt is multiplied from dequantised weights).
            cache = quantised.new_cache(1, len(ids))
            pieces = [quantised(batch[:, start : start + 1], cache=cache).logits[0] for start in range(len(ids))]
            got = torch.cat(pieces).float().log_softmax(-1)
        result[language] = {
            "positions": len(ids),
            "reference_top1": expected.argmax(-1).tolist(),
            "top1_agreement": float((expected.argmax(-1) == got.argmax(-1)).float().mean()),
            "mean_kl": float((expected.exp() * (expected - got)).sum(-1).mean()),
        }
    return result


def benchmark_model(name: str, threads: int, repeat: int) -> dict:
    import torch

    from lanterne.checkpoints import load
    from lanterne.generation import SamplingSettings, Timings, generate, generate_ids
    from lanterne.generation.decoder import decoder_for
    from lanterne.models import model_file
    from lanterne.tokenization.tiktoken_files import cache_folder

    torch.set_num_threads(threads)
    path = model_file(name, cache_folder())
    model, tokenizer = load(name)  # weights='auto', as every command loads by default
    reference, _ = load(name, weights="fp32")
    greedy = SamplingSettings(temperature=0)
    prompt = torch.randint(1000, 20000, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(0)).tolist()

    def decode(timings=None):
        return [step[0] for step in generate_ids(model, [prompt], NEW_TOKENS, greedy, fast=True, timings=timings)]

    # The machine's speed drifts (a shared VM): llama.cpp runs before and after Lanterne, and each side
    # keeps its best, so neither is timed in a slower moment alone.
    peer_before = run_llama_cpp(path, prompt, threads, repeat, {})
    start = time.perf_counter()
    first = Timings()
    decode(first)  # compiles the step, or reads it from the on-disk cache
    first_seconds = time.perf_counter() - start
    runs = []
    for _ in range(repeat):
        timings = Timings()
        tokens = decode(timings)
        runs.append(timings)
    decode_speed = max(run.decode_tokens_per_second for run in runs)
    long_prompt = (prompt * (PREFILL_TOKENS // PROMPT_TOKENS + 1))[:PREFILL_TOKENS]
    prefill = []
    for _ in range(repeat):
        timings = Timings()
        list(generate_ids(model, [long_prompt], 1, greedy, fast=True, compile=False, timings=timings))
        prefill.append(timings.prefill_tokens_per_second)

    decoder = decoder_for(model, SLOTS, PROMPT_TOKENS + NEW_TOKENS, compile=True)
    for slot in range(SLOTS):
        decoder.add(prompt[slot:] + prompt[:slot], greedy)
    decoder.step()
    decoder.step()  # compiled
    steps = 64
    seconds = best_of(lambda: [decoder.step() for _ in range(steps)], 1)
    for slot in decoder.active:
        decoder.remove(slot)
    slots_speed = SLOTS * steps / seconds

    bandwidth_data = torch.ones(2**28)
    bandwidth = bandwidth_data.numel() * 4 / best_of(bandwidth_data.sum, 5)
    read = bytes_per_token(model)
    slide = generate(model, tokenizer, SLIDE, max_new_tokens=8, temperature=0, fast=True)
    measured = quality(reference, model, tokenizer)
    peer = run_llama_cpp(path, prompt, threads, repeat, {language: held_out_ids(tokenizer, 512)[language] for language in measured})
    if "skipped" not in peer and "skipped" not in peer_before:
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            peer[key] = max(peer[key], peer_before[key])
    for language, figures in measured.items():
        reference_top1 = figures.pop("reference_top1")
        theirs = peer.get("held_out_top1", {}).get(language)
        if theirs is not None:  # llama.cpp against the same fp32 reference: what its own arithmetic keeps
            figures["llama_cpp_top1_agreement"] = sum(a == b for a, b in zip(reference_top1, theirs)) / len(reference_top1)
    peer.pop("held_out_top1", None)
    result = {
        "file": path.name,
        "weights": model.quantized or "as stored",
        "lanterne": {
            "decode_tokens_per_s": decode_speed,
            "prefill_tokens_per_s": max(prefill),
            "slots_16_tokens_per_s": slots_speed,
            "slots_16_vs_one": slots_speed / decode_speed,
            "first_generation_seconds": first_seconds,
            "compile_seconds": first.compile_s,
            "bytes_per_token": read,
            "read_bandwidth_bytes_per_s": bandwidth,
            "bandwidth_share": read * decode_speed / bandwidth,
            "tokens": tokens,
        },
        "quality_auto_vs_fp32": measured,
        "slide": {"sentence": SLIDE, "greedy": slide},
        "llama_cpp": peer,
    }
    if "skipped" not in peer:
        result["ratios"] = {
            "decode": decode_speed / peer["decode_tokens_per_s"],
            "prefill": max(prefill) / peer["prefill_tokens_per_s"],
            "same_greedy_tokens_before_first_difference": next(
                (i for i, (a, b) in enumerate(zip(tokens, peer["tokens"])) if a != b), NEW_TOKENS
            ),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    from lanterne.files import atomic_write_text
    from lanterne.models import NAMED_MODELS, is_installed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["gemma-3-270m", "smollm2-135m-instruct"])
    args = parser.parse_args(argv)
    import torch

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": _processor(), "torch": torch.__version__, "threads": args.threads},
        "settings": {"prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "prefill_tokens": PREFILL_TOKENS, "slots": SLOTS},
        "goals": GOALS,
        "models": {},
    }
    for name in args.models:
        if not is_installed(name):
            print(f"{name}: not installed ({NAMED_MODELS[name].install}); skipped")
            continue
        print(f"{name} ...", flush=True)
        row = report["models"][name] = benchmark_model(name, args.threads, args.repeat)
        ours, peer = row["lanterne"], row["llama_cpp"]
        print(f"  lanterne ({row['weights']}): decode {ours['decode_tokens_per_s']:.1f} tok/s, prefill {ours['prefill_tokens_per_s']:.0f} tok/s, "
              f"16 slots {ours['slots_16_tokens_per_s']:.0f} tok/s ({ours['slots_16_vs_one']:.1f}x one); "
              f"{ours['bytes_per_token'] / 1e6:.0f} MB/token = {ours['bandwidth_share']:.0%} of {ours['read_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s")
        if "skipped" in peer:
            print(f"  llama.cpp: skipped ({peer['skipped']})")
        else:
            ratios = row["ratios"]
            print(f"  llama.cpp: decode {peer['decode_tokens_per_s']:.1f} tok/s, prefill {peer['prefill_tokens_per_s']:.0f} tok/s; "
                  f"ratios decode {ratios['decode']:.2f}x, prefill {ratios['prefill']:.2f}x; "
                  f"same greedy tokens for the first {ratios['same_greedy_tokens_before_first_difference']}")
        for language, figures in row["quality_auto_vs_fp32"].items():
            peer_agreement = figures.get("llama_cpp_top1_agreement")
            peer_text = f"; llama.cpp on the same file {peer_agreement:.1%}" if peer_agreement is not None else ""
            print(f"  quality {language}: top-1 agreement with fp32 {figures['top1_agreement']:.1%}, mean KL {figures['mean_kl']:.4f} nats{peer_text}")
        print(f"  slide: {row['slide']['greedy']!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--llama-cpp-peer":
        held_out = json.loads(sys.stdin.read() or "{}")
        print(json.dumps(llama_cpp_peer(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), held_out)))
        sys.exit(0)
    sys.exit(main())
