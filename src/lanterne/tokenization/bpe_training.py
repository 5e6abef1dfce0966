"""Learning a byte-level BPE vocabulary: merge the most frequent adjacent pair, again and again.

Incremental, so a few MB train in seconds: each distinct pre-token is counted once with its
frequency; pair counts and a pair -> words index are kept up to date, and a merge touches only
the words that contain its pair. The best pair comes from a heap.

Ties: among pairs with the same count, the pair with the smaller (left id, right id) wins, so a
corpus always gives the same vocabulary.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Callable

import regex

from lanterne.errors import TokenizerError
from lanterne.tokenization.bpe import ByteLevelBPE
from lanterne.tokenization.patterns import resolve_pattern

ProgressCallback = Callable[[int, int], None]


def count_pretokens(text: str, pattern: str, special_tokens: list[str] | tuple[str, ...] = ()) -> Counter[str]:
    """How often each pre-token occurs in `text`; special-token text is left out of training."""
    splitter = regex.compile(pattern)
    counts: Counter[str] = Counter()
    if special_tokens:
        segments = regex.split("|".join(regex.escape(s) for s in special_tokens), text)
    else:
        segments = [text]
    for segment in segments:
        counts.update(splitter.findall(segment))
    return counts


def train_bpe(
    text: str,
    vocab_size: int,
    pattern: str = "o200k",
    special_tokens: list[str] | tuple[str, ...] = ("<|endoftext|>",),
    *,
    name: str | None = None,
    progress: ProgressCallback | None = None,
) -> ByteLevelBPE:
    """Train a byte-level BPE of `vocab_size` ids (256 bytes + merges + special tokens) on `text`.

    Stops early, with fewer ids, when no pair occurs twice; `vocab_size` below 256 + specials is an error.
    """
    pattern = resolve_pattern(pattern)
    special_tokens = list(dict.fromkeys(special_tokens))
    if vocab_size < 256 + len(special_tokens):
        raise TokenizerError(
            f"vocab_size {vocab_size} is too small for byte-level BPE: it needs the 256 bytes"
            f"{f' and {len(special_tokens)} special tokens' if special_tokens else ''}, so at least {256 + len(special_tokens)}"
        )
    if not text:
        raise TokenizerError("cannot train a BPE on empty text; give a corpus with some text")

    counts = count_pretokens(text, pattern, special_tokens)
    words: list[list[int]] = [list(piece.encode("utf-8")) for piece in counts]
    frequencies: list[int] = list(counts.values())
    token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
    id_of_bytes: dict[bytes, int] = {token: index for index, token in enumerate(token_bytes)}

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    words_with_pair: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        frequency = frequencies[index]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += frequency
            words_with_pair[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    target_merges = vocab_size - len(special_tokens) - 256
    merges_done = 0
    while merges_done < target_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:  # stale heap entry; the current count was pushed too
            continue
        if count < 2:
            break  # a pair seen once compresses nothing: stop with a smaller vocabulary
        left, right = pair
        merged = token_bytes[left] + token_bytes[right]
        new_id = id_of_bytes.get(merged)
        if new_id is None:  # a new token; otherwise the same bytes were already built another way
            new_id = len(token_bytes)
            token_bytes.append(merged)
            id_of_bytes[merged] = new_id
            merges_done += 1
            if progress is not None:
                progress(merges_done, target_merges)
        _apply_merge(pair, new_id, words, frequencies, pair_counts, words_with_pair, heap)

    ranks = {token: index for index, token in enumerate(token_bytes)}
    specials = {special: len(token_bytes) + offset for offset, special in enumerate(special_tokens)}
    return ByteLevelBPE(ranks, pattern, specials, name=name)


def _apply_merge(
    pair: tuple[int, int],
    new_id: int,
    words: list[list[int]],
    frequencies: list[int],
    pair_counts: dict[tuple[int, int], int],
    words_with_pair: dict[tuple[int, int], set[int]],
    heap: list[tuple[int, tuple[int, int]]],
) -> None:
    """Replace `pair` by `new_id` in every word holding it; update pair counts, the index and the heap."""
    left, right = pair
    changes: dict[tuple[int, int], int] = defaultdict(int)
    for index in words_with_pair.pop(pair, ()):
        word = words[index]
        length = len(word)
        merged: list[int] = []
        i = 0
        while i < length:
            if i + 1 < length and word[i] == left and word[i + 1] == right:
                merged.append(new_id)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        if len(merged) == length:
            continue  # stale index entry: this word no longer holds the pair
        frequency = frequencies[index]
        for old_pair in zip(word, word[1:]):
            changes[old_pair] -= frequency
        for new_pair in zip(merged, merged[1:]):
            changes[new_pair] += frequency
            if new_id in new_pair:
                words_with_pair[new_pair].add(index)
        words[index] = merged
    for changed_pair, delta in changes.items():
        if delta == 0:
            continue
        count = pair_counts[changed_pair] + delta
        if count > 0:
            pair_counts[changed_pair] = count
            heapq.heappush(heap, (-count, changed_pair))
        else:
            del pair_counts[changed_pair]
