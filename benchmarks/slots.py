"""Decoding several sequences at once: how the aggregate grows with the slots, Lanterne and llama.cpp side by side.

On one machine, same GGUF file, same threads, greedy: one sequence alone, then 4, 8 and 16 sequences
decoded together (each its own copy of the prompt), 64 new tokens each, tokens/s in aggregate.
Lanterne: `Decoder` with the default weights ('auto') and with bf16 (what `lanterne serve` decodes with).
llama.cpp: its own batched decoding (one `llama_decode` for every sequence per step, as its server
does with parallel slots), in its own process.

    .venv/bin/python benchmarks/slots.py      # writes benchmarks/results/slots.json
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

SLOTS = (1, 4, 8, 16)
NEW_TOKENS = 64
PROMPT = "Le soleil se lève à l'est et se couche à"


def llama_cpp_slots(path: str, prompt: list[int], threads: int) -> dict:
    """llama.cpp's aggregate tokens/s for each number of sequences (run as `slots.py --peer`)."""
    import ctypes

    import llama_cpp
    import numpy as np

    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    rates = {}
    for slots in SLOTS:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 2048, 512, 512, slots
        params.n_threads = params.n_threads_batch = threads
        context = llama_cpp.llama_init_from_model(model, params)
        batch = llama_cpp.llama_batch_init(512, 0, slots)

        def add(token: int, position: int, sequence: int, logits: bool) -> None:
            index = batch.n_tokens
            batch.token[index], batch.pos[index], batch.n_seq_id[index] = token, position, 1
            batch.seq_id[index][0], batch.logits[index] = sequence, logits
            batch.n_tokens += 1

        def best(index: int) -> int:
            row = np.ctypeslib.as_array(ctypes.cast(llama_cpp.llama_get_logits_ith(context, index), ctypes.POINTER(ctypes.c_float)), (vocab,))
            return int(row.argmax())

        chosen = []
        for sequence in range(slots):  # each prompt read on its own, as a server admits it
            batch.n_tokens = 0
            for position, token in enumerate(prompt):
                add(token, position, sequence, position == len(prompt) - 1)
            assert llama_cpp.llama_decode(context, batch) == 0
            chosen.append(best(batch.n_tokens - 1))
        start = time.perf_counter()
        for step in range(NEW_TOKENS):
            batch.n_tokens = 0
            for sequence in range(slots):
                add(chosen[sequence], len(prompt) + step, sequence, True)
            assert llama_cpp.llama_decode(context, batch) == 0
            chosen = [best(index) for index in range(slots)]
        rates[slots] = slots * NEW_TOKENS / (time.perf_counter() - start)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(context)
    llama_cpp.llama_model_free(model)
    return rates


def lanterne_slots(model, prompt: list[int]) -> dict:
    import torch

    from lanterne.generation.decoder import Decoder
    from lanterne.generation.sampling import SamplingSettings

    rates = {}
    for slots in SLOTS:
        decoder = Decoder(model, slots, 128, compile=True)
        for _ in range(slots):
            decoder.add(prompt, SamplingSettings(temperature=0))
        decoder.step()
        decoder.step()  # compiled (or loaded from the cache) and warm
        start = time.perf_counter()
        for _ in range(NEW_TOKENS):
            decoder.step()
        rates[slots] = slots * NEW_TOKENS / (time.perf_counter() - start)
        del decoder
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["gemma-3-270m", "smollm2-135m-instruct"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slots.json"))
    args = parser.parse_args(argv)
    import torch

    from lanterne.checkpoints import load
    from lanterne.files import atomic_write_text
    from lanterne.generation import encode_prompt
    from lanterne.models import is_installed, model_file
    from lanterne.tokenization.tiktoken_files import cache_folder

    torch.set_num_threads(args.threads)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
              "settings": {"slots": SLOTS, "new_tokens": NEW_TOKENS, "prompt": PROMPT}, "models": {}}
    for name in args.models:
        if not is_installed(name):
            print(f"{name}: not installed; skipped")
            continue
        row = report["models"][name] = {}
        for weights in ("auto", "bf16"):
            model, tokenizer = load(name, weights=weights)
            prompt = encode_prompt(tokenizer, PROMPT)
            row[f"lanterne_{weights}"] = lanterne_slots(model, prompt)
            del model
        if importlib.util.find_spec("llama_cpp") is None:
            row["llama_cpp"] = {"skipped": 'llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python==0.3.36'}
        else:
            done = subprocess.run([sys.executable, __file__, "--peer", str(model_file(name, cache_folder())), json.dumps(prompt), str(args.threads)],
                                  capture_output=True, text=True)
            row["llama_cpp"] = ({int(slots): rate for slots, rate in json.loads(done.stdout.strip().splitlines()[-1]).items()}
                                if done.returncode == 0 else {"skipped": f"llama.cpp failed: {done.stderr.strip().splitlines()[-1:]}"})
        for who, rates in row.items():
            if "skipped" in rates:
                print(f"{name} {who}: skipped ({rates['skipped']})")
                continue
            scaling = ", ".join(f"{slots}: {rates[slots]:.0f} tok/s ({rates[slots] / rates[1]:.1f}x)" for slots in SLOTS)
            print(f"{name} {who}: {scaling}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        print(json.dumps(llama_cpp_slots(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))))
        sys.exit(0)
    sys.exit(main())
