"""`lanterne compare`: a GPT and the recap's recurrent models, same size, same time, same text — measured.

Each model trains with the same trainer on the same text for the same wall-clock time, with about the
same number of parameters; then each is measured the same way: held-out loss and bits per byte, loss
by position in the window (who uses distant tokens), training and generation speed, and accuracy on
the associative-recall task by distance (`recall.py`).
"""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lanterne.comparison.measures import loss_by_position, matched_hidden_size
from lanterne.comparison.recall import RecallTask, train_on_recall
from lanterne.errors import ConfigError
from lanterne.evaluation import bits_per_byte
from lanterne.recurrent import ARCHITECTURES

COMPARED = ("gpt", *ARCHITECTURES)
RESULTS_FILE = "compare.json"


@dataclass
class CompareSettings:
    """What `lanterne compare` trains. Sizes are total parameters; times are per model."""

    data: str
    archs: tuple[str, ...] = ("gpt", "lstm")
    parameters: int = 800_000  # the GPT's shape below gives this; the recurrent models are matched to it
    minutes: float = 3.0  # training on the text, per model
    recall_minutes: float = 1.5  # training on the recall task, per model
    context_length: int = 128  # characters per training window
    tokenizer: str = "char"
    out: str = "lanterne-compare"
    seed: int = 1337
    recall: RecallTask = field(default_factory=lambda: RecallTask(items=32, symbols=16))

    def __post_init__(self) -> None:
        unknown = [arch for arch in self.archs if arch not in COMPARED]
        if unknown or not self.archs:
            raise ConfigError(f"unknown architecture(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(COMPARED)}")
        if not self.minutes > 0 or not self.recall_minutes >= 0:
            raise ConfigError("the training times must be positive minutes")
        if self.parameters < 10_000:
            raise ConfigError(f"a budget of {self.parameters:,} parameters is too small to learn anything; give at least 10k")


def parse_budget(text: str) -> dict:
    """'5min' or '5m' (minutes per model on the text), '300s', '2M' or '500k' (parameters): the matching settings."""
    value = str(text).strip().lower().replace("_", "").replace(",", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(min|m|s|k|)", value)
    if not match:
        raise ConfigError(f"cannot read the budget {text!r}; write minutes per model (5min), seconds (300s) or parameters (500k, 2M, 800000)")
    number, unit = float(match.group(1)), match.group(2)
    if unit in ("min", "s"):
        return {"minutes": number if unit == "min" else number / 60}
    if unit == "m" and text.strip().endswith("M"):
        return {"parameters": int(number * 1_000_000)}
    if unit == "m":
        return {"minutes": number}
    return {"parameters": int(number * 1000 if unit == "k" else number)}


@dataclass
class ModelReport:
    """One architecture, trained and measured."""

    arch: str
    parameters: int
    steps: int
    train_seconds: float
    validation_loss: float  # nats per token, over the held-out text
    bits_per_byte: float
    loss_by_position: list[float]  # nats, at each position of a window read from its start
    train_tokens_per_second: float
    generate_tokens_per_second: float
    sample: str
    recall_parameters: int | None = None
    recall_steps: int | None = None
    recall_distances: list[int] = field(default_factory=list)
    recall_accuracy: list[float] = field(default_factory=list)


@dataclass
class ComparisonReport:
    settings: dict
    models: list[ModelReport]
    seconds: float

    def as_dict(self) -> dict:
        return {"settings": self.settings, "models": [asdict(model) for model in self.models], "seconds": round(self.seconds, 1)}

    def model(self, arch: str) -> ModelReport:
        return next(model for model in self.models if model.arch == arch)

    @classmethod
    def from_dict(cls, data: dict) -> "ComparisonReport":
        return cls(data["settings"], [ModelReport(**model) for model in data["models"]], data["seconds"])


def read_comparison(folder: str | Path) -> ComparisonReport | None:
    """The results `lanterne compare` wrote in `folder` (compare.json), or None when there are none or they do not read."""
    import json

    path = Path(folder) / RESULTS_FILE
    try:
        return ComparisonReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gpt_shape(parameters: int, vocab_size: int, context_length: int) -> dict:
    """A GPT of 4 layers whose width gives about `parameters` (a multiple of 32: 4 heads of 8+)."""
    def shape(width: int) -> dict:
        return dict(vocab_size=vocab_size, context_length=context_length, d_model=width, n_heads=4, n_layers=4,
                    dropout=0.0, bias=False, activation="gelu")

    width = min(range(32, 2049, 32), key=lambda w: abs(_count("gpt", shape(w)) - parameters))
    return shape(width)


def recurrent_shape(arch: str, parameters: int, vocab_size: int, context_length: int, d_model: int = 128) -> dict:
    """The recap model `arch` with about `parameters`: 2 layers (the MLP: a window of 8 tokens, one hidden layer)."""
    d_model = min(d_model, 64) if arch == "mlp" else d_model
    layers = 1 if arch == "mlp" else 2
    window = 8 if arch == "mlp" else context_length
    hidden = matched_hidden_size(arch, parameters, vocab_size, d_model, layers, window)
    return dict(vocab_size=vocab_size, context_length=window, d_model=d_model, hidden_size=hidden, n_layers=layers)


def run_comparison(settings: CompareSettings, note: Callable[[str], None] = lambda message: None) -> ComparisonReport:
    """Train and measure every architecture of `settings`; write compare.json and the figures in settings.out."""
    from lanterne.checkpoints import load
    from lanterne.training.data import prepare_corpus
    from lanterne.training.trainer import TrainingConfig, train

    started = time.perf_counter()
    out = Path(settings.out)
    corpus = prepare_corpus(settings.data, settings.tokenizer, show_progress=False)
    vocab_size = corpus.tokenizer.vocab_size
    gpt = gpt_shape(settings.parameters, vocab_size, settings.context_length)
    gpt_parameters = _count("gpt", gpt)
    validation = torch.from_numpy(np.asarray(corpus.validation, dtype=np.int64))
    reports = []
    for arch in settings.archs:
        shape = gpt if arch == "gpt" else recurrent_shape(arch, gpt_parameters, vocab_size, settings.context_length)
        note(f"{arch}: {_count(arch, shape):,} parameters, training {settings.minutes:g} min on {Path(settings.data).name}")
        config = TrainingConfig(
            data=settings.data, tokenizer=settings.tokenizer, out=str(out / "runs" / arch), arch=arch, model=shape,
            batch_size=32, max_steps=10**9, max_seconds=settings.minutes * 60, learning_rate=2e-3, min_learning_rate=2e-3,
            warmup_steps=50, eval_interval=10**9, eval_batches=8, final_eval_tokens=50_000, keep_checkpoints=1,
            seed=settings.seed, overwrite=True, progress=False, sample_tokens=64,
            dtype="float32",  # the same arithmetic for every model, on every CPU (bf16 autocast fails for CPU LSTMs)
        )
        train_started = time.perf_counter()
        result = train(config)
        train_seconds = time.perf_counter() - train_started  # with the final evaluation and the checkpoint
        model, tokenizer = load(result.run_folder)
        loss = result.full_validation_loss
        report = ModelReport(
            arch=arch, parameters=model.num_parameters(), steps=result.steps, train_seconds=round(train_seconds, 1),
            validation_loss=round(loss, 4), bits_per_byte=round(bits_per_byte(loss, corpus.meta["validation_tokens"], corpus.meta["validation_bytes"]), 4),
            loss_by_position=[round(value, 4) for value in loss_by_position(model, validation, settings.context_length, windows=512, seed=settings.seed)],
            train_tokens_per_second=round(result.tokens_per_second, 1),
            generate_tokens_per_second=0.0, sample="",
        )
        report.generate_tokens_per_second, report.sample = _generation_speed(model, tokenizer, [int(i) for i in corpus.validation[:16]])
        note(f"{arch}: held-out loss {report.validation_loss:.3f} ({report.bits_per_byte:.3f} bits/byte) after {report.steps} steps")
        if settings.recall_minutes > 0:
            _train_recall(report, arch, settings, note)
        reports.append(report)
    comparison = ComparisonReport(_settings_dict(settings, gpt), reports, time.perf_counter() - started)
    from lanterne.comparison.figures import save_comparison

    save_comparison(comparison, out)
    return comparison


def _count(arch: str, shape: dict) -> int:
    from lanterne.model.config import GPTConfig
    from lanterne.recurrent import RecurrentConfig, RecurrentLM
    from lanterne.model.transformer import GPT

    with torch.device("meta"):
        model = GPT(GPTConfig.from_dict(shape)) if arch == "gpt" else RecurrentLM(RecurrentConfig(arch=arch, **shape))
    return model.num_parameters()


@torch.inference_mode()
def _generation_speed(model, tokenizer, prompt: list[int], new_tokens: int = 200) -> tuple[float, str]:
    """Tokens per second generating `new_tokens` greedily after `prompt` (one sequence), and the text."""
    from lanterne.generation import ContextWarning, generate_ids
    from lanterne.generation.sampling import SamplingSettings

    greedy = SamplingSettings(temperature=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextWarning)  # a GPT's window slides past its context, as expected
        for _ in generate_ids(model, [prompt], 8, greedy):  # warm up
            pass
        start = time.perf_counter()
        made = [step[0] for step in generate_ids(model, [prompt], new_tokens, greedy)]
        seconds = time.perf_counter() - start
    return round(len(made) / seconds, 1), tokenizer.decode(prompt + [t for t in made if t is not None])


def _train_recall(report: ModelReport, arch: str, settings: CompareSettings, note: Callable[[str], None]) -> None:
    """Train a fresh model of `arch` on the recall task for settings.recall_minutes; note its accuracy by distance."""
    from lanterne.model.config import GPTConfig
    from lanterne.recurrent import RecurrentConfig, RecurrentLM
    from lanterne.model.transformer import GPT

    task = settings.recall
    torch.manual_seed(settings.seed)
    # GPT-2's shape (learned positions), 2 layers of width 64; the recurrent model of 2 layers matched to it.
    gpt = GPTConfig.from_dict(dict(vocab_size=task.vocab_size, context_length=task.length, d_model=64, n_heads=4, n_layers=2,
                                   dropout=0.0, bias=True, positions="learned"))
    if arch == "gpt":
        model = GPT(gpt)
    else:
        shape = recurrent_shape(arch, GPT(gpt).num_parameters(), task.vocab_size, task.length, d_model=64)
        model = RecurrentLM(RecurrentConfig(arch=arch, **shape))
    result = train_on_recall(arch, model, task, steps=10**9, batch_size=64, learning_rate=3e-3,
                             seconds=settings.recall_minutes * 60, seed=settings.seed)
    report.recall_parameters, report.recall_steps = result.parameters, result.steps
    report.recall_distances, report.recall_accuracy = result.distances, result.accuracy
    note(f"{arch}: recall accuracy {result.accuracy[0]:.0%} at distance ≤ {result.distances[0]}, "
         f"{result.accuracy[-1]:.0%} at ≤ {result.distances[-1]}")


def _settings_dict(settings: CompareSettings, gpt_shape_used: dict) -> dict:
    settings_dict = asdict(settings)  # the recall task too, as a dict
    settings_dict["gpt_shape"] = gpt_shape_used
    settings_dict["archs"] = list(settings.archs)
    return settings_dict
