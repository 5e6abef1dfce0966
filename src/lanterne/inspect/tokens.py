"""The tokenization slide on the student's text: letters, words and sub-words, side by side.

The same text cut by a character tokenizer, a word tokenizer, the model's own tokenizer and the
published vocabularies found on this machine; each with its tokens (text, id, span), its vocabulary
size, its sequence length and its rate of unknown tokens, measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from lanterne.errors import DownloadError, InputTextError
from lanterne.inspect.drawing import check_language, new_figure, say, token_label
from lanterne.tokenization.char import CharTokenizer
from lanterne.tokenization.tiktoken_files import load_named
from lanterne.tokenization.word import WordTokenizer

# The reference corpus the character and word vocabularies are built from when none is given: one
# paragraph in each language of the lecture. Small on purpose: a word vocabulary is a closed list,
# and the student's words that are not in it become <unk>, as the slide says.
REFERENCE_TEXT = (
    "Un modèle de langue lit un texte découpé en jetons et prédit le jeton suivant. Chaque jeton devient "
    "un vecteur ; l'attention mélange les vecteurs des mots précédents, puis un petit réseau transforme "
    "chacun d'eux. Le modèle répète ces blocs plusieurs fois, puis donne une probabilité à chaque mot "
    "possible. On choisit un mot, on l'ajoute au texte, et on recommence.\n"
    "A language model reads a text cut into tokens and predicts the next token. Each token becomes a "
    "vector; attention mixes the vectors of the previous words, then a small network transforms each of "
    "them. The model repeats these blocks several times, then gives a probability to every possible word. "
    "We choose a word, add it to the text, and start again.\n"
)
FAMILIES = ("characters", "words", "sub-words")
WINDOW_CHARACTERS = 64  # characters of the text shown as token strips in the figure


@dataclass
class TokenPiece:
    """One token of the text: its id, its text, and the characters [start, end) of the text it covers."""

    id: int
    text: str
    start: int
    end: int
    unknown: bool = False  # the unknown token (<unk>): text this vocabulary cannot spell


@dataclass
class TokenizedRow:
    """The text as one tokenizer cuts it."""

    name: str  # "characters", "words", "model", or a published vocabulary's name
    family: str  # "characters", "words" or "sub-words"
    source: str  # "reference" (trained on the reference text), "model" or "published"
    vocab_size: int  # ids this tokenizer has
    tokens: list[TokenPiece]

    @property
    def unknown(self) -> int:
        """Tokens that are the unknown token."""
        return sum(token.unknown for token in self.tokens)

    @property
    def count(self) -> int:
        """Sequence length, in tokens."""
        return len(self.tokens)

    @property
    def unknown_rate(self) -> float:
        """Fraction of the tokens that are unknown (0.0 for no tokens)."""
        return self.unknown / self.count if self.count else 0.0

    def as_dict(self, max_tokens: int | None = None) -> dict:
        shown = self.tokens if max_tokens is None else self.tokens[:max_tokens]
        return {
            "name": self.name,
            "family": self.family,
            "source": self.source,
            "vocab_size": self.vocab_size,
            "count": self.count,
            "unknown": self.unknown,
            "unknown_rate": self.unknown_rate,
            "tokens": [{"id": t.id, "text": t.text, "start": t.start, "end": t.end, "unknown": t.unknown} for t in shown],
        }


@dataclass
class TokenizationView:
    """The student's text through every tokenizer; `characters` is its length in characters."""

    text: str
    reference: str  # "built-in" or "given": what the character and word vocabularies were built from
    rows: list[TokenizedRow] = field(default_factory=list)

    @property
    def characters(self) -> int:
        return len(self.text)

    def row(self, name: str) -> TokenizedRow:
        """The row of the tokenizer called `name`."""
        return next(row for row in self.rows if row.name == name)

    def as_dict(self, max_tokens: int | None = None) -> dict:
        """JSON-ready; `max_tokens` lists at most that many tokens per row (counts stay those of the whole text)."""
        return {
            "text": self.text,
            "characters": self.characters,
            "reference": self.reference,
            "rows": [row.as_dict(max_tokens) for row in self.rows],
        }


def family_of(kind: str) -> str:
    """The slide's family of a tokenizer kind: 'char' -> characters, 'word' -> words, anything else -> sub-words."""
    return {"char": "characters", "word": "words"}.get(kind, "sub-words")


def unknown_ids(tokenizer) -> set[int]:
    """The ids that stand for text the vocabulary cannot spell (empty for byte-level vocabularies, which spell anything)."""
    if isinstance(tokenizer, CharTokenizer):
        return {tokenizer.unknown_id}
    if isinstance(tokenizer, WordTokenizer):
        return {0}
    unk_id = getattr(tokenizer, "unk_id", None)  # SentencePiece; unused when it falls back to bytes
    if unk_id is not None:
        return {unk_id}
    unk_token = getattr(tokenizer, "unk_token", None)  # WordPiece's [UNK]
    ids = getattr(tokenizer, "ids", None)
    if unk_token is not None and isinstance(ids, dict) and unk_token in ids:
        return {ids[unk_token]}
    return set()


def tokenize_row(name: str, source: str, tokenizer, text: str) -> TokenizedRow:
    """`text` through `tokenizer`: its tokens with spans, and how many are unknown."""
    unknown = unknown_ids(tokenizer)
    tokens = [TokenPiece(token.id, token.text, token.start, token.end, token.id in unknown) for token in tokenizer.tokens(text)]
    return TokenizedRow(name=name, family=family_of(tokenizer.kind), source=source, vocab_size=tokenizer.vocab_size, tokens=tokens)


def tokenization_view(
    text: str, tokenizer=None, *, named: Sequence[str] = ("o200k_base",), reference: str | None = None
) -> TokenizationView:
    """The slide's table measured on `text`: characters, words, the model's tokenizer, published vocabularies.

    The character and word vocabularies are built from `reference` (default: REFERENCE_TEXT, a
    paragraph in French and one in English), never from `text` itself: a word list fixed in advance
    misses the student's new words (they become <unk>), a character list misses only rare characters
    but makes long sequences. `unknown_rate` is measured on `text`: unknown characters over characters,
    unknown words over words. The model's tokenizer (`tokenizer`, optional) and each vocabulary of
    `named` found on this machine (never downloaded; absent ones are skipped) are used as they are.
    Empty text is an InputTextError.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputTextError("the text is empty; give a sentence to cut into tokens")
    source_text = REFERENCE_TEXT if reference is None else reference
    if not source_text.strip():
        raise InputTextError("the reference text is empty; give some text to build the letter and word vocabularies from")
    rows = [
        tokenize_row("characters", "reference", CharTokenizer.train(source_text), text),
        tokenize_row("words", "reference", WordTokenizer.train(source_text), text),
    ]
    if tokenizer is not None:
        rows.append(tokenize_row("model", "model", tokenizer, text))
    for name in named:
        try:
            vocabulary = load_named(name, download=False)
        except DownloadError:
            continue  # not on this machine: the slide shows what is here
        rows.append(tokenize_row(name, "published", vocabulary, text))
    return TokenizationView(text=text, reference="built-in" if reference is None else "given", rows=rows)


# -- the figure -----------------------------------------------------------------------------------

_STRIP_COLOURS = ("#cfe2f3", "#d9ead3", "#fff2cc", "#ead1dc", "#d0e0e3")
_UNKNOWN_COLOUR = "#e06666"


def row_label(row: TokenizedRow, lang: str) -> str:
    """The row's name in the figure's language."""
    if row.name == "characters":
        return say(lang, "caractères", "characters")
    if row.name == "words":
        return say(lang, "mots", "words")
    if row.name == "model":
        return say(lang, "modèle", "model")
    return row.name


def window_tokens(row: TokenizedRow, characters: int) -> list[TokenPiece]:
    """The row's tokens that start within the first `characters` characters of the text."""
    return [token for token in row.tokens if token.start < characters]


def draw_tokenization(view: TokenizationView, lang: str = "en", window: int = WINDOW_CHARACTERS):
    """Token strips of the first `window` characters, aligned on the text, over bars of sequence lengths and vocabulary sizes (log)."""
    check_language(lang)
    figure, first = new_figure(12.0, 3.5 + 0.55 * len(view.rows))
    first.remove()
    grid = figure.add_gridspec(2, 2, height_ratios=[0.6 * len(view.rows) + 0.6, 3.0])
    _draw_strips(figure.add_subplot(grid[0, :]), view, lang, window)
    _draw_lengths(figure.add_subplot(grid[1, 0]), view, lang)
    _draw_vocabularies(figure.add_subplot(grid[1, 1]), view, lang)
    return figure


def _draw_strips(axis, view: TokenizationView, lang: str, window: int) -> None:
    from matplotlib.patches import Rectangle

    shown = min(window, view.characters)
    for position, row in enumerate(view.rows):
        y = len(view.rows) - 1 - position
        drawn_until = 0.0
        for index, token in enumerate(window_tokens(row, shown)):
            # Byte-level tokens that split one character share its span: draw them one after the other.
            start = max(float(token.start), drawn_until)
            end = max(min(float(token.end), shown), start + 0.25)
            colour = _UNKNOWN_COLOUR if token.unknown else _STRIP_COLOURS[index % len(_STRIP_COLOURS)]
            axis.add_patch(Rectangle((start, y - 0.4), end - start, 0.8, facecolor=colour, edgecolor="white", linewidth=1))
            # An unknown token shows the text it stands for, so the student sees which word was lost.
            label = token_label(view.text[token.start : token.end] if token.unknown else token.text, max(1, int(end - start)))
            axis.text((start + end) / 2, y, label, ha="center", va="center", fontsize=8, family="monospace")
            drawn_until = end
    axis.set_xlim(0, max(shown, 1))
    axis.set_ylim(-0.6, len(view.rows) - 0.4)
    axis.set_yticks(range(len(view.rows)))
    axis.set_yticklabels([f"{row_label(row, lang)} ({row.count})" for row in reversed(view.rows)], fontsize=9)
    axis.set_xticks([])
    for side in ("top", "right", "bottom"):
        axis.spines[side].set_visible(False)
    if shown < view.characters:
        title = say(
            lang,
            f"Les {shown} premiers caractères sur {view.characters}, découpés par chaque tokenizer (rouge : inconnu)",
            f"The first {shown} of {view.characters} characters, cut by each tokenizer (red: unknown)",
        )
    else:
        title = say(lang, "Le même texte, découpé par chaque tokenizer (rouge : inconnu)", "The same text, cut by each tokenizer (red: unknown)")
    axis.set_title(title)


def _draw_lengths(axis, view: TokenizationView, lang: str) -> None:
    names = [row_label(row, lang) for row in view.rows]
    counts = [row.count for row in view.rows]
    bars = axis.bar(range(len(names)), counts, color="#6fa8dc")
    for bar, row in zip(bars, view.rows):
        note = f"{row.count}" + (say(lang, f"\n{row.unknown_rate:.0%} inconnus", f"\n{row.unknown_rate:.0%} unknown") if row.unknown else "")
        axis.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=20, fontsize=9)
    axis.set_ylabel(say(lang, "longueur de la séquence (jetons)", "sequence length (tokens)"))
    axis.set_ylim(0, max(counts) * 1.25 + 1)
    axis.set_title(say(lang, f"Jetons pour {view.characters} caractères", f"Tokens for {view.characters} characters"))


def _draw_vocabularies(axis, view: TokenizationView, lang: str) -> None:
    names = [row_label(row, lang) for row in view.rows]
    sizes = [row.vocab_size for row in view.rows]
    bars = axis.bar(range(len(names)), sizes, color="#93c47d")
    for bar, size in zip(bars, sizes):
        axis.annotate(f"{size:,}".replace(",", " "), (bar.get_x() + bar.get_width() / 2, size), ha="center", va="bottom", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylim(1, max(sizes) * 4)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=20, fontsize=9)
    axis.set_ylabel(say(lang, "taille du vocabulaire (échelle log)", "vocabulary size (log scale)"))
    source = say(lang, "texte de référence intégré", "built-in reference text") if view.reference == "built-in" else say(
        lang, "texte de référence donné", "given reference text"
    )
    axis.set_title(say(lang, f"Vocabulaires (lettres et mots : {source})", f"Vocabularies (letters and words: {source})"))
