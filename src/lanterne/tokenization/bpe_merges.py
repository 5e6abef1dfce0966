"""The BPE merge: turning one word's bytes into sub-word tokens by merging the best-ranked pair, again and again.

The rule is tiktoken's: of all adjacent pairs whose concatenation is a token, merge the one
with the lowest rank (the leftmost on a tie), until no pair is a token. `explain_merges` shows
every step; `byte_pair_encode` computes the same result fast, and stays fast on a word of a
million bytes (a base64 blob, a long URL, a run of one character) thanks to a heap.
"""

from __future__ import annotations

import heapq
from typing import Callable, Sequence, TypeVar

# Below this many bytes, scanning every pair at each merge beats keeping a heap up to date.
LONG_PIECE_BYTES = 32

Part = TypeVar("Part", bytes, str)

_MISSING = 1 << 62  # larger than any rank: "this pair is not a token"


def byte_pair_encode(piece: bytes, ranks: dict[bytes, int], byte_ranks: list[int]) -> tuple[list[int], list[int]]:
    """Merge the lowest-ranked adjacent pair of `piece` first, until no pair is a token.

    Returns (ids, starts): the token ids, and where each token starts in `piece` (plus its length).
    Ties go to the leftmost pair, as in tiktoken. `byte_ranks[b]` is the id of the single byte b.
    Time: quadratic in the length of `piece` below LONG_PIECE_BYTES, n log n above.
    """
    if len(piece) >= LONG_PIECE_BYTES:
        return _byte_pair_encode_heap(piece, ranks, byte_ranks)
    rank_of = ranks.get
    # Part k is piece[starts[k]:starts[k + 1]]; pair_ranks[k] is the rank of parts k and k+1 joined.
    starts = list(range(len(piece) + 1))
    pair_ranks = [rank_of(piece[i : i + 2], _MISSING) for i in range(len(piece) - 1)]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _MISSING:
            break
        i = pair_ranks.index(best)  # leftmost of the lowest rank: parts i and i+1 become one
        del starts[i + 1], pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = rank_of(piece[starts[i - 1] : starts[i + 1]], _MISSING)
        if i < len(pair_ranks):
            pair_ranks[i] = rank_of(piece[starts[i] : starts[i + 2]], _MISSING)
    if len(starts) == len(piece) + 1:  # nothing merged
        return [byte_ranks[byte] for byte in piece], starts
    return [rank_of(piece[start:end]) for start, end in zip(starts, starts[1:])], starts


def _byte_pair_encode_heap(piece: bytes, ranks: dict[bytes, int], byte_ranks: list[int]) -> tuple[list[int], list[int]]:
    """`byte_pair_encode` for long pieces: the same merges, in n log n time.

    Parts are a linked list over their start offsets. The heap holds every pair ever formed as one
    integer, rank * size + left start, so the smallest is the lowest rank, leftmost. A popped pair is
    used only if the part at its left start still forms a pair of that rank with its neighbour;
    otherwise a merge nearby made it stale. (Same rank means same bytes, hence the same merge.)
    """
    size = len(piece)
    rank_of = ranks.get
    ids = [byte_ranks[byte] for byte in piece]
    next_start = list(range(1, size + 1))  # next_start[i]: where the part after the one starting at i starts
    previous_start = list(range(-1, size - 1))
    alive = [True] * size  # alive[i]: a part starts at byte i
    heap = [rank * size + i for i in range(size - 1) if (rank := rank_of(piece[i : i + 2])) is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, left = divmod(pop(heap), size)
        if not alive[left]:
            continue
        right = next_start[left]
        if right >= size:
            continue
        end = next_start[right]
        if rank_of(piece[left:end]) != rank:
            continue  # stale: a part has changed since this pair was formed
        ids[left] = rank
        alive[right] = False
        next_start[left] = end
        if end < size:
            previous_start[end] = left
            joined = rank_of(piece[left : next_start[end]])
            if joined is not None:
                push(heap, joined * size + left)
        before = previous_start[left]
        if before >= 0:
            joined = rank_of(piece[before:end])
            if joined is not None:
                push(heap, joined * size + before)
    starts = [i for i in range(size) if alive[i]]
    return [ids[i] for i in starts], starts + [size]


def byte_pair_merge(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """The tokens of `piece` as bytes (see `byte_pair_encode`). Every single byte must be in `ranks`."""
    _, starts = byte_pair_encode(piece, ranks, [ranks[bytes([b])] for b in range(256)])
    return [piece[start:end] for start, end in zip(starts, starts[1:])]


def explain_merges(piece: bytes, ranks: dict[bytes, int]) -> list[list[bytes]]:
    """Every step of `byte_pair_merge` on `piece`: the list of parts before each merge and at the end.

    The slow, explaining path (for students); `byte_pair_merge` gives the same final parts.
    """
    return explain_pieces([piece[i : i + 1] for i in range(len(piece))], lambda left, right: ranks.get(left + right))


def explain_pieces(parts: Sequence[Part], rank_of: Callable[[Part, Part], int | None]) -> list[list[Part]]:
    """Every merge of the lowest-ranked adjacent pair (leftmost on ties), from `parts` until no pair has
    a rank: the list of parts before each merge and at the end. Parts are bytes (byte-level BPE) or
    strings (SentencePiece); rank_of(left, right) is the rank of joining them, None if they never join.
    """
    pieces = list(parts)
    steps = [list(pieces)]
    while len(pieces) > 1:
        candidates = [(rank, i) for i in range(len(pieces) - 1) if (rank := rank_of(pieces[i], pieces[i + 1])) is not None]
        if not candidates:
            break
        _, i = min(candidates)
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
        steps.append(list(pieces))
    return steps


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list a ranks table implies (what HuggingFace and GGUF files store), best first.

    tiktoken keeps only ranks; a merge list says which two tokens join into each one. The pair for
    a token is found by running the merges on its bytes with only lower-ranked tokens allowed: the
    two parts left are the ones the merge joins. Raises ValueError for a token no merge builds.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        allowed = lambda left, right, rank=rank: found if (found := ranks.get(left + right)) is not None and found < rank else None  # noqa: E731
        parts = explain_pieces([token[i : i + 1] for i in range(len(token))], allowed)[-1]
        if len(parts) != 2:
            raise ValueError(f"token {rank} ({token!r}) is not the merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges
