"""Which tokens end a chat turn, read off the model's own chat template.

A fine-tuned chat model must stop on the token its template closes an assistant turn with (`<|im_end|>` for
ChatML, `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma). Exported models that only know the document
EOS (`<|endoftext|>`, `<|end_of_text|>`) never stop: the most common complaint about merged/GGUF exports.
We render a two-turn conversation and look at the special token right after the assistant's text, instead of
keeping a table of template families.
"""

from __future__ import annotations

from typing import Any

_PROBE = "XQZPROBE"


def chat_turn_terminator(tokenizer: Any) -> int | None:
    """Id of the special token that closes an assistant turn in `tokenizer`'s chat template.

    Returns None when the tokenizer has no chat template or the template puts no special token after the
    assistant's text (then the tokenizer's EOS is the only stop token).
    """
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates that reject this shape (e.g. require a system turn) fall back to EOS
        return None
    tail = text.split(_PROBE, 1)[-1] if _PROBE in text else ""
    specials = {tok: tid for tok, tid in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids)}
    specials.update({str(t): i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
                     if getattr(t, "special", False)})
    tail = tail.lstrip()
    best = None
    for tok, tid in specials.items():
        if tok and tail.startswith(tok) and (best is None or len(tok) > len(best[0])):
            best = (tok, tid)
    return None if best is None else int(best[1])


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids generation must stop on: the chat-turn terminator first, then the tokenizer's EOS if different."""
    ids: list[int] = []
    term = chat_turn_terminator(tokenizer)
    if term is not None:
        ids.append(term)
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in ids:
        ids.append(int(eos))
    return ids
