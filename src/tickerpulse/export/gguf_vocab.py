"""Tokenizer -> GGUF `tokenizer.*` metadata through `gguf.vocab`, corrected to what llama.cpp's converter writes.

The `gguf` package reads the tokenizer: `gguf.vocab.BpeVocab` (byte-level BPE `tokenizer.json`: SmolLM, Llama 3,
Qwen 2, GPT-2), `SentencePieceVocab` (a `tokenizer.model`) or `LlamaHfVocab` (a SentencePiece-style BPE
`tokenizer.json` with byte fallback, e.g. Gemma 3 as transformers writes it) give the token list; `SpecialVocab`
gives merges, BOS/EOS/UNK/PAD/... ids, the add-BOS/EOS flags and the chat template. Those classes come from
llama.cpp's older `convert.py` and differ from what its current `convert_hf_to_gguf.py` writes in three ways we
correct here (tests compare with GGUF files llama.cpp wrote for SmolLM2 and Gemma 3):

- token types: added tokens flagged special in `tokenizer.json` are CONTROL, other added tokens USER_DEFINED
  (the classes mark them NORMAL when they sit inside the base vocabulary, as SmolLM2's and Gemma's do);
- SentencePiece scores: `LlamaHfVocab` writes a -1000 placeholder, but llama.cpp's SPM tokenizer merges by
  score. SentencePiece stores pieces best-first, so the k-th normal piece gets score -k (what Gemma's own
  GGUF holds, and the order transformers' GGUF reader rebuilds Gemma's merges from); byte pieces 0;
- Gemma: its whitespace-run pieces (`▁▁`, `▁▁▁`, ...) are user-defined symbols of its SentencePiece model,
  written as the spaces they stand for (llama.cpp matches user-defined tokens in the raw text, before spaces
  become `▁`); transformers' GGUF reader spells them back as `▁` runs.

Byte-level BPE needs llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`), which it identifies by hashing the
token ids of a fixed probe text (`CHECK_TEXT`); we compute the same hash and look it up in `KNOWN_PRE` (values
from llama.cpp), or take `--tokenizer-pre`. SentencePiece needs none (`default`).

Limitations: WordPiece / Unigram `tokenizer.json` files (BERT, T5) are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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

# gguf.TokenType values
NORMAL, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 3, 4, 5, 6
SPM_SPACE = "\u2581"


@dataclass
class Vocab:
    """Everything `write_vocab` puts into the GGUF."""

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    tokens: list[str]
    scores: list[float] | None  # SentencePiece only
    token_types: list[int]
    special: Any  # gguf.vocab.SpecialVocab: merges, special ids, add_* flags, chat template
    eot_id: int | None  # chat-turn terminator when it differs from EOS
    add_space_prefix: bool = False
    ids: dict[str, int | None] = field(default_factory=dict)  # resolved bos/eos/unk/pad for callers


def pre_tokenizer_hash(tokenizer: Any) -> str:
    """llama.cpp's fingerprint of a BPE pre-tokenizer."""
    return sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def tokenizer_kind(model_dir: Path) -> str:
    """"bpe" (byte-level BPE), "spm" (SentencePiece: tokenizer.model, or a byte-fallback BPE tokenizer.json).

    Raises:
        ConfigError: no tokenizer files, or a tokenizer type the GGUF writer does not handle.
    """
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        if (model_dir / "tokenizer.model").is_file():
            return "spm"
        raise ConfigError(f"{model_dir} has no tokenizer.json or tokenizer.model: nothing to write as the GGUF vocab")
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    decoders = json.dumps(tj.get("decoder"))
    if model.get("type") == "BPE" and "ByteLevel" in json.dumps(tj.get("pre_tokenizer")) + decoders:
        return "bpe"
    if model.get("type") == "BPE" and model.get("byte_fallback") and "ByteFallback" in decoders:
        return "spm"
    raise ConfigError(
        f"{model_dir}: tokenizer model {model.get('type')!r} is not supported by the GGUF exporter (supported: "
        "byte-level BPE such as SmolLM / Llama 3 / Qwen 2, and SentencePiece such as Gemma / Llama 2)"
    )


def build_vocab(model_dir: Path, vocab_size: int, *, tokenizer_pre: str | None = None) -> Vocab:
    """Read the tokenizer in `model_dir` into GGUF vocab fields (see the module docstring).

    Raises:
        ConfigError: unsupported tokenizer, more tokens than the model's `vocab_size`, or a BPE pre-tokenizer
            llama.cpp would not recognise (pass `tokenizer_pre` to name it).
    """
    from gguf.vocab import BpeVocab, LlamaHfVocab, SentencePieceVocab, SpecialVocab
    from transformers import AutoTokenizer

    from tickerpulse.export.tokens import chat_turn_terminator

    kind = tokenizer_kind(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if kind == "bpe":
        lib_vocab: Any = BpeVocab(model_dir)
        pre = tokenizer_pre or KNOWN_PRE.get(pre_tokenizer_hash(tok))
        if pre is None:
            raise ConfigError(
                f"{model_dir}: llama.cpp would not recognise this BPE pre-tokenizer (hash {pre_tokenizer_hash(tok)}); "
                f"pass --tokenizer-pre NAME with the llama.cpp name of the model family it comes from "
                f"(known here: {', '.join(sorted(set(KNOWN_PRE.values())))})"
            )
    else:
        spm_file = (model_dir / "tokenizer.model").is_file()
        lib_vocab = SentencePieceVocab(model_dir) if spm_file else LlamaHfVocab(model_dir)
        pre = tokenizer_pre or "default"
    entries = list(lib_vocab.all_tokens())
    if len(entries) > vocab_size:
        raise ConfigError(f"tokenizer has {len(entries)} tokens but the model's vocab_size is {vocab_size}")
    tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t, _, _ in entries]
    types = [int(tt) for _, _, tt in entries]
    lib_scores = [float(s) for _, s, _ in entries]

    added = _added_tokens(model_dir)
    for i, special in added.items():
        if i < len(types) and types[i] != BYTE:
            types[i] = CONTROL if special or _looks_special(tokens[i]) else USER_DEFINED
    gemma = str(_read_json(model_dir / "config.json").get("model_type", "")).startswith("gemma")
    if kind == "spm" and gemma:
        for i, t in enumerate(tokens):
            if types[i] == NORMAL and len(t) > 1 and set(t) == {SPM_SPACE}:
                tokens[i], types[i] = " " * len(t), USER_DEFINED
    scores = None
    if kind == "spm":
        placeholder = isinstance(lib_vocab, LlamaHfVocab)
        scores, rank = [], 0
        for i, t in enumerate(types):
            if t == NORMAL:
                scores.append(-float(rank) if placeholder else lib_scores[i])
                rank += 1
            else:
                scores.append(0.0 if t == BYTE else (-1000.0 if placeholder else lib_scores[i]))
    for i in range(len(tokens), vocab_size):  # embedding rows the tokenizer never produces
        tokens.append(f"[PAD{i}]")
        types.append(UNUSED)
        if scores is not None:
            scores.append(-1000.0)

    special = SpecialVocab(model_dir, load_merges=kind == "bpe", n_vocab=vocab_size)
    probe = tok.encode("hello")
    eos = tok.eos_token_id
    special.add_special_token.setdefault("bos", bool(probe) and tok.bos_token_id is not None
                                         and probe[0] == tok.bos_token_id)
    special.add_special_token.setdefault("eos", bool(probe) and eos is not None and probe[-1] == eos)
    if "pad" not in special.special_token_ids and eos is not None:
        special.special_token_ids["pad"] = int(eos)  # llama.cpp pads with EOS when there is no pad token
    if special.chat_template is None and isinstance(tok.chat_template, str):
        special.chat_template = tok.chat_template
    term = chat_turn_terminator(tok)
    return Vocab(
        add_space_prefix=kind == "spm" and _adds_space_prefix(model_dir),
        model="gpt2" if kind == "bpe" else "llama", pre=pre, tokens=tokens, scores=scores, token_types=types,
        special=special, eot_id=term if term is not None and term != eos else None,
        ids={k: special.special_token_ids.get(k) for k in ("bos", "eos", "unk", "pad")},
    )


def write_vocab(writer: Any, vocab: Vocab) -> None:
    """Add the `tokenizer.*` keys to a GGUFWriter (same keys as llama.cpp's converter, via SpecialVocab)."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    vocab.special.add_to_gguf(writer, quiet=True)
    if vocab.eot_id is not None:
        writer.add_eot_token_id(int(vocab.eot_id))
    writer.add_add_space_prefix(vocab.add_space_prefix)  # BPE encodes spaces itself; Gemma's SPM adds none


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _added_tokens(model_dir: Path) -> dict[int, bool]:
    """id -> special flag of every added token in tokenizer.json."""
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        return {}
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    return {int(a["id"]): bool(a.get("special")) for a in tj.get("added_tokens") or []}


def _adds_space_prefix(model_dir: Path) -> bool:
    """Does the SentencePiece tokenizer prepend `▁` to the text (Llama 2: yes; Gemma: no)?"""
    tj_path = model_dir / "tokenizer.json"
    if not tj_path.is_file():
        return True  # a bare tokenizer.model: SentencePiece's default add_dummy_prefix
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    text = json.dumps([tj.get("normalizer"), tj.get("pre_tokenizer")])
    return '"Prepend"' in text or '"prepend_scheme": "always"' in text or '"prepend_scheme": "first"' in text


def _looks_special(token: str) -> bool:
    """Added tokens some tokenizers forget to flag as special (same rule as llama.cpp)."""
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")
