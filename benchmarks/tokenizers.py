"""Tokenizer benchmark: Lanterne's byte-level BPE beside tiktoken and HuggingFace `tokenizers`.

Encode throughput (MB/s, MB = 10^6 UTF-8 bytes) on two corpora with o200k_base and cl100k_base,
one word of a million characters (a run of one letter, random letters) against tiktoken, and BPE
training (wall seconds, held-out bytes per token) against HF, all in one run, as JSON.

    python benchmarks/tokenizers.py [--data-dir ../shared/data] [--out benchmarks/results/tokenizers.json]
                                    [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# Run as a script, this file's folder comes first on sys.path, and this file is named like
# HuggingFace's package: drop the folder so `import tokenizers` finds the real one.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]

from lanterne.errors import LanterneError
from lanterne.files import atomic_write_text, read_text_file
from lanterne.tokenization.bpe import ByteLevelBPE
from lanterne.tokenization.bpe_training import train_bpe
from lanterne.tokenization.compare import split_corpus
from lanterne.tokenization.tiktoken_files import load_named

CORPORA = ("tinyshakespeare.txt", "miserables_fr.txt")
VOCABULARIES = ("o200k_base", "cl100k_base")
FULL_VOCAB_SIZE = 8192
QUICK_VOCAB_SIZE = 2048
QUICK_CORPUS_BYTES = 300_000
TRAINING_PATTERN = "gpt2"  # HF's ByteLevel(use_regex=True) splits with GPT-2's regex

# The goals for training; encode speed has no stated goal, only ratios.
MAX_TRAINING_TIME_RATIO = 5.0  # ours / HF (default threads)
MAX_BYTES_PER_TOKEN_DIFFERENCE = 0.01  # |ours - HF| / HF on held-out text

# Two runs of the same engine within 10% of each other: the timings were not disturbed.
QUIET_TOLERANCE = 0.10

# HF's env vars are read when `tokenizers` starts its thread pool, so they are set before the
# first import; the training worker runs in a child process without them (HF's default threads).
_HF_THREAD_VARIABLES = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One encoder in a race: a call that encodes the text, and an untimed step before each timed call."""

    name: str
    encode: Callable[[], list[int]]
    before_each: Callable[[], None] | None = None  # e.g. empty a cache, to time the cold-cache cost


def race(contenders: list[Contender], text_bytes: int, repeat: int) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """Time each contender `repeat` times, round-robin, after one untimed warm-up call each.

    Returns per contender {'mb_per_s', 'best_seconds', 'seconds', 'tokens'} (best = fastest
    wall time) and its ids. Round-robin spreads a passing load on the machine over all
    contenders instead of one; the garbage collector is off while timing, as in `timeit`.
    """
    ids = {contender.name: contender.encode() for contender in contenders}
    seconds: dict[str, list[float]] = {contender.name: [] for contender in contenders}
    for _ in range(repeat):
        for contender in contenders:
            if contender.before_each is not None:
                contender.before_each()
            gc.disable()
            try:
                start = time.perf_counter()
                contender.encode()
                seconds[contender.name].append(time.perf_counter() - start)
            finally:
                gc.enable()
    figures = {
        name: {"mb_per_s": text_bytes / min(times) / 1e6, "best_seconds": min(times), "seconds": times, "tokens": len(ids[name])}
        for name, times in seconds.items()
    }
    return figures, ids


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# -- part 1: encoding with published vocabularies ------------------------------------------------


def benchmark_published(corpora: dict[str, str], repeat: int) -> dict:
    """Ours pure (cold and warm cache), ours with the tiktoken backend, and tiktoken, per vocabulary and corpus."""
    import tiktoken

    results: dict[str, dict] = {}
    for vocabulary in VOCABULARIES:
        ours_pure = load_named(vocabulary, backend="python", download=False)
        ours_fast = ByteLevelBPE(ours_pure.ranks, ours_pure.pattern, ours_pure.special_tokens, name=vocabulary, backend="tiktoken")
        peer = tiktoken.Encoding(
            name=vocabulary, pat_str=ours_pure.pattern, mergeable_ranks=ours_pure.ranks, special_tokens=ours_pure.special_tokens
        )
        results[vocabulary] = {}
        for corpus_name, text in corpora.items():
            size = len(text.encode("utf-8"))
            figures, ids = race(
                [
                    Contender("ours_pure_cold_cache", lambda: ours_pure.encode_ordinary(text), ours_pure._cache.clear),
                    Contender("ours_pure_warm_cache", lambda: ours_pure.encode_ordinary(text)),  # right after the cold run
                    Contender("ours_tiktoken_backend", lambda: ours_fast.encode_ordinary(text)),
                    Contender("tiktoken", lambda: peer.encode_ordinary(text)),
                ],
                size,
                repeat,
            )
            pure_cold, pure_warm = figures["ours_pure_cold_cache"], figures["ours_pure_warm_cache"]
            fast, tiktoken_figure = figures["ours_tiktoken_backend"], figures["tiktoken"]
            pure_ids, fast_ids, tiktoken_ids = ids["ours_pure_cold_cache"], ids["ours_tiktoken_backend"], ids["tiktoken"]
            speed = tiktoken_figure["mb_per_s"]
            results[vocabulary][corpus_name] = {
                "bytes": size,
                "ours_pure_cold_cache": pure_cold,
                "ours_pure_warm_cache": pure_warm,
                "ours_tiktoken_backend": fast,
                "tiktoken": tiktoken_figure,
                "ratio_ours_pure_cold_to_tiktoken": ratio(pure_cold["mb_per_s"], speed),
                "ratio_ours_pure_warm_to_tiktoken": ratio(pure_warm["mb_per_s"], speed),
                "ratio_ours_fast_to_tiktoken": ratio(fast["mb_per_s"], speed),
                # Ours fast and tiktoken run the same Rust code: far from 1, the machine was busy.
                "quiet_machine": abs(fast["mb_per_s"] / speed - 1) <= QUIET_TOLERANCE,
                "ids_identical": pure_ids == tiktoken_ids and fast_ids == tiktoken_ids,
            }
    return results


# A word of a million characters: a run of one letter, and random lower-case letters (one regex piece each).
LONG_WORD_CHARS = 1_000_000
QUICK_LONG_WORD_CHARS = 100_000
# The goal for the pure path on the course corpora (cold cache, o200k_base).
MIN_PURE_TO_TIKTOKEN = 0.3


def benchmark_long_words(length: int, repeat: int) -> dict:
    """Seconds to encode one very long word: ours pure (cold cache: BPE runs on the whole word) vs tiktoken."""
    import random
    import tiktoken

    ours = load_named("o200k_base", backend="python", download=False)
    peer = tiktoken.Encoding(name="o200k_base", pat_str=ours.pattern, mergeable_ranks=ours.ranks, special_tokens=ours.special_tokens)
    words = {
        "run_of_one_letter": "x" * length,
        "random_letters": "".join(random.Random(0).choices("abcdefghijklmnopqrstuvwxyz", k=length)),
    }
    results = {}
    for name, word in words.items():
        figures, ids = race(
            [Contender("ours_pure", lambda: ours.encode_ordinary(word), ours._cache.clear), Contender("tiktoken", lambda: peer.encode_ordinary(word))],
            len(word),
            repeat,
        )
        results[name] = {
            "characters": length,
            "ours_pure_seconds": figures["ours_pure"]["best_seconds"],
            "tiktoken_seconds": figures["tiktoken"]["best_seconds"],
            "ratio_ours_to_tiktoken_time": ratio(figures["ours_pure"]["best_seconds"], figures["tiktoken"]["best_seconds"]),
            "tokens": len(ids["tiktoken"]),
            "ids_identical": ids["ours_pure"] == ids["tiktoken"],
        }
    return results


# -- part 2: training, and encoding with the trained vocabularies --------------------------------


def hf_training_run(training_text: str, vocab_size: int):
    """Train HF's byte-level BPE on `training_text` line by line; (tokenizer, wall seconds including the split)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    start = time.perf_counter()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,  # HF counts the 256-symbol alphabet in it, as we count the 256 bytes
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tokenizer.train_from_iterator(training_text.splitlines(keepends=True), trainer=trainer)
    return tokenizer, time.perf_counter() - start


def hf_training_worker(folder: str) -> None:
    """Child-process entry: train on folder/train.txt with HF's default threads, save tokenizer.json and timing.json."""
    folder_path = Path(folder)
    settings = json.loads((folder_path / "settings.json").read_text())
    training_text = (folder_path / "train.txt").read_text(encoding="utf-8")
    tokenizer, seconds = hf_training_run(training_text, settings["vocab_size"])
    tokenizer.save(str(folder_path / "tokenizer.json"))
    (folder_path / "timing.json").write_text(json.dumps({"seconds": seconds}))


def train_hf_default_threads(training_text: str, vocab_size: int):
    """HF training in a child process without the single-thread variables; (tokenizer, wall seconds)."""
    from tokenizers import Tokenizer

    environment = {key: value for key, value in os.environ.items() if key not in _HF_THREAD_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="lanterne-bench-") as folder:
        (Path(folder) / "train.txt").write_text(training_text, encoding="utf-8")
        (Path(folder) / "settings.json").write_text(json.dumps({"vocab_size": vocab_size}))
        completed = subprocess.run(
            [sys.executable, __file__, "--hf-training-worker", folder], env=environment, capture_output=True, text=True
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the HF training worker failed: {completed.stderr.strip().splitlines()[-1:]}")
        seconds = json.loads((Path(folder) / "timing.json").read_text())["seconds"]
        return Tokenizer.from_file(str(Path(folder) / "tokenizer.json")), seconds


def default_thread_count() -> int:
    """Threads HF's pool (rayon) starts with by default: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def benchmark_training(corpora: dict[str, str], vocab_size: int, repeat: int) -> dict:
    """Train ours and HF's BPE on 90% of the corpora joined, score both on the last 10%, and time encoding there."""
    joined = "\n".join(corpora[name] for name in CORPORA)
    training_text, held_out = split_corpus(joined)
    held_out_bytes = len(held_out.encode("utf-8"))

    start = time.perf_counter()
    ours = train_bpe(training_text, vocab_size, TRAINING_PATTERN, special_tokens=())
    ours_seconds = time.perf_counter() - start
    hf, hf_seconds = train_hf_default_threads(training_text, vocab_size)
    hf_single, hf_single_seconds = hf_training_run(training_text, vocab_size)  # this process is single-thread

    ours_pure = ByteLevelBPE(ours.ranks, ours.pattern, name="ours-trained", backend="python")
    ours_fast = ByteLevelBPE(ours.ranks, ours.pattern, name="ours-trained", backend="tiktoken")
    figures, ids = race(
        [
            Contender("ours_pure_cold_cache", lambda: ours_pure.encode_ordinary(held_out), ours_pure._cache.clear),
            Contender("ours_pure_warm_cache", lambda: ours_pure.encode_ordinary(held_out)),
            Contender("ours_tiktoken_backend", lambda: ours_fast.encode_ordinary(held_out)),
            Contender("hf_cold_cache", lambda: hf.encode(held_out).ids, hf.model._clear_cache),
            Contender("hf_warm_cache", lambda: hf.encode(held_out).ids),
        ],
        held_out_bytes,
        repeat,
    )
    pure_cold, pure_warm, fast = figures["ours_pure_cold_cache"], figures["ours_pure_warm_cache"], figures["ours_tiktoken_backend"]
    hf_cold, hf_warm = figures["hf_cold_cache"], figures["hf_warm_cache"]
    pure_ids, fast_ids, hf_ids = ids["ours_pure_cold_cache"], ids["ours_tiktoken_backend"], ids["hf_cold_cache"]

    ours_bytes_per_token = held_out_bytes / len(fast_ids)
    hf_bytes_per_token = held_out_bytes / len(hf_ids)
    time_ratio = ours_seconds / hf_seconds
    bytes_per_token_difference = (ours_bytes_per_token - hf_bytes_per_token) / hf_bytes_per_token
    hf_speed = hf_cold["mb_per_s"]
    return {
        "corpus": f"{' + '.join(CORPORA)} joined by a newline; first 90% for training, last 10% held out",
        "training_bytes": len(training_text.encode("utf-8")),
        "held_out_bytes": held_out_bytes,
        "requested_vocab_size": vocab_size,
        "training": {
            "ours": {"seconds": ours_seconds, "vocab_size": ours.vocab_size, "pattern": TRAINING_PATTERN, "threads": 1},
            "hf_default_threads": {"seconds": hf_seconds, "vocab_size": hf.get_vocab_size(), "threads": default_thread_count()},
            "hf_single_thread": {
                "seconds": hf_single_seconds,
                "vocab_size": hf_single.get_vocab_size(),
                "threads": 1,
                "same_vocabulary_as_default_threads": hf_single.get_vocab() == hf.get_vocab(),
            },
            "vocab_sizes_equal": ours.vocab_size == hf.get_vocab_size() == vocab_size,
            "ratio_ours_to_hf_default_threads": time_ratio,
            "ratio_ours_to_hf_single_thread": ours_seconds / hf_single_seconds,
        },
        "held_out": {
            "ours_bytes_per_token": ours_bytes_per_token,
            "hf_bytes_per_token": hf_bytes_per_token,
            "relative_difference": bytes_per_token_difference,  # (ours - HF) / HF; positive: ours compresses better
            "ours_round_trip": ours_fast.decode(fast_ids) == held_out,
            "hf_round_trip": hf.decode(hf_ids) == held_out,
        },
        "encode_held_out": {
            "note": "each encodes with its own trained vocabulary; HF single-thread, and its encode also computes offsets",
            "ours_pure_cold_cache": pure_cold,
            "ours_pure_warm_cache": pure_warm,
            "ours_tiktoken_backend": fast,
            "hf_cold_cache": hf_cold,
            "hf_warm_cache": hf_warm,
            "ratio_ours_pure_cold_to_hf_cold": ratio(pure_cold["mb_per_s"], hf_speed),
            "ratio_ours_fast_to_hf_cold": ratio(fast["mb_per_s"], hf_speed),
            "ids_identical": pure_ids == fast_ids,  # ours pure == ours tiktoken backend (HF's vocabulary differs)
        },
        "goals": {
            "training_time": {
                "goal": f"training <= {MAX_TRAINING_TIME_RATIO:g}x HF tokenizers' wall time (HF default threads)",
                "value": time_ratio,
                "goal_met": time_ratio <= MAX_TRAINING_TIME_RATIO,
            },
            "held_out_bytes_per_token": {
                "goal": f"held-out bytes per token within {MAX_BYTES_PER_TOKEN_DIFFERENCE:.0%} of HF's",
                "value": bytes_per_token_difference,
                "goal_met": abs(bytes_per_token_difference) <= MAX_BYTES_PER_TOKEN_DIFFERENCE,
            },
        },
    }


# -- report -------------------------------------------------------------------------------------


def machine_info() -> dict:
    import tiktoken
    import tokenizers

    from importlib.metadata import version

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": default_thread_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {"lanterne": version("lanterne"), "tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__},
    }


def print_summary(report: dict) -> None:
    """The figures as readable tables, with ratios."""
    print(f"Encode throughput, MB/s (best of {report['settings']['repeat']}; ratio = ours / tiktoken)")
    print(f"  {'vocabulary':12} {'corpus':22} {'pure cold':>10} {'pure warm':>10} {'ours fast':>10} {'tiktoken':>10}"
          f" {'cold/tt':>8} {'warm/tt':>8} {'fast/tt':>8}  ids")
    for vocabulary, per_corpus in report["encode_published"].items():
        for corpus, row in per_corpus.items():
            print(
                f"  {vocabulary:12} {corpus:22} {row['ours_pure_cold_cache']['mb_per_s']:10.2f}"
                f" {row['ours_pure_warm_cache']['mb_per_s']:10.2f} {row['ours_tiktoken_backend']['mb_per_s']:10.2f}"
                f" {row['tiktoken']['mb_per_s']:10.2f} {row['ratio_ours_pure_cold_to_tiktoken']:8.3f}"
                f" {row['ratio_ours_pure_warm_to_tiktoken']:8.3f} {row['ratio_ours_fast_to_tiktoken']:8.3f}"
                f"  {'same' if row['ids_identical'] else 'DIFFERENT'}"
            )
    training = report["training"]
    runs = training["training"]
    print(f"\nBPE training, vocab {training['requested_vocab_size']}, {training['training_bytes'] / 1e6:.2f} MB"
          f" (held out {training['held_out_bytes'] / 1e6:.2f} MB)")
    print(f"  ours ({runs['ours']['vocab_size']} ids, 1 thread):           {runs['ours']['seconds']:8.2f} s")
    hf_default = runs["hf_default_threads"]
    print(f"  HF   ({hf_default['vocab_size']} ids, {hf_default['threads']} threads, default): {hf_default['seconds']:8.2f} s"
          f"   ours/HF = {runs['ratio_ours_to_hf_default_threads']:.2f}x")
    hf_single = runs["hf_single_thread"]
    print(f"  HF   ({hf_single['vocab_size']} ids, 1 thread):           {hf_single['seconds']:8.2f} s"
          f"   ours/HF = {runs['ratio_ours_to_hf_single_thread']:.2f}x")
    held = training["held_out"]
    print(f"  held-out bytes/token: ours {held['ours_bytes_per_token']:.4f}, HF {held['hf_bytes_per_token']:.4f}"
          f" ({held['relative_difference']:+.2%})")
    encode = training["encode_held_out"]
    print("  encode held-out with own trained vocabulary, MB/s:"
          f" ours pure cold {encode['ours_pure_cold_cache']['mb_per_s']:.2f}, warm {encode['ours_pure_warm_cache']['mb_per_s']:.2f},"
          f" ours fast {encode['ours_tiktoken_backend']['mb_per_s']:.2f}; HF 1 thread cold {encode['hf_cold_cache']['mb_per_s']:.2f},"
          f" warm {encode['hf_warm_cache']['mb_per_s']:.2f}")
    print(f"  ratios to HF cold: ours pure cold {encode['ratio_ours_pure_cold_to_hf_cold']:.3f},"
          f" ours fast {encode['ratio_ours_fast_to_hf_cold']:.3f}")
    print("\nOne long word (o200k_base), seconds (best of the timed calls; ours with a cold cache):")
    for name, row in report["long_words"].items():
        print(f"  {name:18} {row['characters']:>9,} chars: ours pure {row['ours_pure_seconds']:6.2f} s, tiktoken"
              f" {row['tiktoken_seconds']:6.2f} s ({row['ratio_ours_to_tiktoken_time']:.1f}x the time)"
              f"  {'same' if row['ids_identical'] else 'DIFFERENT'}")
    print("\nGoals")
    for goal in report["goals"].values():
        print(f"  [{'met' if goal['goal_met'] else 'NOT MET'}] {goal['goal']}: {goal['value']:.3f}")
    print(f"\nids identical everywhere: {report['ids_identical']}")
    if not report["quiet_machine"]:
        print(f"warning: ours fast and tiktoken (the same engine) differ by more than {QUIET_TOLERANCE:.0%} somewhere:"
              " the machine was busy, take the speeds as rough; rerun when it is quiet, or with a larger --repeat")


def read_corpora(data_dir: Path, quick: bool) -> dict[str, str]:
    """The two corpora; with `quick`, only their first QUICK_CORPUS_BYTES bytes (whole characters)."""
    corpora = {}
    for name in CORPORA:
        text = read_text_file(data_dir / name)
        if quick:
            text = text.encode("utf-8")[:QUICK_CORPUS_BYTES].decode("utf-8", errors="ignore")
        corpora[name] = text
    return corpora


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help=f"folder holding {' and '.join(CORPORA)}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tokenizers.json"), help="JSON report path")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions; the best is kept (default 3)")
    parser.add_argument("--quick", action="store_true", help=f"first {QUICK_CORPUS_BYTES // 1000} KB of each corpus, vocab {QUICK_VOCAB_SIZE}: checks the script")
    parser.add_argument("--hf-training-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.hf_training_worker:
        hf_training_worker(args.hf_training_worker)
        return 0
    if not args.data_dir.is_dir():
        print(f"error: data folder not found: {args.data_dir} (pass --data-dir with {' and '.join(CORPORA)})", file=sys.stderr)
        return 1
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 1
    os.environ.update(_HF_THREAD_VARIABLES)  # before `tokenizers` is first imported
    try:
        import tiktoken  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as error:
        print(f"error: the benchmark needs its peers ({error.name}): pip install -e '.[dev]'", file=sys.stderr)
        return 1

    started = time.perf_counter()
    vocab_size = QUICK_VOCAB_SIZE if args.quick else FULL_VOCAB_SIZE
    try:
        corpora = read_corpora(args.data_dir, args.quick)
        report: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "settings": {
                "quick": args.quick,
                "repeat": args.repeat,
                "timing": "one untimed warm-up call each, then `repeat` timed calls round-robin; best wall time (time.perf_counter) kept; garbage collector off while timing",
                "mb": "10^6 UTF-8 bytes of input",
                "corpus_bytes": {name: len(text.encode("utf-8")) for name, text in corpora.items()},
                "hf_encode_threads": "single: RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false set before importing tokenizers",
                "hf_training_threads": "default (a child process without those variables) and single thread, both recorded",
                "cold_cache": "piece caches emptied before every timed repetition (ours: _cache.clear(); HF: model._clear_cache())",
            },
            "encode_published": benchmark_published(corpora, args.repeat),
            "long_words": benchmark_long_words(QUICK_LONG_WORD_CHARS if args.quick else LONG_WORD_CHARS, min(args.repeat, 2)),
            "training": benchmark_training(corpora, vocab_size, args.repeat),
        }
    except LanterneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report["ids_identical"] = report["training"]["encode_held_out"]["ids_identical"] and all(
        row["ids_identical"] for per_corpus in report["encode_published"].values() for row in per_corpus.values()
    )
    report["ids_identical"] = report["ids_identical"] and all(row["ids_identical"] for row in report["long_words"].values())
    pure_ratios = [row["ratio_ours_pure_cold_to_tiktoken"] for row in report["encode_published"]["o200k_base"].values()]
    report["goals"] = {
        **report["training"]["goals"],
        "pure_encode_o200k": {
            "goal": f"o200k_base pure-Python encode (cold cache) >= {MIN_PURE_TO_TIKTOKEN}x tiktoken on both corpora",
            "value": min(pure_ratios),
            "goal_met": min(pure_ratios) >= MIN_PURE_TO_TIKTOKEN,
        },
    }
    report["quiet_machine"] = all(row["quiet_machine"] for per_corpus in report["encode_published"].values() for row in per_corpus.values())
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["total_seconds"] = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"\nwritten: {args.out}  ({report['total_seconds']:.0f} s)")
    if not report["ids_identical"]:
        print("error: the encoders disagree on some ids, so their speeds are not comparable (see ids_identical in the JSON)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
