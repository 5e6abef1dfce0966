"""The `lanterne` command: one verb per job, each a few lines over the library.

User mistakes print one line on stderr and exit with status 1; `--json` prints results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from lanterne import __version__
from lanterne.errors import ConfigError, InputFileError, InputTextError, LanterneError

DEFAULT_TOKENIZER = "o200k_base"
# Background colours cycled over tokens, as in the lecture's tokenizer figure.
_TOKEN_COLOURS = ["#5b3f8c", "#2e6b4f", "#8c5a2b", "#2b5c8c", "#8c2b4a"]


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _console():
    from rich.console import Console

    return Console(highlight=False)


# -- lanterne tokenize ----------------------------------------------------------------------------


def command_tokenize(args: argparse.Namespace) -> None:
    from lanterne.tokenization import load

    tokenizer = load(args.tokenizer, pattern=args.pattern)
    allowed = "all" if args.allow_special else frozenset()
    options = {"allowed_special": allowed} if tokenizer.kind in ("bpe", "sentencepiece") else {}
    tokens = tokenizer.tokens(args.text, **options)
    if args.json:
        _print_json(
            {
                "tokenizer": str(args.tokenizer),
                "vocab_size": tokenizer.vocab_size,
                "count": len(tokens),
                "ids": [token.id for token in tokens],
                "tokens": [token.text for token in tokens],
                "spans": [[token.start, token.end] for token in tokens],
            }
        )
        return
    from rich.text import Text

    console = _console()
    coloured = Text()
    labelled = Text()
    for index, token in enumerate(tokens):
        style = f"white on {_TOKEN_COLOURS[index % len(_TOKEN_COLOURS)]}"
        coloured.append(token.text.replace("\n", "↵\n"), style=style)
        labelled.append(f"{token.id}", style=style)
        labelled.append(" ")
    console.print(coloured)
    console.print(labelled)
    console.print(f"{len(tokens)} tokens, {len(args.text)} characters, vocabulary of {tokenizer.vocab_size:,} ({args.tokenizer})")


# -- lanterne tokenizers ... ---------------------------------------------------------------------------


def command_tokenizers_train(args: argparse.Namespace) -> None:
    from lanterne.files import read_text_file
    from lanterne.tokenization import train

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputFileError(f"{out} already exists; choose another --out or pass --overwrite")
    if not out.parent.exists():
        raise InputFileError(f"output folder does not exist: {out.parent} (create it first)")
    if out.suffix == ".tiktoken" and args.kind != "bpe":
        raise InputFileError("only BPE tokenizers can be written as .tiktoken; use a .json --out")
    text = read_text_file(args.data)
    options: dict[str, Any] = {}
    if args.kind == "bpe":
        options = {"pattern": args.pattern, "special_tokens": tuple(args.special_token if args.special_token is not None else ["<|endoftext|>"])}
    elif args.kind == "word":
        options = {"min_count": args.min_count}
    if args.kind == "bpe" and not args.json and sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("merging pairs", total=None)
            options["progress"] = lambda done, total: progress.update(task, completed=done, total=total)
            tokenizer = train(args.kind, text, args.vocab_size, **options)
    else:
        tokenizer = train(args.kind, text, args.vocab_size, **options)
    if out.suffix == ".tiktoken":
        tokenizer.save_tiktoken(out)
    else:
        tokenizer.save(out)
    summary = {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "out": str(out)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained a {tokenizer.kind} tokenizer of {tokenizer.vocab_size:,} tokens -> {out}")


def command_tokenizers_compare(args: argparse.Namespace) -> None:
    from lanterne.files import read_text_file
    from lanterne.tokenization.compare import compare_tokenizers

    text = read_text_file(args.data)
    reports = compare_tokenizers(text, args.vocab_size, named=not args.no_named, pattern=args.pattern)
    if args.json:
        _print_json({"data": str(args.data), "reports": [report.as_dict() for report in reports]})
        return
    from rich.table import Table

    table = Table(title=f"Tokenizers on the held-out 10% of {Path(args.data).name}")
    for column in ["tokenizer", "vocabulary", "tokens / 1000 chars", "bytes / token", "unknown", "round trip"]:
        table.add_column(column, justify="left" if column == "tokenizer" else "right")
    for report in reports:
        table.add_row(
            report.name,
            f"{report.vocab_size:,}",
            f"{report.tokens_per_1000_chars:.1f}",
            f"{report.bytes_per_token:.2f}",
            f"{100 * report.unknown_rate:.2f}%",
            "yes" if report.round_trip else "no",
        )
    _console().print(table)


def command_tokenizers_list(args: argparse.Namespace) -> None:
    from lanterne.tokenization.tiktoken_files import ALIASES, NAMED_VOCABULARIES, cache_folder, find_local_copy

    rows = []
    for name, vocabulary in NAMED_VOCABULARIES.items():
        local = find_local_copy(name)
        aliases = [alias for alias, target in ALIASES.items() if target == name]
        rows.append({"name": name, "aliases": aliases, "local_copy": str(local) if local else None, "url": vocabulary.url})
    if args.json:
        _print_json({"cache": str(cache_folder()), "vocabularies": rows})
        return
    for row in rows:
        where = row["local_copy"] or "not on this machine (downloaded on first use)"
        also = f" (also: {', '.join(row['aliases'])})" if row["aliases"] else ""
        print(f"{row['name']}{also}: {where}")


# -- lanterne models ---------------------------------------------------------------------------------


def command_models(args: argparse.Namespace) -> None:
    from lanterne.models import list_models

    rows = list_models()
    if args.json:
        _print_json({"models": rows})
        return
    for row in rows:
        state = "installed" if row["installed"] else f"not installed: {row['install']}"
        print(f"{row['name']:24} {state}\n{'':24} {row['description']}; licence: {row['licence']}")
    print("Also: any .gguf file, model folder or training run folder by path (--model PATH).")


# -- looking inside: lanterne embeddings / attention / lens / context / tour ------------------------


def _language(args: argparse.Namespace, text: str) -> str:
    from lanterne.inspect.drawing import check_language
    from lanterne.inspect.language import detect_language

    return check_language(args.lang) if args.lang else detect_language(text)


def _save_out(args: argparse.Namespace, figure) -> None:
    if args.out:
        from lanterne.inspect.drawing import save_as

        path = save_as(figure, args.out)
        if not args.json:
            print(f"figure: {path}")


def _note_dropped(recording, model) -> None:
    if recording.dropped:
        print(
            f"note: the text has {len(recording.ids) + recording.dropped} tokens and the model reads at most "
            f"{model.config.context_length}: its first {recording.dropped} tokens were left out",
            file=sys.stderr,
        )


def command_embeddings(args: argparse.Namespace) -> None:
    from lanterne.inspect import embeddings

    model, tokenizer = _load_model(args, inspection=True)
    lang = _language(args, args.word if not args.map else " ".join(args.map))
    view = embeddings.embedding_view(model, tokenizer, args.word, args.neighbours)
    mapped = embeddings.embedding_map(model, tokenizer, args.map) if args.map else None
    analogy = embeddings.analogy(model, tokenizer, *args.analogy) if args.analogy else None
    if args.json:
        _print_json({"word": view.as_dict(), "map": mapped.as_dict() if mapped else None, "analogy": analogy.as_dict() if analogy else None})
    else:
        word = view.word
        note = f" (mean of {len(word.ids)} tokens: {word.tokens})" if word.averaged else f" (token {word.ids[0]})"
        print(f"{word.word!r}{note}: {word.dimensions} numbers, length {word.norm:.3f}, first: {word.first_values}")
        for neighbour in view.neighbours:
            print(f"  {neighbour.similarity:+.3f}  {neighbour.token!r} (id {neighbour.id})")
        if mapped:
            for name, x, y in zip(mapped.words, mapped.x, mapped.y):
                print(f"  map {name!r}: ({x:+.3f}, {y:+.3f})")
        if analogy:
            print(f"{analogy.a} - {analogy.b} + {analogy.c} ≈ " + ", ".join(f"{n.token!r} ({n.similarity:.2f})" for n in analogy.neighbours))
    _save_out(args, embeddings.draw_map(mapped, lang) if mapped else embeddings.draw_neighbours(view, lang))


def command_attention(args: argparse.Namespace) -> None:
    from lanterne.inspect import attention
    from lanterne.inspect.recording import check_layer_head, record

    model, tokenizer = _load_model(args, inspection=True)
    prompt = args.prompt if args.prompt is not None else attention.MURDER_MYSTERY[args.lang or "en"]
    lang = _language(args, prompt)
    check_layer_head(model, args.layer, args.head)
    recording = record(model, tokenizer, prompt)
    _note_dropped(recording, model)
    layer, head = args.layer, args.head
    if layer is None and head is None:
        layer, head = attention.most_focused_head(model, recording)
    view = attention.attention_view(model, recording, layer, head)
    if args.json:
        _print_json(view.as_dict())
    else:
        who = "average of the heads" if view.head is None else f"head {view.head}"
        print(f"layer {view.layer}, {who}" + (f", sliding window {view.window}" if view.window else ""))
        for position, links in enumerate(view.top_attended):
            targets = ", ".join(f"{link.token!r} {link.weight:.2f}" for link in links)
            print(f"  {position:4d} {view.tokens[position]!r:>16} → {targets}")
    _save_out(args, attention.draw_attention(view, lang))


def command_lens(args: argparse.Namespace) -> None:
    from lanterne.inspect import logit_lens
    from lanterne.inspect.recording import record

    model, tokenizer = _load_model(args, inspection=True)
    recording = record(model, tokenizer, args.prompt)
    _note_dropped(recording, model)
    lens = logit_lens.logit_lens(model, recording, tokenizer)
    if args.json:
        _print_json(lens.as_dict())
    else:
        print(f"the most likely token after {lens.tokens[-1]!r}, read after each layer:")
        for name, row in zip(lens.layers, lens.readings):
            print(f"  {name:>12}: {row[-1].token!r} ({row[-1].probability:.3f})")
    _save_out(args, logit_lens.draw_logit_lens(lens, _language(args, args.prompt)))


def command_context(args: argparse.Namespace) -> None:
    from lanterne.inspect import context

    if (args.text is None) == (args.file is None):
        raise InputTextError("give the text, or --file PATH, but one of them")
    if args.file is not None:
        from lanterne.files import read_text_file

        text = read_text_file(args.file, what="text")
    else:
        text = args.text
    model, tokenizer = _load_model(args, inspection=True)
    view = context.context_view(model, tokenizer, text, model_name=str(args.model), measure_cost=not args.no_cost)
    if args.json:
        _print_json(view.as_dict())
    else:
        per_token = f"{view.words_per_token:.2f}" if view.words_per_token is not None else "n/a"
        print(f"{view.text_tokens:,} tokens for {view.text_words:,} words ({per_token} words per token); "
              f"{args.model} reads {view.context_length:,} tokens at a time")
        if view.fits:
            print("the text fits in the context")
        else:
            print(f"too long: the first {view.dropped_tokens:,} tokens ({view.dropped_characters:,} characters) would be cut: {view.dropped_text!r}")
        for row in view.rows:
            measured = f"{row.pages_measured:,.1f}" if row.pages_measured is not None else "n/a"
            print(f"  {row.name:>24}: {row.context_tokens:>9,} tokens = {row.pages_rule_of_thumb:,.1f} pages (slide's rule), {measured} at your text's rate")
        for cost in view.cost:
            memory = f", +{cost.peak_added_bytes / 2**20:.1f} MiB" if cost.peak_added_bytes is not None else ""
            print(f"  forward pass over {cost.length:>6,} tokens: {cost.ms:8.1f} ms{memory}")
    lang = _language(args, text)
    _save_out(args, context.draw_context_table(view, lang))
    if args.out and view.cost:
        from lanterne.inspect.drawing import save_as

        cost_path = Path(args.out).with_name(Path(args.out).stem + "-cost" + Path(args.out).suffix)
        save_as(context.draw_context_cost(view, lang), cost_path)


def command_tour(args: argparse.Namespace) -> None:
    from lanterne.inspect.tour import print_section, run_tour

    console = _console()
    model, tokenizer = _load_model(args, inspection=True)
    with console.status("…") as status:
        def started(name: str) -> None:
            status.update(f"computing: {name.replace('_', ' ')}")

        def finished(section) -> None:
            if not args.json:
                print_section(console, section)

        tour = run_tour(model, tokenizer, args.prompt, model_name=str(args.model), lang=args.lang, out=args.out,
                        measure_cost=not args.no_cost, on_start=started, on_section=finished, comparison=args.compare)
    if args.json:
        _print_json(json.loads(json.dumps(tour.as_dict(), default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))))
    else:
        console.print(f"\n[bold]report:[/] {Path(args.out) / 'index.html'} ({tour.seconds:.1f} s)")


# -- lanterne serve ---------------------------------------------------------------------------------


def command_serve(args: argparse.Namespace) -> None:
    from lanterne.server.serve import serve

    model, tokenizer = _load_model(args, inspection=True)
    serve(model, tokenizer, str(args.model), host=args.host, port=args.port)


# -- lanterne export -------------------------------------------------------------------------------


def command_export(args: argparse.Namespace) -> None:
    from lanterne.checkpoints import save_huggingface, save_model

    target = Path(args.gguf or args.huggingface or args.lanterne)
    if args.lanterne and args.type == "q8_0":
        raise InputFileError("a Lanterne folder stores f32, f16 or bf16 weights, not q8_0; pass --type bf16 for the smallest")
    if target.exists() and not args.overwrite:
        raise InputFileError(f"{target} already exists; choose another path or pass --overwrite")
    if not target.parent.is_dir():
        raise InputFileError(f"folder {target.parent} does not exist; create it first")
    model, tokenizer = _load_model(args, inspection=True)
    if args.gguf:
        from lanterne.interop.gguf_writer import save_gguf

        save_gguf(model, tokenizer, target, dtype=args.type)
    elif args.lanterne:
        import torch

        dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
        save_model(model, target, tokenizer, dtype=dtypes[args.type])
    else:
        save_huggingface(model, target, tokenizer)
    size = target.stat().st_size if target.is_file() else sum(path.stat().st_size for path in target.iterdir())
    if args.json:
        _print_json({"model": str(args.model), "out": str(target), "bytes": size, "type": None if args.huggingface else args.type})
    else:
        print(f"wrote {target} ({size / 1e6:.1f} MB)")


# -- lanterne generate / predict -------------------------------------------------------------------


# Commands that look inside the model read full-precision weights; for them 'auto' means fp32.
INSPECTION_WEIGHTS = ("auto", "fp32", "bf16")


def _load_model(args: argparse.Namespace, *, inspection: bool = False, allow_quantized: bool = False):
    import time

    from lanterne.checkpoints import load
    from lanterne.errors import CheckpointError

    if args.model is None:
        from lanterne.models import default_model

        args.model = default_model()
    weights = getattr(args, "weights", "auto")
    if inspection:
        if weights not in INSPECTION_WEIGHTS and not allow_quantized:
            raise CheckpointError(
                f"--weights {weights} keeps weights quantised, for generation; this command looks inside the model and "
                f"reads full-precision weights: choose one of {', '.join(INSPECTION_WEIGHTS)}"
            )
        weights = "fp32" if weights == "auto" else weights
    start = time.perf_counter()
    model, tokenizer = load(args.model, weights=weights, progress=_progress_line)
    args.load_seconds = time.perf_counter() - start
    if args.tokenizer:
        from lanterne.tokenization import load as load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    if tokenizer is None:
        raise CheckpointError(f"the model {args.model} comes without a tokenizer.json; pass --tokenizer NAME|PATH")
    return model, tokenizer


def command_generate(args: argparse.Namespace) -> None:
    import warnings

    from lanterne.generation import Timings, generate, stream

    model, tokenizer = _load_model(args)
    timings = Timings(load_s=args.load_seconds)
    options = _sampling_options(args)
    decoding = dict(fast=not args.plain, compile=args.compile, timings=timings, progress=_progress_line)
    prompt, shown = args.prompt, args.prompt
    if args.chat:  # the prompt is the user's message, laid out by the model's chat template
        from lanterne.chat import chat_text

        prompt, shown = chat_text(tokenizer, [{"role": "user", "content": args.prompt}]), ""
        options["allow_special"] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.stream and not args.json:
            pieces = stream(model, tokenizer, prompt, **options, **decoding)
            first = next(pieces, "")  # settings are checked here, before anything is printed
            print(shown + first, end="", flush=True)
            for piece in pieces:
                print(piece, end="", flush=True)
            print()
            text = None
        else:
            text = generate(model, tokenizer, prompt, **options, **decoding)
    for warning in caught:
        if "lanterne" in str(warning.filename):  # ours (context, compiling), not PyTorch's deprecation notices
            print(f"lanterne: note: {warning.message}", file=sys.stderr)
    if args.verbose:
        print(f"lanterne: {timings.line()}", file=sys.stderr)
    if text is None:
        return
    if args.json:
        _print_json({
            "prompt": args.prompt, "text": text, **{k: v for k, v in options.items() if k != "stop"}, "stop": list(args.stop or []),
            "weights": getattr(model, "quantized", None) or str(next(model.parameters()).dtype).removeprefix("torch."), "timings": timings.as_dict(),
        })
    else:
        print(shown + text)


def _progress_line(message: str) -> None:
    """A slow first step says what it is doing, on stderr (stdout keeps the text)."""
    print(f"lanterne: {message}…", file=sys.stderr, flush=True)


def _sampling_options(args: argparse.Namespace) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty, stop=args.stop or (), seed=args.seed,
    )


def command_chat(args: argparse.Namespace) -> None:
    """A small conversation in the terminal: each line is a message, the reply streams back; an empty line or ^D ends it."""
    from lanterne.chat import reply

    model, tokenizer = _load_model(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print(f"lanterne chat with {args.model} (an empty line or Ctrl-D ends it)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        answer = ""
        for piece in reply(model, tokenizer, messages, **_sampling_options(args), fast=True, progress=_progress_line):
            print(piece, end="", flush=True)
            answer += piece
        print()
        messages.append({"role": "assistant", "content": answer.strip()})


def command_predict(args: argparse.Namespace) -> None:
    from lanterne.prediction import next_token_table

    model, tokenizer = _load_model(args, inspection=True)
    table = next_token_table(model, tokenizer, args.prompt, top=args.top, temperatures=args.temperature)
    if args.json:
        _print_json(table.as_dict())
        return
    from rich.table import Table

    view = Table(title=f"Next token after {args.prompt!r}")
    view.add_column("token")
    view.add_column("id", justify="right")
    view.add_column("logit", justify="right")
    for temperature in table.temperatures:
        view.add_column(f"p (T={temperature:g})", justify="right")
    for candidate in table.candidates:
        view.add_row(
            repr(candidate.text), str(candidate.id), f"{candidate.logit:.3f}",
            *[f"{100 * candidate.probabilities[t]:.2f}%" for t in table.temperatures],
        )
    view.add_row("entropy (bits)", "", "", *[f"{table.entropy_bits[t]:.2f}" for t in table.temperatures])
    _console().print(view)


def command_evaluate(args: argparse.Namespace) -> None:
    from lanterne.evaluation import evaluate_held_out

    model, tokenizer = _load_model(args, inspection=True, allow_quantized=True)
    report = evaluate_held_out(model, tokenizer, args.data, validation_fraction=args.validation_fraction,
                               show_progress=not args.json)
    if args.json:
        _print_json(report.as_dict())
        return
    from rich.table import Table

    view = Table(title=f"Held-out text: the last {args.validation_fraction:.0%} of each file of {args.data} "
                       f"(windows of {report.context_length} tokens)")
    for column in ("text", "tokens", "bytes", "loss (nats/token)", "perplexity", "bits/byte"):
        view.add_column(column, justify="left" if column == "text" else "right")
    for score in [*report.documents, *([report.total] if len(report.documents) > 1 else [])]:
        view.add_row(score.name, f"{score.tokens:,}", f"{score.bytes:,}", f"{score.loss:.4f}", f"{score.perplexity:.2f}",
                     f"{score.bits_per_byte:.3f}")
    _console().print(view)


def command_compare(args: argparse.Namespace) -> None:
    from lanterne.comparison.experiment import CompareSettings, parse_budget, run_comparison

    budget = parse_budget(args.budget) if args.budget else {}
    settings = CompareSettings(
        data=args.data, archs=tuple(arch.strip() for arch in args.archs.split(",") if arch.strip()), out=args.out,
        **({"recall_minutes": args.recall_minutes} if args.recall_minutes is not None else {}), **budget,
    )
    note = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr, flush=True))
    report = run_comparison(settings, note)
    if args.json:
        _print_json(report.as_dict())
        return
    from rich.table import Table

    view = Table(title=f"{', '.join(settings.archs)} on {Path(settings.data).name}: same size, same time ({report.seconds / 60:.1f} min in all)",
                 caption="loss: held-out, nats/token; bits/B: bits per byte; loss @1→N: at the window's first and last position")
    for column in ("model", "params", "steps", "loss", "bits/B", f"loss @1→{len(report.models[0].loss_by_position)}",
                   "train tok/s", "gen tok/s", "recall near→far"):
        view.add_column(column, justify="left" if column == "model" else "right")
    for model in report.models:
        recall = f"{model.recall_accuracy[0]:.0%}→{model.recall_accuracy[-1]:.0%}" if model.recall_accuracy else "-"
        view.add_row(model.arch, f"{model.parameters / 1e3:,.0f}k", f"{model.steps:,}", f"{model.validation_loss:.3f}", f"{model.bits_per_byte:.3f}",
                     f"{model.loss_by_position[0]:.2f}→{model.loss_by_position[-1]:.2f}", f"{model.train_tokens_per_second:,.0f}",
                     f"{model.generate_tokens_per_second:,.0f}", recall)
    _console().print(view)
    print(f"figures and compare.json in {settings.out}/")


# -- lanterne train -------------------------------------------------------------------------------


def command_train(args: argparse.Namespace) -> None:
    from lanterne.training.trainer import TrainingConfig, load_settings_file, settings_from, train

    base = load_settings_file(args.config) if args.config else {}
    training, model = settings_from(args.set or [], base, args.arch)
    explicit = {
        "data": args.data, "tokenizer": args.tokenizer, "arch": args.arch, "preset": args.preset, "out": args.out,
        "max_steps": args.max_steps, "device": args.device, "text_field": args.text_field,
    }
    training.update({key: value for key, value in explicit.items() if value is not None})
    training.update(resume=args.resume, overwrite=args.overwrite, progress=not args.json)
    try:
        config = TrainingConfig(**training, model=model)
    except TypeError as error:
        raise ConfigError(f"bad training settings: {error}") from None
    result = train(config)
    summary = {
        "run_folder": str(result.run_folder), "steps": result.steps, "final_validation_loss": result.final_validation_loss,
        "best_validation_loss": result.best_validation_loss, "full_validation_loss": result.full_validation_loss,
        "full_validation_tokens": result.full_validation_tokens, "tokens_per_second": result.tokens_per_second,
    }
    if args.json:
        _print_json(summary)
    else:
        loss = f"{result.final_validation_loss:.4f}" if result.final_validation_loss is not None else "n/a"
        if result.full_validation_loss is not None:
            loss = (f"{result.full_validation_loss:.4f} (over {result.full_validation_tokens:,} validation tokens; "
                    f"{loss} on the evaluation batches)")
        print(f"trained {result.steps} steps into {result.run_folder}: validation loss {loss}; load it with lanterne.load({str(result.run_folder)!r})")


# -- the parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanterne", description="Build, train, run and look inside GPT-style language models.")
    parser.add_argument("--version", action="version", version=f"lanterne {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    tokenize = verbs.add_parser("tokenize", help="show how a text is cut into tokens and their ids")
    tokenize.add_argument("text", help="the text to tokenize")
    tokenize.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help=f"name or path (default: {DEFAULT_TOKENIZER})")
    tokenize.add_argument("--pattern", default=None, help="pre-tokenization of a .tiktoken file: gpt2, cl100k, o200k")
    tokenize.add_argument("--allow-special", action="store_true", help="read <|endoftext|> and the like as special tokens")
    tokenize.add_argument("--json", action="store_true", help="print ids, tokens and spans as JSON")
    tokenize.set_defaults(run=command_tokenize)

    tokenizers = verbs.add_parser("tokenizers", help="train, compare and list tokenizers")
    jobs = tokenizers.add_subparsers(dest="job", required=True, metavar="JOB")

    train = jobs.add_parser("train", help="train a char, word or BPE tokenizer on a text file")
    train.add_argument("--data", required=True, help="UTF-8 text file")
    train.add_argument("--kind", choices=["bpe", "char", "word"], default="bpe")
    train.add_argument("--vocab-size", type=int, default=None, help="BPE: ids in all (>= 256); word: maximum vocabulary")
    train.add_argument("--pattern", default="o200k", help="BPE pre-tokenization: gpt2, cl100k, o200k or a regex")
    train.add_argument("--special-token", action="append", default=None, help="BPE special token, repeatable (default: <|endoftext|>)")
    train.add_argument("--min-count", type=int, default=1, help="word: keep words seen at least this often")
    train.add_argument("--out", required=True, help="output file (.json, or .tiktoken for BPE)")
    train.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    train.add_argument("--json", action="store_true")
    train.set_defaults(run=command_tokenizers_train)

    compare = jobs.add_parser("compare", help="the lecture's table: letters vs words vs sub-words on your text")
    compare.add_argument("--data", required=True, help="UTF-8 text file (trained on 90%%, measured on 10%%)")
    compare.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (default 8192)")
    compare.add_argument("--pattern", default="o200k", help="BPE pre-tokenization: gpt2, cl100k, o200k")
    compare.add_argument("--no-named", action="store_true", help="skip the published vocabularies")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=command_tokenizers_compare)

    models = verbs.add_parser("models", help="the pretrained models that run here, installed or not")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=command_models)

    generate = verbs.add_parser("generate", help="continue a prompt with a model")
    generate.add_argument("prompt")
    _model_arguments(generate)
    _sampling_arguments(generate)
    generate.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True, help="print tokens as they come")
    generate.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="compile the decoding step (default: for 32 new tokens or more; cached on disk, once per machine)",
    )
    generate.add_argument("--plain", action="store_true", help="the readable generation loop (no static cache, no compiled step)")
    generate.add_argument("--verbose", action="store_true", help="print load, prompt and decode times and speeds on stderr")
    generate.add_argument("--chat", action="store_true", help="read the prompt as a user message, in the model's chat template")
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(run=command_generate)

    chat = verbs.add_parser("chat", help="talk with a chat model in the terminal (its own chat template)")
    _model_arguments(chat)
    _sampling_arguments(chat)
    chat.add_argument("--system", default=None, help="a system message to start the conversation")
    chat.set_defaults(run=command_chat, max_new_tokens=256, temperature=0.7)

    predict = verbs.add_parser("predict", help="the next-token table: logits and probabilities at several temperatures")
    predict.add_argument("prompt")
    _model_arguments(predict)
    predict.add_argument("--top", type=int, default=10, help="how many candidates (default 10)")
    predict.add_argument("--temperature", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run=command_predict)

    embeddings = verbs.add_parser("embeddings", help="a word's vector, its nearest tokens, a 2-D map, analogies")
    embeddings.add_argument("word")
    _model_arguments(embeddings)
    embeddings.add_argument("--neighbours", type=int, default=10, help="how many nearest tokens (default 10)")
    embeddings.add_argument("--map", nargs="+", metavar="WORD", help="place these words on a 2-D map (PCA)")
    embeddings.add_argument("--analogy", nargs=3, metavar=("A", "B", "C"), help="A - B + C, e.g. roi homme femme")
    _figure_arguments(embeddings)
    embeddings.set_defaults(run=command_embeddings)

    attention = verbs.add_parser("attention", help="who looks at whom: one layer and head's attention weights")
    attention.add_argument("prompt", nargs="?", default=None, help="the text (default: the lecture's murder-mystery passage)")
    _model_arguments(attention)
    attention.add_argument("--layer", type=int, default=None, help="layer (default: the most focused head's)")
    attention.add_argument("--head", type=int, default=None, help="head (default: the most focused; with --layer only: the average)")
    _figure_arguments(attention)
    attention.set_defaults(run=command_attention)

    lens = verbs.add_parser("lens", help="the logit lens: the next token read after each layer")
    lens.add_argument("prompt")
    _model_arguments(lens)
    _figure_arguments(lens)
    lens.set_defaults(run=command_lens)

    context_command = verbs.add_parser("context", help="your text against the context length: the slide's table, the cut, the cost")
    context_command.add_argument("text", nargs="?", default=None)
    context_command.add_argument("--file", default=None, help="read the text from this UTF-8 file")
    _model_arguments(context_command)
    context_command.add_argument("--no-cost", action="store_true", help="skip timing forward passes of growing length")
    _figure_arguments(context_command)
    context_command.set_defaults(run=command_context)

    tour = verbs.add_parser("tour", help="the whole lecture on your sentence, in the terminal and as an HTML report")
    tour.add_argument("prompt")
    _model_arguments(tour)
    tour.add_argument("--lang", choices=["fr", "en"], default=None, help="language (default: the prompt's)")
    tour.add_argument("--out", default="lanterne-tour", help="report folder: index.html and every figure (default: lanterne-tour)")
    tour.add_argument("--no-cost", action="store_true", help="skip timing forward passes of growing length")
    tour.add_argument("--compare", default=None, metavar="FOLDER",
                      help="lanterne compare's results for 'Why attention' (default: ./lanterne-compare, else the release's)")
    tour.add_argument("--json", action="store_true")
    tour.set_defaults(run=command_tour)

    serve = verbs.add_parser("serve", help="the classroom explorer (a web page) and an OpenAI-compatible API")
    _model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=command_serve)

    export = verbs.add_parser("export", help="write a model for other tools: GGUF (llama.cpp, Ollama, LM Studio) or a HuggingFace folder")
    export.add_argument("model", help="named model, .gguf file, model folder or training run folder")
    destination = export.add_mutually_exclusive_group(required=True)
    destination.add_argument("--gguf", metavar="OUT.gguf", help="write one GGUF file (GPT-2- and Llama-shaped models)")
    destination.add_argument("--huggingface", metavar="FOLDER", help="write a folder transformers loads (from_pretrained)")
    destination.add_argument("--lanterne", metavar="FOLDER", help="write a Lanterne folder (config.json, model.safetensors, tokenizer.json)")
    export.add_argument("--type", choices=["f32", "f16", "bf16", "q8_0"], default="f32",
                        help="weight type of --gguf (all four) or --lanterne (f32, f16, bf16); default f32")
    export.add_argument("--tokenizer", default=None, help="tokenizer name or path, if not the model's own")
    export.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=command_export)

    evaluate = verbs.add_parser("evaluate", help="held-out loss, perplexity and bits per byte on the part of a text that training set aside")
    evaluate.add_argument("--data", required=True, help="the text file or folder the model trained on (each file's end is held out)")
    evaluate.add_argument("--validation-fraction", type=float, default=0.1, help="the training run's validation_fraction (default 0.1)")
    _model_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=command_evaluate)

    compare = verbs.add_parser("compare", help="why attention: a GPT beside an LSTM (or GRU, RNN, MLP), same size and time, measured")
    compare.add_argument("--data", required=True, help="a UTF-8 text file (e.g. ../shared/data/tinyshakespeare.txt)")
    compare.add_argument("--budget", default=None,
                         help="training time per model (3min, default; or 300s) or parameters per model (800k, default; or 2M)")
    compare.add_argument("--archs", default="gpt,lstm", help="comma-separated: gpt, lstm, gru, rnn, mlp (default gpt,lstm)")
    compare.add_argument("--recall-minutes", type=float, default=None, help="training time per model on the recall task (default 1.5; 0 skips it)")
    compare.add_argument("--out", default="lanterne-compare", help="folder for compare.json, the figures and the runs (default lanterne-compare)")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(run=command_compare)

    training = verbs.add_parser("train", help="train a GPT, or a recap model (--arch), on your text (torchrun for several processes)")
    training.add_argument("--data", help="a text file, a folder of .txt/.md files, or a .jsonl file")
    training.add_argument("--tokenizer", default=None, help="char (default), bpe:N, a published name, or a tokenizer file")
    training.add_argument("--text-field", default=None, help="JSONL: the field holding the text (default: text)")
    training.add_argument("--arch", default=None, choices=["gpt", "mlp", "rnn", "gru", "lstm"],
                          help="gpt (default), or the recap's mlp, rnn, gru, lstm (shape with --set hidden_size=...); a resumed run keeps its own")
    training.add_argument("--preset", default=None, help="GPT preset: tiny (default), small, gpt2, ...")
    training.add_argument("--config", default=None, help="TOML settings file ([model] table for the model)")
    training.add_argument("--set", action="append", metavar="KEY=VALUE", help="any training or model setting (repeatable); an unknown key lists them all")
    training.add_argument("--out", default=None, help="run folder (default: runs/lanterne)")
    training.add_argument("--max-steps", type=int, default=None, help="optimizer steps in all (default: 2000); raise it with --resume to go on")
    training.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    training.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    training.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run")
    training.add_argument("--json", action="store_true", help="no progress display; print the summary as JSON")
    training.set_defaults(run=command_train)

    listing = jobs.add_parser("list", help="published vocabularies and where they are")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=command_tokenizers_list)
    return parser


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; < 1 precise; > 1 varied")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set reaching this probability")
    parser.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--stop", action="append", help="stop at this text (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")


def _figure_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", choices=["fr", "en"], default=None, help="figure labels (default: the text's language)")
    parser.add_argument("--out", default=None, metavar="FILE.png|.svg", help="save the figure")
    parser.add_argument("--json", action="store_true")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="named model (lanterne models), .gguf file, model folder or HuggingFace name (default: the best installed model)",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer name or path, if not the model's own")
    parser.add_argument(
        "--weights", default="auto", choices=["auto", "fp32", "bf16", "int8", "int4"],
        help="weights in memory: auto (a GGUF file's stay quantised; full precision where the command looks inside), "
        "fp32 (the exact reference), bf16, int8, int4",
    )


def _check_utf8_arguments(args: argparse.Namespace) -> None:
    """Refuse an argument that is not valid UTF-8 (Python hands its bytes over as lone surrogates)."""
    for name, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str):
                continue
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as error:
                char = ord(item[error.start])
                what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"surrogate U+{char:04X}"
                raise InputTextError(
                    f"the {name.replace('_', ' ')} argument is not valid UTF-8 ({what} at character {error.start}); "
                    "set the terminal to UTF-8 (e.g. LANG=C.UTF-8) or pass the text from a UTF-8 file"
                ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_utf8_arguments(args)
        args.run(args)
    except LanterneError as error:
        print(f"lanterne: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lanterne: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lanterne ... | head`): not an error; keep Python quiet at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
