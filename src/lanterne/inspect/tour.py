"""The tour: the whole lecture, slide by slide, computed on one sentence with one model.

`run_tour` records one forward pass and walks the slides in the lecture's order (tokenization,
embeddings, next word, attention, feed-forward, logit lens, context length, temperature). Each
section has a few lines of real numbers for the terminal, its data as JSON, and its figures (PNG and
SVG); `write_report` gathers them in one HTML page that opens offline.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from lanterne.files import writable_folder
from lanterne.inspect import attention, embeddings, feedforward, logit_lens, next_word
from lanterne.inspect.drawing import check_language, save_figure, say
from lanterne.inspect.language import detect_language
from lanterne.inspect.recording import Recording, record

# Words for the embedding map and analogy, by language.
MAP_WORDS = {
    "fr": ["roi", "reine", "homme", "femme", "soleil", "lune", "est", "ouest", "chat", "chien"],
    "en": ["king", "queen", "man", "woman", "sun", "moon", "east", "west", "cat", "dog"],
}
ANALOGY = {"fr": ("roi", "homme", "femme"), "en": ("king", "man", "woman")}
# `lanterne compare --data tinyshakespeare.txt` as measured for the release (its compare.json ships with Lanterne).
BUNDLED_COMPARISON = Path(__file__).resolve().parents[1] / "bundled" / "compare"
TOUR_COST_TOKENS = 256  # the longest forward pass the tour times (`lanterne context` goes further)


@dataclass
class Section:
    """One slide: its title, a few lines of real numbers, its data, and its figures (file names in the report folder)."""

    key: str
    title: str
    lines: list[str]
    data: dict
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0  # time to compute and draw it


@dataclass
class Tour:
    prompt: str
    model: str
    lang: str
    sections: list[Section]
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Context:
    """What every section reads."""

    model: object
    tokenizer: object
    prompt: str
    lang: str
    recording: Recording
    out: Path | None
    measure_cost: bool
    model_name: str
    comparison: object = None  # `lanterne compare` results (ComparisonReport), for "Why attention"

    def save(self, figure, name: str) -> list[str]:
        """Save a figure as name.png and name.svg in the report folder (none without a folder); returns the PNG's name."""
        if self.out is None:
            return []
        save_figure(figure, self.out / name)  # figures are not pyplot's: nothing to close
        return [f"{name}.png"]


def _say(context: _Context, french: str, english: str) -> str:
    return say(context.lang, french, english)


# -- the sections, in the lecture's order ---------------------------------------------------------


def _tokenization(context: _Context) -> Section:
    from lanterne.inspect import tokens

    view = tokens.tokenization_view(context.prompt, context.tokenizer)
    lines = []
    for row in view.rows:
        name = {"characters": _say(context, "caractères", "characters"), "words": _say(context, "mots", "words"),
                "model": _say(context, "ce modèle", "this model")}.get(row.name, row.name)
        lines.append(_say(context, f"{name:>12} : {row.count:4d} tokens, vocabulaire {row.vocab_size:>9,}, inconnus {row.unknown_rate:.0%}",
                          f"{name:>12}: {row.count:4d} tokens, vocabulary {row.vocab_size:>9,}, unknown {row.unknown_rate:.0%}"))
    shown = " | ".join(context.recording.tokens[:40]) + (" | …" if len(context.recording.tokens) > 40 else "")
    lines.append(_say(context, f"tokens du modèle : {shown}", f"model tokens: {shown}"))
    lines.append(_say(context, "ids : ", "ids: ") + " ".join(map(str, context.recording.ids[:40])))
    return Section("tokenization", _say(context, "1. Tokenisation", "1. Tokenization"), lines, view.as_dict(max_tokens=200),
                   context.save(tokens.draw_tokenization(view, context.lang), "tokenization"))


def _first_word(context: _Context) -> str:
    """The longest word of the prompt: the one whose vector is shown."""
    import regex

    words = regex.findall(r"\p{L}+", context.prompt)
    return max(words, key=len) if words else MAP_WORDS[context.lang][0]


def _embeddings(context: _Context) -> Section:
    word = _first_word(context)
    view = embeddings.embedding_view(context.model, context.tokenizer, word, neighbours=10)
    mapped = embeddings.embedding_map(context.model, context.tokenizer, MAP_WORDS[context.lang])
    a, b, c = ANALOGY[context.lang]
    analogy = embeddings.analogy(context.model, context.tokenizer, a, b, c)
    values = ", ".join(f"{value:+.3f}" for value in view.word.first_values[:6])
    averaged = _say(context, " (moyenne de plusieurs tokens)", " (mean of several tokens)") if view.word.averaged else ""
    lines = [
        _say(context, f"« {word} »{averaged} = [{values}, …] ({view.word.dimensions} nombres, longueur {view.word.norm:.2f})",
             f"“{word}”{averaged} = [{values}, …] ({view.word.dimensions} numbers, length {view.word.norm:.2f})"),
        _say(context, "voisins : ", "neighbours: ") + ", ".join(f"{n.token!r} {n.similarity:.2f}" for n in view.neighbours[1:7]),
        f"{a} − {b} + {c} ≈ " + ", ".join(f"{n.token!r} ({n.similarity:.2f})" for n in analogy.neighbours[:3]),
    ]
    figures = context.save(embeddings.draw_neighbours(view, context.lang), "embedding-neighbours")
    figures += context.save(embeddings.draw_map(mapped, context.lang), "embedding-map")
    data = {"word": view.as_dict(), "map": mapped.as_dict(), "analogy": analogy.as_dict()}
    return Section("embeddings", _say(context, "2. Plongements (embeddings)", "2. Embeddings"), lines, data, figures)


def _next_word(context: _Context) -> Section:
    table = next_word.next_word_view(context.recording, context.tokenizer, top=8)
    lines = [
        f"{candidate.text!r:>14}  logit {candidate.logit:7.2f}  p {candidate.probabilities[1.0]:.3f}"
        for candidate in table.candidates[:6]
    ]
    lines.append(_say(context, f"entropie à T=1 : {table.entropy_bits[1.0]:.2f} bits", f"entropy at T=1: {table.entropy_bits[1.0]:.2f} bits"))
    return Section("next_word", _say(context, "3. Prédiction du mot suivant", "3. Next-word prediction"), lines,
                   table.as_dict(), context.save(next_word.draw_next_word(table, context.lang), "next-word"))


def _attention(context: _Context) -> Section:
    model, recording = context.model, context.recording
    layer, head = attention.most_focused_head(model, recording)
    view = attention.attention_view(model, recording, layer, head)
    looks = attention.where_token_looks(view, -1, 4)
    last = recording.tokens[-1]
    lines = [
        _say(context, f"{model.config.n_layers} couches × {model.config.n_heads} têtes ; Q, K, V de {model.config.head_dim} nombres par tête",
             f"{model.config.n_layers} layers × {model.config.n_heads} heads; Q, K, V of {model.config.head_dim} numbers per head"),
        _say(context, f"couche {layer}, tête {head} : {last!r} regarde ", f"layer {layer}, head {head}: {last!r} looks at ")
        + ", ".join(f"{link.token!r} {link.weight:.2f}" for link in looks),
    ]
    figures = context.save(attention.draw_attention(view, context.lang), "attention")
    figures += context.save(attention.draw_who_looks_where(view, lang=context.lang), "attention-last-token")
    mystery_text = attention.MURDER_MYSTERY[context.lang]
    mystery = record(model, context.tokenizer, mystery_text)
    mystery_layer, mystery_head = attention.most_focused_head(model, mystery)
    mystery_view = attention.attention_view(model, mystery, mystery_layer, mystery_head)
    verb = mystery.tokens[-1]
    lines.append(
        _say(context, f"énigme : {verb!r} (couche {mystery_layer}, tête {mystery_head}) regarde ",
             f"murder mystery: {verb!r} (layer {mystery_layer}, head {mystery_head}) looks at ")
        + ", ".join(f"{link.token!r} {link.weight:.2f}" for link in attention.where_token_looks(mystery_view, -1, 4))
    )
    figures += context.save(attention.draw_who_looks_where(mystery_view, lang=context.lang), "attention-murder-mystery")
    data = {"prompt": view.as_dict(), "murder_mystery": {"text": mystery_text, **mystery_view.as_dict()}}
    return Section("attention", _say(context, "4. Attention (Q, K, V)", "4. Attention (Q, K, V)"), lines, data, figures)


def _feedforward(context: _Context) -> Section:
    view = feedforward.feedforward_view(context.model, context.recording)
    attention_total = sum(map(sum, view.attention_norms))
    feedforward_total = sum(map(sum, view.feedforward_norms))
    lines = [
        _say(context, f"ce modèle : {view.shape.description} (la diapo dit 4×, ReLU/GELU)",
             f"this model: {view.shape.description} (the slide says 4×, ReLU/GELU)"),
        _say(context, f"part du feed-forward dans les changements du vecteur : {feedforward_total / (attention_total + feedforward_total):.0%}",
             f"feed-forward's share of the changes to the vectors: {feedforward_total / (attention_total + feedforward_total):.0%}"),
    ]
    return Section("feedforward", _say(context, "5. Bloc feed-forward", "5. Feed-forward block"), lines, view.as_dict(),
                   context.save(feedforward.draw_contributions(view, context.lang), "feedforward"))


def _logit_lens(context: _Context) -> Section:
    lens = logit_lens.logit_lens(context.model, context.recording, context.tokenizer)
    steps = [(name, row[-1]) for name, row in zip(lens.layers, lens.readings)]
    shown = steps if len(steps) <= 8 else steps[:: max(1, len(steps) // 7)] + [steps[-1]]
    lines = [" → ".join(f"{reading.token!r}" for _, reading in shown)]
    lines.append(_say(context, f"dernière couche : {steps[-1][1].token!r} ({steps[-1][1].probability:.2f})",
                      f"last layer: {steps[-1][1].token!r} ({steps[-1][1].probability:.2f})"))
    return Section("logit_lens", _say(context, "6. Couche par couche (logit lens)", "6. Layer by layer (logit lens)"), lines,
                   lens.as_dict(), context.save(logit_lens.draw_logit_lens(lens, context.lang), "logit-lens"))


def _context_length(context: _Context) -> Section:
    from lanterne.inspect import context as context_slide

    lengths = context_slide.default_cost_lengths(context.model.config.context_length, cap=TOUR_COST_TOKENS)
    view = context_slide.context_view(context.model, context.tokenizer, context.prompt, model_name=context.model_name,
                                      measure_cost=context.measure_cost, cost_lengths=lengths)
    per_token = f"{view.words_per_token:.2f}" if view.words_per_token is not None else "—"
    lines = [
        _say(context, f"votre texte : {view.text_tokens} tokens pour {view.text_words} mots ({per_token} mot par token) ; "
                      f"le modèle en lit {view.context_length:,} à la fois",
             f"your text: {view.text_tokens} tokens for {view.text_words} words ({per_token} words per token); "
             f"the model reads {view.context_length:,} at a time"),
        _say(context, "il tient dans le contexte" if view.fits else f"trop long : les {view.dropped_tokens} premiers tokens seraient coupés",
             "it fits in the context" if view.fits else f"too long: the first {view.dropped_tokens} tokens would be cut"),
    ]
    for row in view.rows:
        measured = _page_count(row.pages_measured) if row.pages_measured is not None else "—"
        slide = _page_count(row.pages_rule_of_thumb)
        lines.append(_say(context, f"{row.name:>22} : {row.context_tokens:>9,} tokens ≈ {slide} pages (diapo), {measured} (mesuré)",
                          f"{row.name:>22}: {row.context_tokens:>9,} tokens ≈ {slide} pages (slide), {measured} (measured)"))
    if view.cost:
        first, last = view.cost[0], view.cost[-1]
        lines.append(_say(context, f"coût mesuré : {first.length} tokens en {first.ms:.0f} ms → {last.length} tokens en {last.ms:.0f} ms",
                          f"measured cost: {first.length} tokens in {first.ms:.0f} ms → {last.length} tokens in {last.ms:.0f} ms"))
    figures = context.save(context_slide.draw_context_table(view, context.lang), "context-table")
    if view.cost:
        figures += context.save(context_slide.draw_context_cost(view, context.lang), "context-cost")
    return Section("context", _say(context, "7. Longueur de contexte", "7. Context length"), lines, view.as_dict(), figures)


def _page_count(pages: float) -> str:
    """Whole pages, or one decimal below ten (a small model's context holds less than a page)."""
    return f"{pages:,.0f}" if pages >= 10 else f"{pages:.1f}"


def _temperature(context: _Context) -> Section:
    from lanterne.inspect import temperature

    view = temperature.temperature_view(context.model, context.tokenizer, context.prompt, count=1, max_new_tokens=10)
    curves = view.curves
    lines = []
    for index in (0, len(curves.temperatures) // 4, len(curves.temperatures) // 2, len(curves.temperatures) - 1):
        top = ", ".join(f"{candidate.text!r} {candidate.probabilities[index]:.2f}" for candidate in curves.candidates[:3])
        lines.append(f"T = {curves.temperatures[index]:.2f}: {top} (H = {curves.entropy_bits[index]:.2f} bits)")
    if view.samples is not None:
        for temperature_value, texts in zip(view.samples.temperatures, view.samples.texts):
            lines.append(f"T = {temperature_value:g} → {texts[0]!r}")
    figures = context.save(temperature.draw_temperature_curves(curves, context.lang), "temperature")
    figures += context.save(temperature.draw_filters(view.filters, context.lang), "sampling-filters")
    return Section("temperature", _say(context, "8. Température", "8. Temperature"), lines, view.as_dict(), figures)


def _why_attention(context: _Context) -> Section | None:
    """The recap's claim measured by `lanterne compare`: only when its results exist."""
    report = context.comparison
    if report is None:
        return None
    from lanterne.comparison.figures import NAMES, draw_loss_by_position, draw_recall

    settings = report.settings
    lines = [_say(context,
                  f"« Les RNN lisent mot à mot et oublient souvent les mots lointains » — mesuré par lanterne compare sur "
                  f"{Path(settings['data']).name}, mêmes tailles, {settings['minutes']:g} min d'entraînement chacun :",
                  f"\"RNNs read word by word and often forget distant words\" — measured by lanterne compare on "
                  f"{Path(settings['data']).name}, same sizes, {settings['minutes']:g} min of training each:")]
    for model in report.models:
        position = model.loss_by_position
        lines.append(_say(context,
                          f"{NAMES.get(model.arch, model.arch)} ({model.parameters / 1e3:.0f}k paramètres) : perte {model.validation_loss:.3f} "
                          f"({model.bits_per_byte:.2f} bits/octet) ; au 1er token {position[0]:.2f}, au {len(position)}e {position[-1]:.2f}",
                          f"{NAMES.get(model.arch, model.arch)} ({model.parameters / 1e3:.0f}k parameters): loss {model.validation_loss:.3f} "
                          f"({model.bits_per_byte:.2f} bits/byte); at token 1 {position[0]:.2f}, at token {len(position)} {position[-1]:.2f}"))
        if model.recall_accuracy:
            lines.append(_say(context,
                              f"    rappel : {model.recall_accuracy[0]:.0%} à ≤ {model.recall_distances[0]} tokens, "
                              f"{model.recall_accuracy[-1]:.0%} à ≤ {model.recall_distances[-1]} tokens",
                              f"    recall: {model.recall_accuracy[0]:.0%} at ≤ {model.recall_distances[0]} tokens, "
                              f"{model.recall_accuracy[-1]:.0%} at ≤ {model.recall_distances[-1]} tokens"))
    figures = context.save(draw_loss_by_position(report, context.lang), "why-attention-position")
    if any(model.recall_accuracy for model in report.models):
        figures += context.save(draw_recall(report, context.lang), "why-attention-recall")
    return Section("why_attention", _say(context, "9. Pourquoi l'attention (RNN contre Transformer)", "9. Why attention (RNN vs Transformer)"),
                   lines, report.as_dict(), figures)


SECTIONS: list[Callable[[_Context], Section | None]] = [
    _tokenization, _embeddings, _next_word, _attention, _feedforward, _logit_lens, _context_length, _temperature, _why_attention,
]


def run_tour(
    model,
    tokenizer,
    prompt: str,
    *,
    model_name: str = "",
    lang: str | None = None,
    out: str | Path | None = None,
    measure_cost: bool = True,
    on_section: Callable[[Section], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    comparison: str | Path | None = None,
) -> Tour:
    """Compute every slide on `prompt`. `lang` defaults to the prompt's language; with `out`, figures go there.

    `comparison`: a folder where `lanterne compare` wrote its results, for the "Why attention" section;
    by default ./lanterne-compare when it holds them, else the results measured for the bundled model.
    on_start(name) is called before each section and on_section(section) after it (progress display).
    """
    from lanterne.comparison.experiment import read_comparison
    started = time.perf_counter()
    lang = check_language(lang) if lang else detect_language(prompt)
    folder = writable_folder(out) if out is not None else None
    model.eval()
    folders = [comparison] if comparison is not None else [Path("lanterne-compare"), BUNDLED_COMPARISON]
    results = next((found for found in map(read_comparison, folders) if found is not None), None)
    context = _Context(model, tokenizer, prompt, lang, record(model, tokenizer, prompt), folder, measure_cost, model_name or "model", results)
    sections = []
    for make in SECTIONS:
        if on_start is not None:
            on_start(make.__name__.strip("_"))
        section_start = time.perf_counter()
        section = make(context)
        if section is None:
            continue
        section.seconds = time.perf_counter() - section_start
        sections.append(section)
        if on_section is not None:
            on_section(section)
    tour = Tour(prompt, model_name, lang, sections, time.perf_counter() - started)
    if folder is not None:
        write_report(tour, folder)
    return tour


# -- the report -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }
h1 { font-size: 1.8em; } h2 { border-bottom: 2px solid #5b3f8c; padding-bottom: .2em; margin-top: 2em; }
pre { background: #f4f2f8; padding: .8em; white-space: pre-wrap; font-size: 1.05em; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; } .links { font-size: .9em; }
details { margin: .5em 0; } code { background: #f4f2f8; }
"""


def write_report(tour: Tour, folder: Path) -> Path:
    """index.html in `folder`: every section's lines and figures (files beside it) and its data; no network reference."""
    lang = tour.lang
    title = say(lang, "Lanterne — visite guidée", "Lanterne — guided tour")
    parts = [
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{say(lang, 'Texte', 'Text')} : <code>{html.escape(tour.prompt)}</code> — "
        f"{say(lang, 'modèle', 'model')} : <code>{html.escape(tour.model)}</code> — {tour.seconds:.1f} s</p>",
    ]
    for section in tour.sections:
        parts.append(f"<h2 id='{section.key}'>{html.escape(section.title)}</h2>")
        parts.append("<pre>" + html.escape("\n".join(section.lines)) + "</pre>")
        for figure in section.figures:
            stem = Path(figure).stem
            parts.append(f"<img src='{html.escape(figure)}' alt='{html.escape(stem)}'>")
            parts.append(f"<div class='links'><a href='{stem}.png'>PNG</a> · <a href='{stem}.svg'>SVG</a></div>")
        data = json.dumps(section.data, ensure_ascii=False, default=_plain)
        if len(data) > 200_000:
            data = data[:200_000] + " …"
        parts.append(f"<details><summary>{say(lang, 'données (JSON)', 'data (JSON)')}</summary><pre>{html.escape(data)}</pre></details>")
    parts.append("</body></html>")
    path = folder / "index.html"
    from lanterne.files import atomic_write_text

    atomic_write_text(path, "\n".join(parts))
    (folder / "tour.json").write_text(json.dumps(tour.as_dict(), ensure_ascii=False, default=_plain), encoding="utf-8")
    return path


def _plain(value):
    """JSON for what as_dict left as tensors or numbers of numpy."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def print_section(console, section: Section) -> None:
    """One section in the terminal: a coloured title and its lines."""
    console.print(f"\n[bold magenta]{section.title}[/]")
    for line in section.lines:
        console.print(f"  {line}", markup=False, highlight=False)
    console.print(f"  [dim]{', '.join(section.figures)} ({section.seconds:.1f} s)[/]")
