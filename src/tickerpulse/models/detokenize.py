"""Incremental detokenization and stop-string matching for streamed generation.

Decoding token by token breaks multi-byte characters (an emoji spans several byte-level tokens) and
SentencePiece word boundaries; `IncrementalDecoder` only ever emits whole characters. Stop strings are
matched on decoded text, and `held_back` tells a streamer how much of the tail to hold until it is known
not to start a stop string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDecoder:
    """Turn a growing token list into text pieces that are always whole characters.

    Decodes a short window of recent tokens and emits only the new suffix once it no longer ends in the
    U+FFFD replacement character (the vLLM/TGI scheme): O(window) per token, not O(length).
    """

    def __init__(self, tok: Any):
        self.tok = tok
        self.tokens: list[int] = []
        self.text = ""
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens already turned into text

    def add(self, token_id: int) -> str:
        """Append one token; return the new text it completes (may be empty)."""
        self.tokens.append(token_id)
        decode = self.tok.decode
        prefix_text = decode(self.tokens[self._prefix : self._read], skip_special_tokens=True)
        new_text = decode(self.tokens[self._prefix :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            piece = new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.tokens)
            self.text += piece
            return piece
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        full = self.tok.decode(self.tokens, skip_special_tokens=True)
        piece = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += piece
        return piece


def stop_cut(text: str, stop: Sequence[str], search_from: int) -> int | None:
    """Index where the earliest stop string starts in text[search_from:], or None."""
    hits = [i for s in stop if (i := text.find(s, max(0, search_from))) >= 0]
    return min(hits) if hits else None


def held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best
