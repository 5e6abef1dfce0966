"""The training loop: read a batch, predict each next token, lower the cross-entropy, repeat.

AdamW with warmup and cosine decay, gradient accumulation and clipping, bf16 autocast where the
hardware has it, evaluation (loss, perplexity, bits per byte), atomic checkpoints, exact resume,
and data parallelism over processes started by torchrun. The GPT learns from random windows; the
recap's models (`arch`) read the text as streams and carry their state across windows (`streams`).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lanterne.errors import CheckpointError, ConfigError, InputFileError
from lanterne.files import writable_folder
from lanterne.training import architectures, checkpointing, distributed, streams
from lanterne.training.hardware import matmul_peak_flops, pick_device, pick_dtype, synchronize
from lanterne.training.metrics import PLOT_FILE, MetricsLog, ProgressDisplay, plot_loss_curve
from lanterne.training.schedule import learning_rate_at, make_optimizer


@dataclass
class TrainingConfig:
    """Every setting of a run. The defaults are nanoGPT's character-level Shakespeare on a laptop CPU."""

    data: str = ""
    tokenizer: str | None = None  # "char" (the default), "bpe:N", a published name or a tokenizer file; a resumed run keeps its own
    text_field: str = "text"  # for JSONL data
    validation_fraction: float = 0.1
    out: str = "runs/lanterne"
    arch: str | None = None  # 'gpt' for a new run, or the recap's 'mlp', 'rnn', 'gru', 'lstm'; a resumed run keeps its own
    preset: str | None = None  # GPT preset: 'tiny' for a new run; a resumed run keeps its own
    model: dict[str, Any] = field(default_factory=dict)  # GPTConfig fields overriding the preset, or RecurrentConfig fields
    batch_size: int = 12  # sequences per optimizer micro-step, over all processes
    gradient_accumulation: int = 1
    max_steps: int = 2000
    # Wall-clock limit (seconds) of the training loop: the step that passes it is the last (evaluated and
    # saved as max_steps would be). None: no limit. For equal-time comparisons (`lanterne compare`).
    max_seconds: float | None = None
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    decay_steps: int | None = None  # cosine decay length; None = max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250
    eval_batches: int = 20
    # At the last step, the validation loss over this many tokens of the split (all, if fewer), not a sample.
    # None: a tenth of the tokens trained on (so about 3% more time), at most 1,000,000. 0 skips it.
    final_eval_tokens: int | None = None
    checkpoint_interval: int | None = None  # None = eval_interval
    keep_checkpoints: int = 3
    log_interval: int = 10
    sample_tokens: int = 200
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # auto, float32, bfloat16 (autocast)
    compile: bool = False
    fsdp: bool = False  # shard weights, gradients and optimizer state over the processes (FSDP2); needs torchrun
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "gradient_accumulation", "max_steps", "eval_interval", "eval_batches", "keep_checkpoints", "log_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, not {getattr(self, name)!r}")
        if self.learning_rate <= 0 or self.min_learning_rate < 0:
            raise ConfigError("learning rates must be positive")
        if self.final_eval_tokens is not None and (not isinstance(self.final_eval_tokens, int) or self.final_eval_tokens < 0):
            raise ConfigError(f"final_eval_tokens must be a whole number >= 0 (0 skips the final evaluation), not {self.final_eval_tokens!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive (or unset for no limit), not {self.max_seconds!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; choose one")
        if self.arch is not None:
            architectures.check_arch_settings(self.arch, self.preset, self.fsdp)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


@dataclass
class TrainingResult:
    run_folder: Path
    steps: int
    final_validation_loss: float | None
    best_validation_loss: float | None
    tokens_per_second: float
    # The last step's validation loss over the whole split (up to final_eval_tokens), not over eval_batches samples.
    full_validation_loss: float | None = None
    full_validation_tokens: int | None = None  # how many tokens it was measured on


class Trainer:
    """Runs one training job described by a TrainingConfig; `run()` returns a TrainingResult."""

    def __init__(self, config: TrainingConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)
        self.group = distributed.start(self.device.type)
        if self.device.type == "cuda" and self.group.distributed:
            self.device = torch.device("cuda", self.group.local_rank)
        if config.batch_size % self.group.world_size:
            raise ConfigError(f"batch_size {config.batch_size} does not split over {self.group.world_size} processes; use a multiple")
        self.run_folder = Path(config.out)

    # -- setting up -------------------------------------------------------------------------------

    def _where_to_resume(self) -> str:
        saved = checkpointing.checkpoint_folders(self.run_folder)
        return f"the last checkpoint is step {saved[-1][0]}: add --resume to go on from it" if saved else "no checkpoint was written yet"

    def _prepare_folder(self) -> dict | None:
        """Check the output folder; return the checkpoint to resume from (None for a new run)."""
        folder = self.run_folder
        has_run = folder.exists() and any(folder.iterdir())
        if self.config.resume:
            latest = checkpointing.load_latest(folder)
            if latest is None:
                raise CheckpointError(f"nothing to resume in {folder}: it has no checkpoint; drop --resume to start a new run")
            if self.group.is_main:
                checkpointing.remove_leftovers(folder)
            return {"folder": latest[0], "progress": latest[1], "state": latest[2]}
        if has_run and not self.config.overwrite:
            raise InputFileError(f"{folder} already holds files; pass --resume to continue that run or --overwrite to replace it")
        if self.group.is_main:
            if has_run:
                for name in (checkpointing.CHECKPOINTS, "metrics.jsonl", PLOT_FILE):
                    target = folder / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
                checkpointing.remove_leftovers(folder)
            writable_folder(folder)
        return None

    def _check_same_run(self, resumed: dict) -> tuple[str, str]:
        """Refuse to resume with another architecture, tokenizer or split; note the settings that changed
        (the text: `_check_same_text`).

        Returns the run's architecture and tokenizer setting (as given when the run began).
        """
        config, folder = self.config, self.run_folder
        saved = resumed["progress"].get("training_config", {})
        run_arch = saved.get("arch") or architectures.GPT_ARCH  # runs from before --arch trained GPTs
        if config.arch is not None and config.arch != run_arch:
            raise CheckpointError(
                f"{folder} trains --arch {run_arch}, not {config.arch}; drop --arch to resume (a run keeps its model), or train into a new --out"
            )
        architectures.check_arch_settings(run_arch, config.preset, config.fsdp)
        run_tokenizer = saved.get("tokenizer") or "char"
        if config.tokenizer is not None and config.tokenizer != run_tokenizer:
            raise CheckpointError(
                f"{folder} was trained with --tokenizer {run_tokenizer}, not {config.tokenizer}; "
                "drop --tokenizer to resume (a run keeps its tokenizer), or train into a new --out"
            )
        if saved.get("validation_fraction", config.validation_fraction) != config.validation_fraction:
            raise CheckpointError(
                f"{folder} split its text with validation_fraction={saved['validation_fraction']}, not {config.validation_fraction}; "
                "drop that setting to resume, or train into a new --out"
            )
        ignored = {"resume", "overwrite", "progress", "tokenizer", "arch", "data", "out"}
        changed = [f"{key} {saved[key]!r} -> {value!r}" for key, value in asdict(config).items()
                   if key not in ignored and key in saved and saved[key] != value]
        self._changed_on_resume = f" (changed: {', '.join(changed)})" if changed else ""
        return run_arch, run_tokenizer

    def _check_same_text(self, resumed: dict, corpus) -> None:
        """Refuse to resume on other text: compared by content hash, so a moved copy of the same file is fine."""
        expected = resumed["progress"].get("corpus_hash")
        if expected is not None and corpus.meta["content_hash"] != expected:
            raise CheckpointError(
                f"{self.run_folder} was trained on other text than {self.config.data} "
                f"(was: {resumed['progress'].get('training_config', {}).get('data')}); "
                "resume with the same --data (and --text-field), or train into a new --out"
            )

    def _autocast(self):
        """bf16 autocast when the run computes in bf16; nothing otherwise."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> TrainingResult:
        try:
            return self._run()
        except KeyboardInterrupt:
            if self.group.is_main:
                print(f"training interrupted; {self._where_to_resume()}", file=sys.stderr, flush=True)
            raise
        except OSError as error:  # the metrics or the plot could not be written: a full disk, a folder gone
            raise InputFileError(f"cannot write in {self.run_folder} ({error.strerror or error}); {self._where_to_resume()}") from None
        finally:
            distributed.stop(self.group)

    def _run(self) -> TrainingResult:
        from lanterne.tokenization import load as load_tokenizer
        from lanterne.training.data import check_enough_tokens, prepare_corpus, sample_windows

        config, group = self.config, self.group
        resumed = self._prepare_folder()
        if not config.data:
            raise InputFileError("no training data: pass --data FILE (a text file, a folder of .txt files or a .jsonl file)")
        if resumed:
            arch, run_tokenizer = self._check_same_run(resumed)
        else:
            arch, run_tokenizer = config.arch or architectures.GPT_ARCH, config.tokenizer or "char"
        # A resumed run reads its own tokenizer from the checkpoint, and finds the token cache its first run made.
        known_tokenizer = load_tokenizer(resumed["folder"] / "tokenizer.json") if resumed else None
        corpus = None
        for turn in ("main", "others"):  # rank 0 tokenizes and caches first; the others then reuse its cache
            if (turn == "main") == group.is_main:
                corpus = prepare_corpus(
                    config.data, run_tokenizer, text_field=config.text_field, validation_fraction=config.validation_fraction,
                    show_progress=config.progress and group.is_main, known_tokenizer=known_tokenizer,
                )
            distributed.barrier(group)
        if resumed:
            self._check_same_text(resumed, corpus)
        model_config = architectures.model_config(
            arch, corpus.tokenizer.vocab_size, dict(config.model), config.preset, resumed["folder"] if resumed else None
        )
        check_enough_tokens(corpus, model_config.context_length, config.batch_size)
        if arch in ("rnn", "gru", "lstm") and self.dtype == torch.bfloat16 and self.device.type == "cpu":
            if config.dtype != "auto":
                raise ConfigError(f"PyTorch's CPU {arch.upper()} kernels fail under bf16 autocast; train it with --set dtype=float32")
            self.dtype = torch.float32  # 'auto' picks what works: fp32 for the recap's recurrent layers on a CPU
        # Truncated backpropagation through time: the recap's models read the text as streams, their state carried.
        token_streams = streams.TokenStreams(corpus.train, config.batch_size, model_config.context_length) if architectures.is_recurrent(arch) else None

        torch.manual_seed(config.seed)
        model = architectures.build_model(model_config).to(self.device)
        data_generator = torch.Generator().manual_seed(config.seed)
        start_step, best_loss, best_step = 0, None, None
        if resumed:
            from lanterne.weights import load_state, read_safetensors

            try:
                load_state(model, read_safetensors(resumed["folder"] / "model.safetensors"), str(resumed["folder"]))
            except CheckpointError as error:  # damaged after it was written (atomic writes never leave one half-done)
                before = [folder for _, folder in checkpointing.checkpoint_folders(self.run_folder)][-2:-1]
                fix = f"delete {resumed['folder']} to resume from {before[0].name}" if before else "start again with --overwrite"
                raise CheckpointError(f"cannot resume: {str(error).split('; ')[0]}; {fix}") from None
        if config.fsdp:
            if not group.distributed:
                raise ConfigError("fsdp shards the model over several processes: start the run with torchrun --nproc_per_node=N")
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
        optimizer = make_optimizer(
            model, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
            betas=(config.beta1, config.beta2), device=self.device,
        )
        if resumed:
            state = resumed["state"]
            if state.get("sharded", False) != config.fsdp:
                raise CheckpointError(
                    f"the checkpoint in {resumed['folder']} was saved with fsdp={state.get('sharded', False)}; resume with the same fsdp setting"
                )
            if config.fsdp:
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

                set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(state["optimizer"])
            data_generator.set_state(state["data_generator"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            progress_saved = resumed["progress"]
            start_step, best_loss, best_step = progress_saved["step"], progress_saved.get("best_validation_loss"), progress_saved.get("best_step")

        engine = model
        if group.distributed and not config.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            engine = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if config.compile:
            engine = torch.compile(engine)

        metrics = MetricsLog(self.run_folder, start_step if resumed else None) if group.is_main else None
        display = ProgressDisplay(config.max_steps, start_step, config.log_interval, enabled=config.progress and group.is_main)
        peak_flops = matmul_peak_flops(self.device, self.dtype) if group.is_main else None
        decay_steps = config.decay_steps or config.max_steps
        checkpoint_interval = config.checkpoint_interval or config.eval_interval
        tokens_per_step = config.batch_size * config.gradient_accumulation * model_config.context_length
        per_rank = config.batch_size // group.world_size
        rows = slice(group.rank * per_rank, (group.rank + 1) * per_rank)
        carried = model.new_cache(per_rank) if token_streams else None  # what this process's streams carry to their next window
        if resumed and token_streams:
            token_streams.load_state_dict(resumed["state"]["streams"])
            streams.restore_state(carried, resumed["state"]["carried"], rows, self.device)
        if resumed:
            display.note(f"resuming {self.run_folder} at step {start_step}{self._changed_on_resume}")
            if start_step >= config.max_steps:
                display.note(f"nothing to train: the run is at step {start_step} and --max-steps is {config.max_steps}; raise it to go on")
        last_validation = resumed["progress"].get("validation_loss") if resumed else None
        saved = resumed["progress"] if resumed else {}
        full_validation = (saved.get("full_validation_loss"), saved.get("full_validation_tokens"))
        step = start_step
        window_started, window_steps = time.perf_counter(), 0
        loop_started, last = time.perf_counter(), False
        model.train()
        while not last and step < config.max_steps:
            learning_rate = learning_rate_at(
                step, peak=config.learning_rate, minimum=config.min_learning_rate, warmup_steps=config.warmup_steps, decay_steps=decay_steps
            )
            for group_settings in optimizer.param_groups:
                group_settings["lr"] = learning_rate
            step_loss = torch.zeros((), device=self.device)
            for micro in range(config.gradient_accumulation):
                carry = {}
                if token_streams:  # the next window of each stream, the state carried from the last one (detached)
                    inputs, targets, fresh = token_streams.next_windows()
                    streams.carry_over(carried, fresh[rows].to(self.device))
                    carry = {"cache": carried}
                else:
                    inputs, targets = sample_windows(corpus.train, config.batch_size, model_config.context_length, data_generator)
                inputs, targets = inputs[rows].to(self.device), targets[rows].to(self.device)
                last_micro = micro == config.gradient_accumulation - 1
                # Between micro-steps DDP need not average gradients: only the last backward syncs.
                if config.fsdp:
                    model.set_requires_gradient_sync(last_micro)
                with engine.no_sync() if group.distributed and not config.fsdp and not last_micro else contextlib.nullcontext():
                    with self._autocast():
                        # The ids come from the model's own tokenizer: skip the checks (a GPU sync, a compile break).
                        loss = engine(inputs, targets, check=False, **carry).loss / config.gradient_accumulation
                    loss.backward()
                step_loss += loss.detach()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1
            step_loss = float(distributed.mean_over_processes(step_loss, group))
            last = step == config.max_steps
            if config.max_seconds is not None:  # every process stops at the same step: the first whose clock ran out
                late = torch.tensor(float(time.perf_counter() - loop_started >= config.max_seconds), device=self.device)
                last = last or float(distributed.mean_over_processes(late, group)) > 0
            if not math.isfinite(step_loss):
                raise ConfigError(f"the loss became {step_loss} at step {step}; lower learning_rate or enable grad_clip")
            if group.is_main:
                synchronize(self.device)
                elapsed = time.perf_counter() - window_started
                tokens_per_second = tokens_per_step * window_steps / elapsed if elapsed > 0 else 0.0
                mfu = model.estimate_mfu(tokens_per_second, peak_flops) if peak_flops else None
                metrics.write({"kind": "train", "step": step, "loss": step_loss, "learning_rate": learning_rate,
                               "tokens_per_second": tokens_per_second, "mfu": mfu})
                display.update(step, step_loss, tokens_per_second, mfu)
            if step % config.log_interval == 0:
                window_started, window_steps = time.perf_counter(), 0
            if step % config.eval_interval == 0 or last:
                last_validation = self._evaluate(engine, model, corpus, model_config, step, metrics, display)
                if best_loss is None or last_validation < best_loss:
                    best_loss, best_step = last_validation, step
                if last and config.final_eval_tokens != 0:
                    full_validation = self._evaluate_whole(engine, model, corpus, model_config, step, metrics, display)
                window_started, window_steps = time.perf_counter(), 0
            if step % checkpoint_interval == 0 or last:
                model_state, optimizer_state = self._gather_states(model, optimizer)  # every process takes part
                carried_state = {name: distributed.gather_rows(tensor, group, streams.ROW_DIMENSIONS[name]).cpu()
                                 for name, tensor in streams.state_tensors(carried).items()} if token_streams else None
                if group.is_main:
                    state = {"optimizer": optimizer_state, "data_generator": data_generator.get_state(),
                             "torch_rng": torch.get_rng_state(), "sharded": config.fsdp}
                    if token_streams:  # where every stream stands, and the state each carries (all processes' rows)
                        state.update(streams=token_streams.state_dict(), carried=carried_state)
                    if self.device.type == "cuda":
                        state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
                    full_loss, full_tokens = full_validation if last else (None, None)
                    progress = {"step": step, "validation_loss": last_validation, "best_validation_loss": best_loss,
                                "best_step": best_step, "full_validation_loss": full_loss, "full_validation_tokens": full_tokens,
                                "training_config": {**asdict(config), "arch": arch, "tokenizer": run_tokenizer},
                                "corpus_hash": corpus.meta["content_hash"], "model_config": model_config.to_dict()}
                    checkpointing.save_checkpoint(
                        self.run_folder, step, model, corpus.tokenizer, state, progress, keep=config.keep_checkpoints,
                        best_step=best_step, model_state=model_state,
                    )
                distributed.barrier(group)
                window_started, window_steps = time.perf_counter(), 0
        display.close()
        records = metrics.records() if metrics else []
        speeds = [r["tokens_per_second"] for r in records if r.get("kind") == "train" and r["step"] > start_step]
        return TrainingResult(self.run_folder, step, last_validation, best_loss, sum(speeds) / len(speeds) if speeds else 0.0,
                              *(full_validation if last or step >= config.max_steps else (None, None)))

    def _gather_states(self, model, optimizer) -> tuple[dict | None, dict]:
        """Full (unsharded) model and optimizer states: as they are, or gathered from every process under FSDP."""
        if not self.config.fsdp:
            return None, optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)

    @torch.no_grad()
    def _evaluate(self, engine, model, corpus, model_config, step: int, metrics, display) -> float:
        """Validation loss (nats/token), perplexity and bits per byte on fixed batches; a short sample.

        Every window starts cold, the recap's models' too (no state carried in): the same measure for every arch.
        """
        from lanterne.generation import ContextWarning, generate_ids
        from lanterne.generation.sampling import SamplingSettings
        from lanterne.training.data import sample_windows

        config, group = self.config, self.group
        model.eval()
        per_rank = config.batch_size // group.world_size
        rows = slice(group.rank * per_rank, (group.rank + 1) * per_rank)
        losses = {}
        for split, tokens in (("train", corpus.train), ("validation", corpus.validation)):
            generator = torch.Generator().manual_seed(config.seed + 1)  # the same batches at every evaluation
            total = torch.zeros((), device=self.device)
            for _ in range(config.eval_batches):
                inputs, targets = sample_windows(tokens, config.batch_size, model_config.context_length, generator)
                with self._autocast():
                    total += engine(inputs[rows].to(self.device), targets[rows].to(self.device), check=False).loss.float()
            losses[split] = float(distributed.mean_over_processes(total / config.eval_batches, group))
        validation = losses["validation"]
        sample = None
        if group.is_main or config.fsdp:  # a sharded model needs every process to run its forward passes
            prompt = [int(t) for t in corpus.validation[: min(8, model_config.context_length // 2)]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ContextWarning)  # a sample longer than the context slides, as expected
                new_ids = [s[0] for s in generate_ids(model, [prompt], config.sample_tokens, SamplingSettings(temperature=0.8, top_k=200),
                                                      seed=step, vocab_limit=corpus.tokenizer.vocab_size)]
            sample = corpus.tokenizer.decode(prompt + new_ids)
        if group.is_main:
            perplexity, bits_per_byte = _scores(validation, corpus)
            record = {"kind": "eval", "step": step, "train_loss": losses["train"], "validation_loss": validation,
                      "perplexity": perplexity, "bits_per_byte": bits_per_byte, "sample": sample}
            metrics.write(record)
            display.note(
                f"step {step}: validation loss {validation:.4f} (train {losses['train']:.4f}), perplexity {record['perplexity']:.2f}, "
                f"{bits_per_byte:.3f} bits/byte\n  sample: {sample[:160]!r}"
            )
            plot_loss_curve(metrics.records(), self.run_folder / PLOT_FILE, f"Training {Path(config.data).name}")
        model.train()
        return validation


    @torch.no_grad()
    def _evaluate_whole(self, engine, model, corpus, model_config, step: int, metrics, display) -> tuple:
        """The validation loss over every non-overlapping window of the split (up to final_eval_tokens tokens).

        The evaluation batches are an estimate (20 random windows of 12 by default: about ±0.02 nats on
        Shakespeare); this is the number to compare runs by. Every process reads its rows of each batch
        and runs the same number of forward passes (an idle one weighs 0), so sharded models work too.
        """
        config, group = self.config, self.group
        context = model_config.context_length
        limit = config.final_eval_tokens
        if limit is None:
            limit = min(1_000_000, config.max_steps * config.gradient_accumulation * config.batch_size * context // 10)
        ids = corpus.validation[: limit + 1]
        count = (len(ids) - 1) // context  # windows
        if count == 0:
            return None, None
        windows = torch.from_numpy(np.asarray(ids[: count * context + 1], dtype=np.int64))
        per_rank = config.batch_size // group.world_size
        total, tokens = torch.zeros((), dtype=torch.float64, device=self.device), torch.zeros((), dtype=torch.float64, device=self.device)
        model.eval()
        for first in range(0, count, per_rank * group.world_size):
            mine = range(first + group.rank * per_rank, min(first + (group.rank + 1) * per_rank, count))
            rows = mine if len(mine) else range(1)  # nothing left for this process: a pass that weighs nothing
            starts = torch.tensor(list(rows)) * context
            inputs = windows[starts[:, None] + torch.arange(context)]
            targets = windows[starts[:, None] + torch.arange(1, context + 1)]
            with self._autocast():
                loss = engine(inputs.to(self.device), targets.to(self.device), check=False).loss.double()
            total += loss * len(mine) * context
            tokens += len(mine) * context
        model.train()
        total, tokens = distributed.sum_over_processes(total, group), distributed.sum_over_processes(tokens, group)
        validation = float(total / tokens)
        if group.is_main:
            perplexity, bits_per_byte = _scores(validation, corpus)
            whole = "the whole validation split" if limit + 1 >= len(corpus.validation) else "the first validation tokens"
            metrics.write({"kind": "final", "step": step, "validation_loss": validation, "perplexity": perplexity,
                           "bits_per_byte": bits_per_byte, "tokens": int(tokens)})
            display.note(f"step {step}: validation loss {validation:.4f} over {whole} ({int(tokens):,} tokens), "
                         f"perplexity {perplexity:.2f}, {bits_per_byte:.3f} bits/byte")
            plot_loss_curve(metrics.records(), self.run_folder / PLOT_FILE, f"Training {Path(config.data).name}")
        return validation, int(tokens)


def _scores(loss: float, corpus) -> tuple[float, float]:
    """A validation loss (nats/token) as perplexity and as bits per byte of text (comparable across tokenizers)."""
    return math.exp(min(loss, 50)), loss / math.log(2) / corpus.validation_bytes_per_token


def train(config: TrainingConfig) -> TrainingResult:
    """Run a training job (see TrainingConfig); the notebook twin of `lanterne train`."""
    return Trainer(config).run()


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: training fields at the top level, model fields under [model]."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML ({error})") from None
    return data


def settings_from(pairs: list[str], base: dict[str, Any] | None = None, arch: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training settings, model settings) from a settings file's dict and KEY=VALUE strings (values read as JSON when they parse).

    The model settings are those of `arch` (the --arch option; else an `arch` setting; else the GPT's):
    RecurrentConfig's fields for the recap's models, GPTConfig's for the GPT. An unknown key lists the known ones.
    """
    training = {key: value for key, value in (base or {}).items() if key != "model"}
    model = dict((base or {}).get("model", {}))
    parsed = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, not {pair!r}")
        key, text = pair.split("=", 1)
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        parsed.append((key.strip().replace("-", "_"), value))
    arch = arch or next((value for key, value in reversed(parsed) if key == "arch"), None) or training.get("arch") or architectures.GPT_ARCH
    architectures.check_arch(arch)
    model_fields = architectures.model_fields(arch)
    for key, value in parsed:
        if key in model_fields:
            model[key] = value
        elif key in TrainingConfig.field_names() - {"model"}:
            training[key] = value
        else:
            raise ConfigError(f"unknown setting {key!r} for --arch {arch}; {_known_settings(model_fields)}")
    unknown = set(training) - TrainingConfig.field_names()
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))} in the settings file; {_known_settings(model_fields)}")
    return training, model


def _known_settings(model_fields) -> str:
    return (f"training: {', '.join(sorted(TrainingConfig.field_names() - {'model'}))}; "
            f"model (under [model] in a settings file): {', '.join(sorted(model_fields))}")
