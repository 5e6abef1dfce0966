"""The context-length slide on the student's text: how much a model reads at once, and what it costs.

The slide's table (model, context in tokens, pages it holds) recomputed with the words per token
measured on the student's text; whether that text fits this model's context and what would be cut;
the measured time and memory of a forward pass as the sequence grows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lanterne.errors import ModelInputError
from lanterne.generation import encode_prompt
from lanterne.inspect.cost import ForwardCost, forward_cost_at
from lanterne.inspect.drawing import check_language, new_figure, say

# The lecture's table: a model's name and its context length in tokens.
SLIDE_CONTEXTS: tuple[tuple[str, int], ...] = (
    ("GPT-3.5", 4_096),
    ("GPT-4", 8_192),
    ("GPT-4 32k", 32_768),
    ("GPT-4 Turbo", 128_000),
    ("Claude 2", 100_000),
    ("Llama 2", 4_096),
)
WORDS_PER_PAGE = 500
RULE_OF_THUMB_WORDS_PER_TOKEN = 0.75  # "a token is about 3/4 of an English word", the slide's assumption
MAX_COST_TOKENS = 2_048  # the cost curve stops here, whatever the context: a CPU pass must stay seconds
MAX_SECONDS_PER_PASS = 2.0  # and it stops growing after a pass this long
COST_REPEAT = 2  # passes timed at each length; the fastest counts (a busy machine only ever slows a pass)
SHOWN_CHARACTERS = 400  # of the dropped text, kept in the view (its start and its end)


@dataclass
class ContextRow:
    """One model of the table: its context in tokens, and the pages that holds."""

    name: str
    context_tokens: int
    source: str  # "slide" (the lecture's table), "model" (the model given) or "installed" (a named model on this machine)
    pages_rule_of_thumb: float  # at RULE_OF_THUMB_WORDS_PER_TOKEN words per token, WORDS_PER_PAGE words per page
    pages_measured: float | None  # at the words per token measured on the student's text (None: it has no words)


@dataclass
class ContextView:
    """The student's text against the model's context: the table, the fit, the cost."""

    model_name: str
    context_length: int  # tokens the model reads at once
    text_tokens: int  # tokens the model reads for the text (with a beginning-of-sequence token if it wants one)
    text_words: int  # see `count_words`
    words_per_token: float | None  # words / tokens of the text alone (None: the text has no words)
    dropped_tokens: int  # tokens cut from the left so that the rest fits the context (0 when it fits)
    dropped_characters: int  # characters of the text those tokens spell
    dropped_text: str  # what is cut, shortened to its first and last SHOWN_CHARACTERS / 2 characters
    rows: list[ContextRow] = field(default_factory=list)
    cost: list[ForwardCost] = field(default_factory=list)  # forward passes, by growing length (empty: not measured)
    device: str = "cpu"

    @property
    def fits(self) -> bool:
        return self.dropped_tokens == 0

    def as_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "context_length": self.context_length,
            "text_tokens": self.text_tokens,
            "text_words": self.text_words,
            "words_per_token": self.words_per_token,
            "fits": self.fits,
            "dropped_tokens": self.dropped_tokens,
            "dropped_characters": self.dropped_characters,
            "dropped_text": self.dropped_text,
            "words_per_page": WORDS_PER_PAGE,
            "rule_of_thumb_words_per_token": RULE_OF_THUMB_WORDS_PER_TOKEN,
            "rows": [asdict(row) for row in self.rows],
            "cost": [cost.as_dict() for cost in self.cost],
            "device": self.device,
        }


def count_words(text: str) -> int:
    """Words as a reader counts them: whitespace-separated pieces holding at least one letter or digit.

    "l'homme" is one word; French punctuation standing alone (" : ", " ; ", " ! ") is none.
    """
    return sum(1 for piece in text.split() if any(character.isalnum() for character in piece))


def pages(tokens: int, words_per_token: float) -> float:
    """Pages of WORDS_PER_PAGE words that `tokens` tokens hold at `words_per_token`."""
    return tokens * words_per_token / WORDS_PER_PAGE


def shorten(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`text` if it has at most `limit` characters, else its start and end joined by ' […] '."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " […] " + text[-half:]


def installed_context_lengths() -> dict[str, int]:
    """Each installed named model's context length in tokens (known from its listing: no file opened)."""
    from lanterne.models import NAMED_MODELS, is_installed

    return {name: model.context_length for name, model in NAMED_MODELS.items() if model.context_length and is_installed(name)}


# -- the view ---------------------------------------------------------------------------------------


def context_rows(model_name: str, context_length: int, words_per_token: float | None, installed: dict[str, int]) -> list[ContextRow]:
    """The slide's rows, then the model given, then the installed models, with their pages."""
    named = [(name, tokens, "slide") for name, tokens in SLIDE_CONTEXTS]
    named.append((model_name, context_length, "model"))
    named += [(name, tokens, "installed") for name, tokens in installed.items() if name != model_name]
    return [
        ContextRow(
            name=name,
            context_tokens=tokens,
            source=source,
            pages_rule_of_thumb=pages(tokens, RULE_OF_THUMB_WORDS_PER_TOKEN),
            pages_measured=None if words_per_token is None else pages(tokens, words_per_token),
        )
        for name, tokens, source in named
    ]


def default_cost_lengths(context_length: int, cap: int = MAX_COST_TOKENS) -> list[int]:
    """Sequence lengths for the cost curve: 16, 32, 64, ... doubling up to the context (at most `cap`), which ends the list."""
    top = min(context_length, cap)
    lengths = [length for length in (2**power for power in range(4, 32)) if length < top]
    return lengths + [top]


def measure_forward_costs(model, lengths, *, max_seconds: float = MAX_SECONDS_PER_PASS) -> list[ForwardCost]:
    """Time and memory of a forward pass at each length (ascending), reading a prompt: only the last position is scored.

    Each length is timed COST_REPEAT times (the fastest counts). A length whose pass would take more
    than `max_seconds`, foreseen from the last one (time grows at least as fast as the length), is
    not measured, nor any longer one.
    """
    device = next(model.parameters()).device
    costs: list[ForwardCost] = []
    for length in sorted(lengths):
        if not 1 <= length <= model.config.context_length:
            raise ModelInputError(f"cannot time {length} tokens: this model reads 1 to {model.config.context_length}")
        if costs and costs[-1].ms / 1000 * length / costs[-1].length > max_seconds:
            break
        costs.append(forward_cost_at(model, length, device, last_only=True, repeat=COST_REPEAT))
    return costs


def context_view(
    model,
    tokenizer,
    text: str,
    *,
    model_name: str = "this model",
    measure_cost: bool = False,
    cost_lengths: list[int] | None = None,
    installed_models: bool = True,
) -> ContextView:
    """The student's text against `model`'s context: the slide's table, the fit, and (measure_cost) the cost.

    Words per token is measured on `text` alone: `count_words(text)` / len(tokenizer.encode(text)).
    The fit counts the tokens the model reads (a beginning-of-sequence token included when the model
    wants one); a text longer than the context loses its first tokens, as generation does.
    cost_lengths: the sequence lengths to time (default: `default_cost_lengths`). installed_models:
    add the installed named models' own contexts (read from their files' headers).
    Empty text is a ModelInputError.
    """
    if not isinstance(text, str) or not text.strip():
        raise ModelInputError("the text is empty; give a sentence to measure against the context")
    context_length = model.config.context_length
    ids = encode_prompt(tokenizer, text)
    words = count_words(text)
    text_only = len(tokenizer.encode(text))
    words_per_token = words / text_only if words else None
    dropped = max(0, len(ids) - context_length)
    dropped_text = tokenizer.decode(ids[:dropped]) if dropped else ""
    cost: list[ForwardCost] = []
    if measure_cost:
        cost = measure_forward_costs(model, cost_lengths or default_cost_lengths(context_length))
    return ContextView(
        model_name=model_name,
        context_length=context_length,
        text_tokens=len(ids),
        text_words=words,
        words_per_token=words_per_token,
        dropped_tokens=dropped,
        dropped_characters=len(dropped_text),
        dropped_text=shorten(dropped_text),
        rows=context_rows(model_name, context_length, words_per_token, installed_context_lengths() if installed_models else {}),
        cost=cost,
        device=str(next(model.parameters()).device),
    )


# -- the figures ------------------------------------------------------------------------------------

_SOURCE_COLOURS = {"slide": "#9fc5e8", "model": "#f6b26b", "installed": "#b6d7a8"}


def _row_name(row: ContextRow, lang: str) -> str:
    return say(lang, "ce modèle", "this model") if row.source == "model" and row.name == "this model" else row.name


def number_text(value: float, lang: str, digits: int = 0) -> str:
    """`value` with `digits` decimals, thousands apart by a space, and a decimal comma in French ("4 096", "0,75")."""
    text = f"{value:,.{digits}f}".replace(",", " ")
    return text.replace(".", ",") if lang == "fr" else text


def draw_context_table(view: ContextView, lang: str = "en"):
    """The slide's table as bars: context per model (tokens, log scale), with the pages each holds, and the student's text."""
    check_language(lang)
    figure, axis = new_figure(10.0, 1.6 + 0.45 * len(view.rows))
    names = [_row_name(row, lang) for row in view.rows]
    positions = list(range(len(view.rows)))[::-1]  # first row on top
    axis.barh(positions, [row.context_tokens for row in view.rows], color=[_SOURCE_COLOURS[row.source] for row in view.rows])
    for y, row in zip(positions, view.rows):
        note = say(lang, f"{number_text(row.context_tokens, lang)} jetons ≈ {number_text(row.pages_rule_of_thumb, lang, 1)} p.",
                   f"{number_text(row.context_tokens, lang)} tokens ≈ {number_text(row.pages_rule_of_thumb, lang, 1)} p.")
        if row.pages_measured is not None:
            note += say(lang, f" ({number_text(row.pages_measured, lang, 1)} p. au rythme de votre texte)",
                        f" ({number_text(row.pages_measured, lang, 1)} p. at your text's rate)")
        axis.text(row.context_tokens * 1.08, y, note, va="center", fontsize=8)
    axis.set_yticks(positions)
    axis.set_yticklabels(names, fontsize=9)
    axis.set_xscale("log")
    largest = max(row.context_tokens for row in view.rows)
    axis.set_xlim(min(view.text_tokens, min(row.context_tokens for row in view.rows)) / 2, largest * 40)
    axis.axvline(view.text_tokens, color="#cc0000", linestyle="--", linewidth=1)
    axis.text(view.text_tokens, max(positions) + 0.6, say(lang, f" votre texte : {view.text_tokens} jetons", f" your text: {view.text_tokens} tokens"),
              color="#cc0000", fontsize=8, va="bottom")
    axis.set_ylim(-0.7, max(positions) + 1.2)
    axis.set_xlabel(say(lang, "longueur de contexte (jetons, échelle log)", "context length (tokens, log scale)"))
    if view.words_per_token is None:
        rate = say(lang, "votre texte n'a pas de mots", "your text has no words")
    else:
        rate = say(lang, f"votre texte : {number_text(view.words_per_token, lang, 2)} mot par jeton",
                   f"your text: {view.words_per_token:.2f} words per token")
    axis.set_title(say(lang, f"Combien de pages tiennent dans le contexte ({WORDS_PER_PAGE} mots par page ; règle : "
                             f"{number_text(RULE_OF_THUMB_WORDS_PER_TOKEN, lang, 2)} mot par jeton ; {rate})",
                       f"How many pages fit in the context ({WORDS_PER_PAGE} words per page; rule of thumb: "
                       f"{RULE_OF_THUMB_WORDS_PER_TOKEN} words per token; {rate})"), fontsize=10)
    if not view.fits:
        axis.text(0.99, 0.02, say(lang, f"trop long pour {view.model_name if view.model_name != 'this model' else 'ce modèle'} : "
                                        f"les {view.dropped_tokens} premiers jetons sont coupés",
                                  f"too long for {view.model_name}: the first {view.dropped_tokens} tokens are cut"),
                  transform=axis.transAxes, ha="right", va="bottom", fontsize=9, color="#cc0000")
    return figure


def draw_context_cost(view: ContextView, lang: str = "en"):
    """Time (ms) and peak memory added (MiB) of a forward pass, against the number of tokens read."""
    check_language(lang)
    if not view.cost:
        raise ModelInputError("the cost was not measured; call context_view(..., measure_cost=True) first")
    figure, first = new_figure(11.0, 4.5)
    first.remove()
    time_axis, memory_axis = figure.subplots(1, 2)
    lengths = [cost.length for cost in view.cost]
    time_axis.plot(lengths, [cost.ms for cost in view.cost], marker="o", color="#3d85c6")
    time_axis.set_xlabel(say(lang, "jetons lus (longueur de la séquence)", "tokens read (sequence length)"))
    time_axis.set_ylabel("ms")
    time_axis.set_title(say(lang, "Temps d'une passe avant", "Time of one forward pass"))
    memory = [cost.peak_added_bytes for cost in view.cost]
    if all(value is not None for value in memory):
        memory_axis.plot(lengths, [value / 2**20 for value in memory], marker="o", color="#e69138")
        kind = say(lang, "allouée sur le GPU", "allocated on the GPU") if view.device.startswith("cuda") else say(
            lang, "résidente du processus", "process resident")
        memory_axis.set_ylabel(f"MiB ({kind})")
    else:
        memory_axis.text(0.5, 0.5, say(lang, "mémoire non mesurable ici", "memory cannot be measured here"),
                         ha="center", va="center", transform=memory_axis.transAxes)
    memory_axis.set_xlabel(say(lang, "jetons lus (longueur de la séquence)", "tokens read (sequence length)"))
    memory_axis.set_title(say(lang, "Mémoire de pointe ajoutée", "Peak memory added"))
    for axis in (time_axis, memory_axis):
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
        if view.text_tokens <= lengths[-1]:
            axis.axvline(view.text_tokens, color="#cc0000", linestyle="--", linewidth=1,
                         label=say(lang, "votre texte", "your text"))
            axis.legend(fontsize=8)
    figure.suptitle(say(lang, f"Le coût du contexte ({view.device}, contexte de {view.context_length} jetons)",
                        f"The cost of context ({view.device}, context of {view.context_length} tokens)"))
    return figure

