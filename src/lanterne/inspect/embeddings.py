"""The embedding slide: each token is a vector, and tokens used alike have vectors pointing alike.

Read from the model's input embedding matrix (vocab_size × d_model): a word's vector (its first
values and its length), its nearest tokens by cosine similarity, a 2-D map (PCA) of chosen words,
and analogies (roi − homme + femme ≈ reine). A word the tokenizer cuts into several tokens gets the
average of their vectors, and the result says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from lanterne.errors import ModelInputError
from lanterne.inspect.drawing import new_figure, say

FIRST_VALUES = 8
ROWS_PER_CHUNK = 32_768  # cosine similarities are computed this many vocabulary rows at a time (memory)


@dataclass
class WordVector:
    """One word as the model's input sees it."""

    word: str
    ids: list[int]  # the tokens the word became (with the leading space it has inside a sentence, when that is one token)
    tokens: list[str]
    averaged: bool  # True when the word is several tokens: the vector is their mean
    first_values: list[float]  # the vector's first FIRST_VALUES numbers
    norm: float  # its length
    dimensions: int  # d_model


@dataclass
class Neighbour:
    id: int
    token: str
    similarity: float  # cosine similarity, in [-1, 1]


@dataclass
class EmbeddingView:
    word: WordVector
    neighbours: list[Neighbour]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EmbeddingMap:
    """Chosen words placed by the two main directions (PCA) of their vectors."""

    words: list[str]
    x: list[float]
    y: list[float]
    explained: list[float]  # the share of the words' variance each axis holds
    averaged: list[bool]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Analogy:
    """a − b + c, and the tokens nearest to it (a, b and c left out)."""

    a: str
    b: str
    c: str
    neighbours: list[Neighbour]

    def as_dict(self) -> dict:
        return asdict(self)


def embedding_matrix(model) -> torch.Tensor:
    """The input embedding matrix, (vocab_size, d_model)."""
    return model.embeddings.token.weight.detach()


def word_ids(tokenizer, word: str) -> list[int]:
    """The tokens of `word` as it appears inside a sentence: with its leading space when that makes fewer tokens."""
    if not isinstance(word, str) or not word.strip():
        raise ModelInputError("the word is empty; give a word such as roi or king")
    word = word.strip()
    alone = list(tokenizer.encode(word))
    spaced = list(tokenizer.encode(" " + word))
    in_sentence = spaced and (len(spaced) < len(alone) or len(spaced) == len(alone) == 1)
    chosen = spaced if in_sentence else alone
    if not chosen:
        raise ModelInputError(f"the tokenizer gives no token for {word!r}")
    return chosen


def word_vector(model, tokenizer, word: str) -> tuple[torch.Tensor, WordVector]:
    """The vector of `word` (d_model,), fp32, and its description."""
    ids = word_ids(tokenizer, word)
    unknown = {getattr(tokenizer, name, None) for name in ("unk_id", "unknown_id")} - {None}
    if unknown & set(ids):
        raise ModelInputError(f"{word!r} is not in this model's vocabulary (it becomes the unknown token); try another word")
    matrix = embedding_matrix(model)
    if max(ids) >= matrix.shape[0]:
        raise ModelInputError(f"{word!r} has token ids past this model's embedding matrix; is the tokenizer the model's own?")
    vector = matrix[ids].float().mean(dim=0)  # (d_model,)
    description = WordVector(
        word=word.strip(), ids=ids, tokens=[tokenizer.decode([token_id]) for token_id in ids], averaged=len(ids) > 1,
        first_values=[round(float(value), 4) for value in vector[:FIRST_VALUES]], norm=float(vector.norm()),
        dimensions=int(vector.shape[0]),
    )
    return vector, description


def _hidden_ids(tokenizer, vocabulary_rows: int) -> torch.Tensor:
    """Rows never shown as neighbours: special tokens, and rows past the tokenizer's vocabulary (padding)."""
    hidden = set((getattr(tokenizer, "special_tokens", None) or {}).values())
    hidden.update(range(min(tokenizer.vocab_size, vocabulary_rows), vocabulary_rows))
    return torch.tensor(sorted(hidden), dtype=torch.long)


def nearest_tokens(model, tokenizer, vector: torch.Tensor, count: int = 10, exclude: tuple[int, ...] = ()) -> list[Neighbour]:
    """The `count` tokens whose input vectors have the highest cosine similarity with `vector`."""
    if count < 1:
        raise ModelInputError(f"the number of neighbours must be at least 1, not {count}")
    matrix = embedding_matrix(model)
    direction = vector.float() / vector.float().norm().clamp_min(1e-12)
    similarities = torch.empty(matrix.shape[0])
    for start in range(0, matrix.shape[0], ROWS_PER_CHUNK):
        rows = matrix[start : start + ROWS_PER_CHUNK].float()  # (chunk, d_model)
        similarities[start : start + rows.shape[0]] = rows @ direction / rows.norm(dim=1).clamp_min(1e-12)
    hidden = torch.cat([_hidden_ids(tokenizer, matrix.shape[0]), torch.tensor(exclude, dtype=torch.long)])
    similarities[hidden] = -float("inf")
    best = torch.topk(similarities, min(count, int(torch.isfinite(similarities).sum())))
    return [
        Neighbour(id=int(token_id), token=tokenizer.decode([int(token_id)]), similarity=round(float(similarity), 4))
        for similarity, token_id in zip(best.values, best.indices)
    ]


def embedding_view(model, tokenizer, word: str, neighbours: int = 10) -> EmbeddingView:
    """A word's vector and its nearest tokens (the word's own token comes first: it is nearest to itself)."""
    vector, description = word_vector(model, tokenizer, word)
    return EmbeddingView(description, nearest_tokens(model, tokenizer, vector, neighbours))


def embedding_map(model, tokenizer, words: list[str]) -> EmbeddingMap:
    """Place `words` (at least 3) on the plane of the two directions along which their vectors vary most."""
    words = [word for word in words if word.strip()]
    if len(words) < 3:
        raise ModelInputError("a map needs at least 3 words, e.g. roi reine homme femme")
    pairs = [word_vector(model, tokenizer, word) for word in words]
    vectors = torch.stack([vector for vector, _ in pairs])  # (words, d_model)
    centred = vectors - vectors.mean(dim=0)
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
    coordinates = centred @ directions[:2].T  # (words, 2)
    variance = singular**2
    explained = (variance[:2] / variance.sum().clamp_min(1e-12)).tolist()
    return EmbeddingMap(
        words=[description.word for _, description in pairs], x=[round(float(value), 4) for value in coordinates[:, 0]],
        y=[round(float(value), 4) for value in coordinates[:, 1]], explained=[round(value, 4) for value in explained],
        averaged=[description.averaged for _, description in pairs],
    )


def analogy(model, tokenizer, a: str, b: str, c: str, count: int = 5) -> Analogy:
    """The tokens nearest to vector(a) − vector(b) + vector(c): roi − homme + femme → reine, if the model learnt it."""
    (va, da), (vb, db), (vc, dc) = (word_vector(model, tokenizer, word) for word in (a, b, c))
    exclude = tuple(dict.fromkeys(da.ids + db.ids + dc.ids))
    return Analogy(a, b, c, nearest_tokens(model, tokenizer, va - vb + vc, count, exclude=exclude))


# -- figures --------------------------------------------------------------------------------------


def draw_neighbours(view: EmbeddingView, lang: str = "en"):
    """Bars: the nearest tokens and their cosine similarity."""
    figure, axis = new_figure(7, 0.8 + 0.35 * len(view.neighbours))
    labels = [repr(neighbour.token) for neighbour in view.neighbours][::-1]
    values = [neighbour.similarity for neighbour in view.neighbours][::-1]
    axis.barh(range(len(values)), values, color="#2b5c8c")
    axis.set_yticks(range(len(values)), labels)
    axis.set_xlabel(say(lang, "similarité cosinus", "cosine similarity"))
    note = say(lang, " (moyenne de plusieurs tokens)", " (mean of several tokens)") if view.word.averaged else ""
    axis.set_title(say(lang, f"Tokens les plus proches de « {view.word.word} »{note}", f"Tokens nearest to “{view.word.word}”{note}"))
    return figure


def draw_map(view: EmbeddingMap, lang: str = "en"):
    """Scatter: the words on their two main directions."""
    figure, axis = new_figure(7, 6)
    axis.scatter(view.x, view.y, color="#8c2b4a")
    for word, x, y, averaged in zip(view.words, view.x, view.y, view.averaged):
        axis.annotate(word + ("*" if averaged else ""), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=11)
    axis.set_xlabel(say(lang, f"axe 1 ({view.explained[0]:.0%} de la variance)", f"axis 1 ({view.explained[0]:.0%} of the variance)"))
    axis.set_ylabel(say(lang, f"axe 2 ({view.explained[1]:.0%})", f"axis 2 ({view.explained[1]:.0%})"))
    title = say(lang, "Carte des plongements (ACP)", "Embedding map (PCA)")
    if any(view.averaged):
        title += say(lang, " — * : moyenne de plusieurs tokens", " — *: mean of several tokens")
    axis.set_title(title)
    return figure
