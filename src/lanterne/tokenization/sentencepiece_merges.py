"""The SentencePiece merge: a text's characters joined two by two into vocabulary pieces, best pair first.

Unlike byte-level BPE, the parts are characters (or '<0xNN>' byte pieces for characters the
vocabulary lacks), and a pair's rank is `rank_of(left, right)`: from the scores of the pieces
(`ranks_from_scores`) or a list of merges (`ranks_from_merges`). The rule is HuggingFace's BPE:
merge the adjacent pair with the lowest rank, the leftmost on a tie, until no pair has a rank.
`bpe_merges.explain_pieces` shows every step; `merge_pieces` computes the same result, with a heap for long texts.
"""

from __future__ import annotations

import heapq
from typing import Callable, Sequence

from lanterne.errors import VocabularyFileError

RankOf = Callable[[str, str], "int | None"]


def ranks_from_scores(pieces: Sequence[str], scores: Sequence[float] | None) -> RankOf:
    """The rank of a pair from the score of the piece it makes, in the order transformers gives the merges
    it derives from a SentencePiece vocabulary (lower rank merges first).

    transformers sorts every split (left, right) of every piece into two pieces by (score of the piece,
    length of left, length of right), highest first, then by id. `scores=None` ranks by id instead,
    lowest first (what transformers does for Gemma). Packed into one integer per pair:
    rank = base[piece] - len(left) * step, where base holds the score's place, len(piece) and the id.
    """
    size = len(pieces)
    piece_id = {piece: token_id for token_id, piece in enumerate(pieces)}  # a repeated piece keeps its last id
    width = max(map(len, pieces), default=0) + 1  # above every piece length
    if scores is None:
        place = piece_id
    else:
        score_of = {piece: scores[token_id] for piece, token_id in piece_id.items()}
        place_of_score = {score: index for index, score in enumerate(sorted(set(score_of.values()), reverse=True))}
        place = {piece: place_of_score[score] for piece, score in score_of.items()}
    # ((place * width + width - len(left)) * width + width - len(right)) * size + id, expanded.
    base = {
        piece: (place[piece] * width * width + width * width + width - len(piece)) * size + token_id
        for piece, token_id in piece_id.items()
        if len(piece) > 1
    }
    step = (width - 1) * size
    base_of = base.get

    def rank_of(left: str, right: str) -> int | None:
        piece_base = base_of(left + right)
        return None if piece_base is None else piece_base - len(left) * step

    return rank_of


def ranks_from_merges(pieces: Sequence[str], merges: Sequence[tuple[str, str]]) -> RankOf:
    """The rank of a pair: its place in `merges` (a tokenizer.json's list), as HuggingFace's BPE reads it."""
    known = set(pieces)
    ranks: dict[tuple[str, str], int] = {}
    for position, (left, right) in enumerate(merges):
        if left not in known or right not in known or left + right not in known:
            raise VocabularyFileError(
                f"merge {position} ({left!r} + {right!r}) uses or makes a piece not in the vocabulary; the file is corrupt"
            )
        ranks.setdefault((left, right), position)
    rank_of_pair = ranks.get
    return lambda left, right: rank_of_pair((left, right))

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
