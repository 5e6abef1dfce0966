"""The SentencePiece merge: a text's characters joined two by two into vocabulary pieces, best pair first.

Unlike byte-level BPE, the parts are characters (or '<0xNN>' byte pieces for characters the
vocabulary lacks), and a pair's rank comes from the tokenizer (`rank_of(left, right)`), not from
the joined bytes alone. The rule is HuggingFace's BPE: merge the adjacent pair with the lowest
rank, the leftmost on a tie, until no pair has a rank. `explain_pieces` shows every step;
`merge_pieces` computes the same result, with a heap for long texts.
"""

from __future__ import annotations

import heapq
from typing import Callable, Sequence

RankOf = Callable[[str, str], "int | None"]

# Below this many parts, scanning every pair at each merge beats keeping a heap up to date.
LONG_TEXT_PARTS = 48


def merge_pieces(parts: Sequence[str], rank_of: RankOf) -> tuple[list[str], list[int]]:
    """Merge the lowest-ranked adjacent pair of `parts` first (leftmost on a tie), until no pair merges.

    Returns (pieces, starts): the final pieces, and for each the index in `parts` where it starts.
    `rank_of(left, right)` is the pair's rank, or None when the two never merge.
    Time: quadratic in len(parts) below LONG_TEXT_PARTS, n log n above.
    """
    if len(parts) >= LONG_TEXT_PARTS:
        return _merge_pieces_heap(parts, rank_of)
    pieces = list(parts)
    starts = list(range(len(parts)))
    missing = float("inf")  # "this pair never merges"; above every rank
    # pair_ranks[k] is the rank of pieces k and k+1 joined.
    pair_ranks = [rank_of(left, right) for left, right in zip(pieces, pieces[1:])]
    pair_ranks = [missing if rank is None else rank for rank in pair_ranks]
    while pair_ranks:
        best = min(pair_ranks)
        if best == missing:
            break
        i = pair_ranks.index(best)  # leftmost of the lowest rank: pieces i and i+1 become one
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
        del starts[i + 1], pair_ranks[i]
        if i > 0:
            rank = rank_of(pieces[i - 1], pieces[i])
            pair_ranks[i - 1] = missing if rank is None else rank
        if i < len(pair_ranks):
            rank = rank_of(pieces[i], pieces[i + 1])
            pair_ranks[i] = missing if rank is None else rank
    return pieces, starts


def _merge_pieces_heap(parts: Sequence[str], rank_of: RankOf) -> tuple[list[str], list[int]]:
    """`merge_pieces` for long texts: the same merges, in n log n time (HuggingFace's `Word::merge_all`).

    Pieces are a linked list over the index of their first part. The heap holds every pair ever
    formed as (rank, left index). A popped pair is used only if the piece at its left index still
    forms a pair of that rank with its neighbour; otherwise a merge nearby made it stale.
    """
    size = len(parts)
    pieces = list(parts)  # pieces[i]: the piece starting at part i (stale where not alive[i])
    next_start = list(range(1, size + 1))
    previous_start = list(range(-1, size - 1))
    alive = [True] * size
    heap = [(rank, i) for i in range(size - 1) if (rank := rank_of(pieces[i], pieces[i + 1])) is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, left = pop(heap)
        if not alive[left]:
            continue
        right = next_start[left]
        if right >= size or rank_of(pieces[left], pieces[right]) != rank:
            continue  # stale: a piece has changed since this pair was formed
        pieces[left] += pieces[right]
        alive[right] = False
        end = next_start[left] = next_start[right]
        if end < size:
            previous_start[end] = left
            joined = rank_of(pieces[left], pieces[end])
            if joined is not None:
                push(heap, (joined, left))
        before = previous_start[left]
        if before >= 0:
            joined = rank_of(pieces[before], pieces[left])
            if joined is not None:
                push(heap, (joined, before))
    starts = [i for i in range(size) if alive[i]]
    return [pieces[i] for i in starts], starts


def explain_pieces(parts: Sequence[str], rank_of: RankOf) -> list[list[str]]:
    """Every step of `merge_pieces`: the list of pieces before each merge and at the end.

    The slow, explaining path (for students); `merge_pieces` gives the same final pieces.
    """
    pieces = list(parts)
    steps = [list(pieces)]
    while len(pieces) > 1:
        candidates = [
            (rank, i) for i in range(len(pieces) - 1) if (rank := rank_of(pieces[i], pieces[i + 1])) is not None
        ]
        if not candidates:
            break
        _, i = min(candidates)
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
        steps.append(list(pieces))
    return steps
