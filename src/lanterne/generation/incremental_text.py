"""Generated ids to text as they come: each token decoded once, stop strings looked for only where a new one can be.

Decoding every generated id again at each new token, and searching the whole text again for stop
strings, costs time that grows with the square of the output's length. Here each token adds its own
text (kept apart while a later token may still change it: half of a UTF-8 character), and a stop
string is looked for only in the new text and the few characters before it where a match could start.
"""

from __future__ import annotations

import codecs
from collections import deque
from typing import Sequence

CONTEXT_TOKENS = 4  # tokenizers that are not byte-level: at least this many settled ids re-decoded before a new one
MAX_UNSETTLED_TOKENS = 8  # past this many tokens whose text still ends in U+FFFD, it is taken as it is


class IncrementalText:
    """`tokenizer.decode(ids)` of a growing list of ids, brought up to date one token at a time.

    The text is `settled` characters that later tokens cannot change, then `unsettled` ones that
    they may (the U+FFFD of half a UTF-8 character). A byte-level tokenizer (one with `decode_bytes`,
    whose text is its bytes read as UTF-8) is decoded byte by byte, exactly. Any other tokenizer
    re-decodes the new tokens after the last few settled ones (at least CONTEXT_TOKENS, starting where a
    character does): exact for tokenizers where a token's text depends only on its neighbours
    (characters, words, WordPiece, SentencePiece) once the text does not end inside a character.
    Work per token: its own bytes, or fewer than 2 x MAX_UNSETTLED_TOKENS + CONTEXT_TOKENS ids.
    """

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pieces: list[str] = []  # the settled text, in the pieces it came in
        self.settled_length = 0  # characters
        self.unsettled = ""
        self.token_count = 0  # ids appended
        self.decoded_ids = 0  # ids handed to the tokenizer so far: the work done (tests count it)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace") if hasattr(tokenizer, "decode_bytes") else None
        # Not byte-level: the ids settled together, most recent last (a group starts where a character does),
        # the last ones (at least CONTEXT_TOKENS ids) as the context a new token is decoded after, and their text.
        self._groups: deque[list[int]] = deque()
        self._context: list[int] = []
        self._context_text = ""
        self._unsettled_ids: list[int] = []

    def __len__(self) -> int:
        """The text's length in characters, unsettled ones included."""
        return self.settled_length + len(self.unsettled)

    def append(self, token_id: int) -> None:
        """Add one token's text."""
        self.token_count += 1
        if self._utf8 is not None:
            self.decoded_ids += 1
            settled = self._utf8.decode(self._tokenizer.decode_bytes([token_id]))
            self.unsettled = self._utf8.getstate()[0].decode("utf-8", errors="replace")  # at most 3 bytes wait
            self._settle(settled)
            return
        self._unsettled_ids.append(token_id)
        window = self._context + self._unsettled_ids
        self.decoded_ids += len(window)
        new = self._tokenizer.decode(window)[len(self._context_text) :]
        if new.endswith("\ufffd") and len(self._unsettled_ids) < MAX_UNSETTLED_TOKENS:
            self.unsettled = new  # byte pieces of a character not finished yet
            return
        self._groups.append(self._unsettled_ids)
        while len(window) - len(self._groups[0]) >= CONTEXT_TOKENS:
            window = window[len(self._groups.popleft()) :]
        self._context = window
        self.decoded_ids += len(self._context)
        self._context_text = self._tokenizer.decode(self._context)
        self._unsettled_ids, self.unsettled = [], ""
        self._settle(new)

    def _settle(self, text: str) -> None:
        if text:
            self._pieces.append(text)
            self.settled_length += len(text)

    def tail(self, start: int) -> str:
        """The text from character `start` on, unsettled characters included, in time linear in its length."""
        start = max(start, 0)
        wanted = self.settled_length - start  # settled characters to take from the end
        if wanted <= 0:
            return self.unsettled[-wanted:]
        parts, taken, index = [], 0, len(self._pieces)
        while taken < wanted:
            index -= 1
            parts.append(self._pieces[index])
            taken += len(self._pieces[index])
        return "".join(reversed(parts))[taken - wanted :] + self.unsettled

    def __str__(self) -> str:
        return "".join(self._pieces) + self.unsettled


class StopStrings:
    """Finds the first stop string in an IncrementalText, looking only where a new match can be.

    Call `find` after each token: a match that was not there before must end in text added since,
    so it starts at most len(longest stop) - 1 characters before that. `scanned` counts the
    characters looked at (tests check it grows linearly).
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self.longest = max((len(s) for s in self.stop), default=0)
        self._searched = 0  # settled characters in which every match has been looked for
        self.scanned = 0

    def find(self, text: IncrementalText) -> int | None:
        """Where the first stop string starts in `text` (characters), or None."""
        if not self.stop:
            return None
        start = max(0, self._searched - (self.longest - 1))
        window = text.tail(start)
        self.scanned += len(window)
        self._searched = text.settled_length
        cuts = [cut for cut in (window.find(s) for s in self.stop) if cut >= 0]
        return start + min(cuts) if cuts else None

    def held_back(self, text: IncrementalText) -> int:
        """How many final characters a stream must keep back: a possible start of a stop string, or unsettled text."""
        keep = 0
        end = text.tail(len(text) - (self.longest - 1)) if self.longest > 1 else ""
        for s in self.stop:
            for size in range(min(len(s) - 1, len(end)), keep, -1):
                if end.endswith(s[:size]):
                    keep = size
                    break
        return max(keep, len(text.unsettled))
