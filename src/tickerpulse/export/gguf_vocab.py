"""Tokenizer -> GGUF `tokenizer.*` metadata, the way llama.cpp's `convert_hf_to_gguf.py` writes it.

Byte-level BPE tokenizers (`tokenizer.json` with a BPE model and a ByteLevel pre-tokenizer: SmolLM, Llama 3,
Qwen 2, GPT-2, StarCoder) become `tokenizer.ggml.model = gpt2` with the token list, token types (special
added tokens = CONTROL, other added tokens = USER_DEFINED), merges, special token ids, add-BOS/EOS flags
and the chat template. llama.cpp picks its pre-tokenizer regex from `tokenizer.ggml.pre`, a name it
identifies by hashing the token ids of a fixed probe text (`CHECK_TEXT`); we compute the same hash and look
it up in `KNOWN_PRE` (values from llama.cpp), or take the name given with `--tokenizer-pre`.

Limitation: SentencePiece/Unigram/WordPiece tokenizers (Llama 2, Mistral v0.1, Gemma) are rejected with an
error for now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from tickerpulse.config import ConfigError

# llama.cpp's probe text for identifying BPE pre-tokenizers (convert_hf_to_gguf.py, get_vocab_base_pre).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(token ids of CHECK_TEXT)) -> llama.cpp pre-tokenizer name.
KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen 1.5 / 2 / 2.5
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
}

# gguf TokenType values
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class Vocab:
    """Everything `write_vocab` puts into the GGUF."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None  # chat-turn terminator when it differs from EOS
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def pre_tokenizer_hash(tokenizer: Any) -> str:
    """llama.cpp's fingerprint of a BPE pre-tokenizer."""
    return sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def build_vocab(model_dir: Path, vocab_size: int, *, tokenizer_pre: str | None = None) -> Vocab:
    """Read the tokenizer in `model_dir` into GGUF vocab fields.

    Raises:
        ConfigError: not a byte-level BPE tokenizer, or a pre-tokenizer llama.cpp would not recognise
            (pass `tokenizer_pre` to name it).
    """
    from transformers import AutoTokenizer

    from tickerpulse.export.tokens import chat_turn_terminator

    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        raise ConfigError(f"{model_dir} has no tokenizer.json: only fast (tokenizers) BPE tokenizers export to GGUF")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    model_type = (tj.get("model") or {}).get("type")
    if model_type != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")) + json.dumps(tj.get("decoder")):
        raise ConfigError(
            f"{model_dir}: tokenizer model {model_type!r} without a ByteLevel pre-tokenizer (SentencePiece-style) is "
            "not supported by the GGUF exporter yet; byte-level BPE tokenizers are (SmolLM, Llama 3, Qwen 2)"
        )
    tok = AutoTokenizer.from_pretrained(model_dir)
    pre = tokenizer_pre or KNOWN_PRE.get(pre_tokenizer_hash(tok))
    if pre is None:
        raise ConfigError(
            f"{model_dir}: llama.cpp would not recognise this BPE pre-tokenizer (hash {pre_tokenizer_hash(tok)}); "
            f"pass --tokenizer-pre NAME with the llama.cpp name of the model family it comes from "
            f"(known here: {', '.join(sorted(set(KNOWN_PRE.values())))})"
        )
    vocab = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ConfigError(f"tokenizer has id {max(vocab.values())} but the model's vocab_size is {vocab_size}")
    reverse = {i: t for t, i in vocab.items()}
    added = tok.get_added_vocab()
    decoder = getattr(tok, "added_tokens_decoder", {})
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        t = reverse[i]
        if t in added:
            special = getattr(decoder.get(i), "special", False)
            types.append(CONTROL if special or _looks_special(t) else USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(t)

    merges = _merges(tj)
    probe = tok.encode("hello")
    eos = tok.eos_token_id
    term = chat_turn_terminator(tok)
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return Vocab(
        tokens=tokens, token_types=types, merges=merges, pre=pre,
        bos_id=tok.bos_token_id, eos_id=eos, eot_id=term if term is not None and term != eos else None,
        unk_id=tok.unk_token_id, pad_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
        add_bos=bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id,
        add_eos=bool(probe) and eos is not None and probe[-1] == eos,
        chat_template=template,
    )


def write_vocab(writer: Any, vocab: Vocab) -> None:
    """Add the `tokenizer.*` keys to a GGUFWriter (same keys and order as llama.cpp's converter)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for kind in ("bos", "eos", "unk", "pad", "eot"):
        tid = getattr(vocab, f"{kind}_id")
        if tid is not None:
            getattr(writer, f"add_{kind}_token_id")(int(tid))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_add_space_prefix(False)  # byte-level BPE encodes spaces itself
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _merges(tj: dict[str, Any]) -> list[str]:
    merges = (tj.get("model") or {}).get("merges") or []
    if merges and isinstance(merges[0], list):
        # tokenizers >= 0.20 stores pairs; a space inside a part is written as U+0120+ like llama.cpp does
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                for pair in merges]
    return list(merges)


def _looks_special(token: str) -> bool:
    """Added tokens some tokenizers forget to flag as special (same rule as llama.cpp)."""
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")
