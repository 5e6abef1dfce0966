#!/usr/bin/env bash
# One prepared run of the CUDA path on a lent GPU machine (PyTorch, transformers preinstalled there):
# model forward (fp32/bf16), generation speed beside HF, and a GPT-2-sized training run with bf16 + torch.compile.
# Usage there: bash benchmarks/cuda_check.sh OUT_DIR DATA_FILE [training]   ("training": the training run only)
set -uo pipefail
out="${1:?output folder}"; data="${2:?training text file}"; only="${3:-}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LANTERNE_CACHE="$out/cache"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'bf16', torch.cuda.is_bf16_supported())"
if [ "$only" != "training" ]; then
    timeout 150 python3 benchmarks/model.py --device cuda --repeat 10 --out "$out/model_cuda.json" 2>&1 | grep -v -E "Writing|Loading"
    timeout 200 python3 benchmarks/generation.py --device cuda --repeat 3 --out "$out/generation_cuda.json" 2>&1 | grep -v -E "Writing|Loading"
fi
# The GPT-2 124M preset, bf16 autocast, torch.compile, context 1024. No GPT-2 vocabulary can be downloaded
# there, so the text is read with a BPE of 8,192 trained on it and the embedding is padded to GPT-2's
# 50,257 rows (vocab_size=50257): the model is GPT-2 124M, 124,439,808 parameters, to the FLOP.
timeout 300 python3 -m lanterne.cli train --data "$data" --tokenizer bpe:8192 --preset gpt2 --set vocab_size=50257 --out "$out/run" \
    --max-steps 300 --device cuda --json \
    --set dtype=bfloat16 --set compile=true --set batch_size=16 --set eval_interval=300 --set eval_batches=10 \
    --set warmup_steps=50 --set learning_rate=6e-4 --set min_learning_rate=6e-5 --set log_interval=50 --set sample_tokens=64 \
    2>&1 | tail -20
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1]) / "run"
records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
train = [r for r in records if r["kind"] == "train"]
late = [r for r in train if r["step"] > 50]
print("training: steps", len(train), "tokens/s (after step 50) mean", sum(r["tokens_per_second"] for r in late) / max(1, len(late)),
      "MFU mean", sum(r["mfu"] for r in late) / max(1, len(late)), "final loss", train[-1]["loss"])
print("eval", [ {k: r[k] for k in ("step", "validation_loss", "bits_per_byte")} for r in records if r["kind"] == "eval"])
import lanterne
model, tokenizer = lanterne.load(run)
print("parameters", sum(p.numel() for p in model.parameters()), "vocab", model.config.vocab_size, "tokenizer", tokenizer.vocab_size)
PY
rm -rf "$out/cache" "$out/run/checkpoints"
