"""Training the recap's models (`lanterne train --arch`): streams, a carried and detached state, exact resume.

Also the token cache a resumed run must find again (for every architecture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lanterne
from lanterne.cli import main
from lanterne.errors import CheckpointError, ConfigError, TrainingDataError
from lanterne.generation import generate
from lanterne.recurrent import ARCHITECTURES, RecurrentConfig, RecurrentLM
from lanterne.training import architectures, data
from lanterne.training.checkpointing import STATE_FILE
from lanterne.training.streams import TokenStreams, carry_over, restore_state, state_tensors
from lanterne.training.trainer import TrainingConfig, settings_from, train

# Repetitive: a small model learns it in a few dozen steps.
TEXT = "".join(f"le chat {i % 7} dort sur le tapis {i % 5}.\n" for i in range(300))
SETTINGS = {"context_length": 16, "d_model": 16, "hidden_size": 32, "batch_size": 4, "eval_interval": 15, "eval_batches": 1,
            "sample_tokens": 8, "warmup_steps": 2, "learning_rate": 0.01, "dtype": "float32", "log_interval": 100}


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def cli_train(corpus: Path, out: Path, arch: str, steps: int, **overrides) -> int:
    argv = ["train", "--arch", arch, "--data", str(corpus), "--out", str(out), "--max-steps", str(steps), "--json"]
    for key, value in {**SETTINGS, **overrides}.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    return main(argv)


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_recap_model_learns_from_the_cli_and_its_run_loads_and_generates(arch, corpus, tmp_path, capsys):
    run = tmp_path / arch
    assert cli_train(corpus, run, arch, 30) == 0
    summary = json.loads(capsys.readouterr().out)
    history = losses(run)
    assert sorted(history) == list(range(1, 31))
    assert np.mean([history[s] for s in range(26, 31)]) < history[1] - 1.0, "the loss goes down"
    assert summary["full_validation_loss"] < history[1] - 1.0, "and so does the validation loss, read cold"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r["mfu"], float) for r in records if r["kind"] == "train")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [15, 30] and records[-1]["kind"] == "final"
    assert (run / "loss.png").stat().st_size > 1000
    config = json.loads((run / "checkpoints" / "step-0000030" / "config.json").read_text())
    assert config["model_type"] == "lanterne-recurrent" and config["arch"] == arch and config["hidden_size"] == 32
    model, tokenizer = lanterne.load(run)
    assert isinstance(model, RecurrentLM) and model.config.arch == arch
    text = generate(model, tokenizer, "le chat", max_new_tokens=20, temperature=0)
    assert len(text) > 5 and set(text) <= set(TEXT)
    assert main(["generate", "le chat", "--model", str(run), "--max-new-tokens", "10", "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_resume_is_exact_with_the_carried_state(arch, tmp_path):
    """12 steps in one go, or 5 then resumed to 12: the same losses and weights (dropout on, streams wrap every 3 steps)."""
    corpus = tmp_path / "short.txt"
    corpus.write_text(TEXT[:230], encoding="utf-8")  # 207 training ids: 4 streams of 51, 6 windows of 8 each
    model = {"context_length": 8, "d_model": 16, "hidden_size": 16, "n_layers": 1 if arch == "mlp" else 2, "dropout": 0.1}
    common = dict(arch=arch, data=str(corpus), model=model, batch_size=4, gradient_accumulation=2, max_steps=12, decay_steps=12,
                  checkpoint_interval=5, eval_interval=100, eval_batches=1, sample_tokens=4, warmup_steps=2, learning_rate=0.01,
                  dtype="float32", log_interval=100, progress=False, seed=3)
    train(TrainingConfig(**{**common, "out": str(tmp_path / "whole")}))
    train(TrainingConfig(**{**common, "out": str(tmp_path / "parts"), "max_steps": 5}))
    state = torch.load(tmp_path / "parts" / "checkpoints" / "step-0000005" / STATE_FILE, weights_only=True)
    assert state["streams"]["offsets"] == [32] * 4, "10 windows read, 6 per pass: 4 into the second pass"
    assert all(tensor.shape[0 if name == "window" else 1] == 4 for name, tensor in state["carried"].items())
    assert any(tensor.abs().sum() > 0 for tensor in state["carried"].values()), "a state is carried into step 6"
    train(TrainingConfig(**{**common, "out": str(tmp_path / "parts"), "resume": True}))
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")
    whole, _ = lanterne.load(tmp_path / "whole")
    parts, _ = lanterne.load(tmp_path / "parts")
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), parts.state_dict().values()))
    ends = [torch.load(tmp_path / run / "checkpoints" / "step-0000012" / STATE_FILE, weights_only=True) for run in ("whole", "parts")]
    assert ends[0]["streams"] == ends[1]["streams"]
    assert all(torch.equal(ends[0]["carried"][name], ends[1]["carried"][name]) for name in ends[0]["carried"])


def test_streams_are_contiguous_rows_that_wrap_together():
    tokens = np.arange(40, dtype=np.uint16)  # the id is the position: windows are easy to read
    streams = TokenStreams(tokens, batch_size=3, context_length=4)  # each row owns 13 ids: 3 windows, then it wraps
    assert streams.stream_length == 13
    seen = [streams.next_windows() for _ in range(7)]
    for call, (inputs, targets, fresh) in enumerate(seen):
        offset = 4 * (call % 3)
        assert inputs.dtype == torch.int64 and inputs.shape == (3, 4)
        assert torch.equal(inputs, torch.tensor([[13 * row + offset + t for t in range(4)] for row in range(3)]))
        assert torch.equal(targets, inputs + 1), "the target is the next id"
        assert fresh.tolist() == [call % 3 == 0] * 3, "the state is emptied where a stream starts again"
        if call % 3:  # each row continues exactly where it stopped
            assert torch.equal(inputs[:, 0], seen[call - 1][0][:, -1] + 1)
    assert int(seen[2][1].max()) == 38, "the last row's last window ends at id 38; id 39, less than a window, is never read"
    again = TokenStreams(tokens, batch_size=3, context_length=4)
    again.load_state_dict(json.loads(json.dumps(streams.state_dict())))  # plain values
    for expected, got in zip([streams.next_windows() for _ in range(4)], [again.next_windows() for _ in range(4)]):
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(CheckpointError, match="3 streams of 13 tokens .* resume with batch_size=3"):
        TokenStreams(tokens, batch_size=2, context_length=4).load_state_dict(streams.state_dict())
    with pytest.raises(TrainingDataError, match="cannot be cut into 10 streams of at least 5 tokens; lower batch_size"):
        TokenStreams(tokens, batch_size=10, context_length=4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_state_is_detached_between_windows_and_emptied_where_a_stream_starts(arch):
    torch.manual_seed(0)
    model = RecurrentLM(RecurrentConfig(arch=arch, vocab_size=20, context_length=4, d_model=8, hidden_size=8, n_layers=2))
    ids = torch.randint(0, 20, (3, 9))
    state = model.new_cache(3)
    model(ids[:, :4], ids[:, 1:5], cache=state).loss.backward()  # frees the first window's graph
    carry_over(state, torch.tensor([False, True, False]))
    tensors = state_tensors(state)
    assert all(not tensor.requires_grad and tensor.grad_fn is None for tensor in tensors.values())
    for name, tensor in tensors.items():  # (layers, batch, hidden), or the MLP's (batch, context_length) ids
        rows = tensor if name == "window" else tensor.transpose(0, 1)
        empty = -1 if name == "window" else 0
        assert bool((rows[1] == empty).all()), "row 1 starts its stream again: nothing carried"
        assert bool((rows[0] != empty).all()) and bool((rows[2] != empty).all()), "the other rows keep their state"
    model.zero_grad()
    second = model(ids[:, 4:8], ids[:, 5:9], cache=state).loss
    second.backward()  # would raise "backward through the graph a second time" if the state led into window 1
    carried_gradient = [p.grad.clone() for p in model.parameters()]
    fixed = model.new_cache(3)  # the same numbers as constants: the gradient stops at the window's start
    restore_state(fixed, {name: tensor.clone() for name, tensor in tensors.items()}, slice(0, 3), torch.device("cpu"))
    model.zero_grad()
    again = model(ids[:, 4:8], ids[:, 5:9], cache=fixed).loss
    again.backward()
    assert torch.equal(second, again)
    assert all(torch.equal(a, p.grad) for a, p in zip(carried_gradient, model.parameters()))


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--arch", "lstm", "--preset", "tiny"], "--preset names a GPT's shape and --arch lstm has its own: drop --preset"),
        (["--arch", "gru", "--set", "fsdp=true"], "fsdp shards a GPT's blocks and --arch gru has none: drop fsdp"),
        (["--arch", "rnn", "--set", "n_heads=2"], "unknown setting 'n_heads' for --arch rnn; .*model .*: .*hidden_size"),
        (["--set", "hidden_size=64"], "unknown setting 'hidden_size' for --arch gpt; .*n_heads"),
    ],
)
def test_what_a_recap_model_cannot_do_is_refused_in_one_line(corpus, tmp_path, capsys, extra, message):
    import re

    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--json", *extra]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    assert not (tmp_path / "run").exists(), "refused before anything is written"


def test_auto_number_format_trains_a_recurrent_model_in_fp32_on_a_bf16_cpu(corpus, tmp_path, monkeypatch):
    """bf16 autocast breaks PyTorch's CPU LSTM: 'auto' then picks fp32; asking for bf16 is refused in one line."""
    from lanterne.training import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)

    def config(out: str, dtype: str) -> TrainingConfig:
        return TrainingConfig(data=str(corpus), out=str(tmp_path / out), arch="lstm", device="cpu", dtype=dtype, max_steps=2,
                              batch_size=4, eval_interval=2, eval_batches=1, sample_tokens=4, progress=False,
                              model={"context_length": 16, "d_model": 16, "hidden_size": 32})

    assert train(config("auto", "auto")).steps == 2
    with pytest.raises(ConfigError, match="fail under bf16 autocast; train it with --set dtype=float32"):
        train(config("asked", "bfloat16"))


def test_settings_follow_the_arch():
    training, model = settings_from(["hidden_size=64", "dropout=0.1", "learning_rate=0.003"], arch="lstm")
    assert model == {"hidden_size": 64, "dropout": 0.1} and training == {"learning_rate": 0.003}
    training, model = settings_from(["arch=gru", "hidden_size=64"], {"model": {"n_layers": 2}})
    assert training == {"arch": "gru"} and model == {"n_layers": 2, "hidden_size": 64}
    training, model = settings_from(["hidden_size=8"], {"arch": "mlp"})
    assert model == {"hidden_size": 8}
    with pytest.raises(ConfigError, match="unknown architecture 'transformer'"):
        settings_from([], arch="transformer")
    with pytest.raises(ConfigError, match="unknown model setting.*n_heads for --arch lstm; known: .*hidden_size"):
        architectures.model_config("lstm", 30, {"n_heads": 2}, None, None)  # a settings file's [model] table
    assert architectures.model_config("gru", 30, {"hidden_size": 8}, None, None) == RecurrentConfig(arch="gru", vocab_size=30, hidden_size=8)


def test_a_run_keeps_its_arch_on_resume(corpus, tmp_path):
    run = tmp_path / "run"
    assert cli_train(corpus, run, "gru", 2, eval_interval=2) == 0
    with pytest.raises(CheckpointError, match="trains --arch gru, not lstm; drop --arch to resume"):
        train(TrainingConfig(arch="lstm", data=str(corpus), out=str(run), resume=True, progress=False))
    with pytest.raises(ConfigError, match="--preset names a GPT's shape"):
        train(TrainingConfig(data=str(corpus), out=str(run), preset="tiny", resume=True, progress=False))
    resumed = train(TrainingConfig(data=str(corpus), out=str(run), max_steps=3, resume=True, progress=False,
                                   batch_size=4, eval_interval=15, eval_batches=1, sample_tokens=4))  # no --arch: the run's own
    assert resumed.steps == 3 and lanterne.load(run).model.config.arch == "gru"


# -- the token cache on resume --------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["char", "bpe:300"])
def test_a_resumed_run_reuses_the_token_cache_of_its_first_run(corpus, tmp_path, monkeypatch, tokenizer):
    builds = []
    real_build = data._build_cache
    monkeypatch.setattr(data, "_build_cache", lambda folder, *rest: builds.append(folder) or real_build(folder, *rest))
    common = dict(data=str(corpus), out=str(tmp_path / "run"), tokenizer=tokenizer, model={"context_length": 16, "d_model": 16, "n_heads": 2, "n_layers": 1},
                  batch_size=2, eval_interval=2, eval_batches=1, sample_tokens=4, progress=False)
    train(TrainingConfig(**common, max_steps=2))
    train(TrainingConfig(**{**common, "tokenizer": None}, max_steps=4, resume=True))
    assert len(builds) == 1, "the corpus was tokenized once"
    assert [path.name for path in (Path(os.environ["LANTERNE_CACHE"]) / "datasets").iterdir()] == [builds[0].name]


def test_a_cache_made_by_another_tokenizer_of_the_same_spec_is_not_reused(corpus, tmp_path):
    """The resumed run's own tokenizer wins: a cache whose 'char' vocabulary differs is left alone."""
    cached = data.prepare_corpus(corpus, "char", show_progress=False)
    own = data.CharTokenizer(set(TEXT) | {"€"})  # what 'char' gave the run on some other day
    corpus_again = data.prepare_corpus(corpus, "char", show_progress=False, known_tokenizer=own)
    assert corpus_again.folder != cached.folder and corpus_again.tokenizer.vocab_size == own.vocab_size
    assert corpus_again.train.tolist() == own.encode(TEXT)[: len(corpus_again.train)]
    assert data.prepare_corpus(corpus, "char", show_progress=False, known_tokenizer=cached.tokenizer).folder == cached.folder


# -- processes --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_from_their_gathered_state(corpus, tmp_path):
    """DDP over 2 CPU processes (gloo), each carrying the state of its half of the streams, gives the one-process
    losses; a 2-process run stopped at step 5 resumes in one process (the checkpoint holds every stream's state)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [x for key, value in SETTINGS.items() for x in ("--set", f"{key}={json.dumps(value)}")]

    def command(out: Path, steps: int, processes: int, *extra: str) -> list[str]:
        start = [sys.executable, "-m", "lanterne.cli"] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "lanterne.cli"]
        return start + ["train", "--arch", "lstm", "--data", str(corpus), "--out", str(out), "--max-steps", str(steps), "--json",
                        "--set", "checkpoint_interval=5", "--set", "decay_steps=10", *sets, *extra]

    for argv in (command(tmp_path / "one", 10, 1), command(tmp_path / "two", 10, 2),
                 command(tmp_path / "mixed", 5, 2), command(tmp_path / "mixed", 10, 1, "--resume")):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one = losses(tmp_path / "one")
    for other in (losses(tmp_path / "two"), losses(tmp_path / "mixed")):
        assert sorted(other) == list(range(1, 11))
        for step in one:
            assert other[step] == pytest.approx(one[step], rel=1e-4, abs=1e-5)
