"""One loaded base model plus named PEFT adapters, shared by the sentiment engine and the OpenAI routes.

Adapters are loaded once at start into one `PeftModel` (PEFT multi-adapter); a request picks one by name and
`use(name)` switches with `set_adapter` / disabling the adapter layers (for the base), no reload. Every model
call goes through `use`, which holds a lock: one batch runs at a time, all rows with the same adapter.

Prefix caching: the KV of a shared prompt prefix (the sentiment system prompt) is computed once per adapter
and reused by expanding it along the batch, so a request only pays for its own suffix.

Interruption: `stop_when(check)` makes every decoder layer call `check()` before it runs and raise
`Interrupted` when it says so, so a batch whose requests all timed out or went away frees the model within
one layer's time, even in the middle of a long prefill.

Limitations: adapters must be LoRA-family PEFT adapters over this same base; one adapter per batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UnknownModel(ValueError):
    """The request names a model that is neither the base nor a loaded adapter (HTTP 404)."""


class Interrupted(RuntimeError):
    """A forward pass was abandoned because the `stop_when` check said nobody waits for it any more."""


def _load_adapter_into(model: Any, name: str, path: str | Path) -> Any:
    """Attach adapter `name` from a training run folder (or a PEFT adapter folder); returns the PeftModel.

    Uses the training stage's run-folder reader (`tickerpulse.models.adapters.read_run`), so a run folder
    (`adapter_config.json` + `adapters.safetensors`) and a plain PEFT folder (`adapter_model.safetensors`) both work.

    Raises:
        FileNotFoundError: not a run/adapter folder.
        ValueError: a full fine-tune (not switchable: serve it with `--model` after `tickerpulse fuse`).
    """
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict

    from tickerpulse.models.adapters import load_peft_state, lora_config_for, read_run

    info = read_run(path)
    if info.kind == "full" or info.peft_config_file is None:
        raise ValueError(f"{path}: a full fine-tune cannot be switched per request; fuse it and serve it with --model")
    peft_state = load_peft_state(info.adapter_file)  # run folders store mlx-lm's tensor names: read back as PEFT's
    lcfg = lora_config_for(info.path, peft_state, model)
    lcfg.inference_mode = True
    if isinstance(model, PeftModel):
        model.add_adapter(name, lcfg)
    else:
        model = get_peft_model(model, lcfg, adapter_name=name)
    ref = next(model.parameters())
    state = {k: v.to(ref.device) for k, v in peft_state.items()}
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{info.adapter_file} does not fit this model: unexpected keys {result.unexpected_keys[:3]}")
    return model


class Runtime:
    """A base model (+ adapters) ready for batched inference.

    Args:
        model: built-in name, hub id or local folder of the base (or fused) model.
        adapters: name -> run folder / PEFT adapter folder, loaded once.
        device, dtype: as in `tickerpulse.models.loading.load_model`.
        threads: torch intra-op threads (None keeps torch's default).
    """

    def __init__(self, model: str = "smollm2-135m", adapters: Mapping[str, str | Path] | None = None,
                 device: str = "auto", dtype: str = "auto", threads: int | None = None) -> None:
        import torch

        from tickerpulse.models.generate import eos_token_ids
        from tickerpulse.models.loading import load_model

        if threads:
            torch.set_num_threads(int(threads))
        self.model_name = str(model)
        hf, self.tok = load_model(model, device=device, dtype=dtype)
        self.adapters: dict[str, str] = {}
        wrapped: Any = hf
        for name, path in (adapters or {}).items():
            if name == self.model_name:
                raise ValueError(f"adapter name {name!r} clashes with the base model name")
            wrapped = _load_adapter_into(wrapped, name, path)
            self.adapters[name] = str(path)
        self.peft = wrapped if self.adapters else None
        self.hf = hf  # LoRA layers are injected in place, so calling hf runs the active adapter
        self.hf.eval()
        if self.peft is not None:
            self.peft.eval()
        self.device = next(hf.parameters()).device
        self.dtype = next(hf.parameters()).dtype
        self.eos_ids = eos_token_ids(hf, self.tok)
        self.pad_id = int(self.tok.pad_token_id if self.tok.pad_token_id is not None else min(self.eos_ids))
        self._lock = threading.RLock()
        self._active: str | None = None
        self._prefix: dict[tuple[str | None, tuple[int, ...]], list[tuple[Any, Any]]] = {}
        if self.peft is not None:
            self.peft.base_model.disable_adapter_layers()
        self._tls = threading.local()
        for layer in getattr(getattr(hf, "model", None), "layers", None) or []:
            layer.register_forward_pre_hook(self._check_stop)

    # ------------------------------------------------------------------------------------------- models

    def model_ids(self) -> list[str]:
        """What `/v1/models` lists: the base first, then each adapter by name."""
        return [self.model_name, *self.adapters]

    def resolve(self, name: str | None) -> str | None:
        """Adapter name for a request's `model` field (None = the base).

        Raises:
            UnknownModel: not the base and not a loaded adapter.
        """
        if name is None or name == "" or name == self.model_name or name == "default" and not self.adapters:
            return None
        if name in self.adapters:
            return name
        known = ", ".join(self.model_ids())
        raise UnknownModel(f"model {name!r} is not served here; available: {known}")

    @contextmanager
    def use(self, adapter: str | None) -> Iterator[None]:
        """Hold the model with `adapter` active (None = base) for one batch."""
        import torch

        with self._lock, torch.inference_mode():
            if adapter != self._active and self.peft is not None:
                if adapter is None:
                    self.peft.base_model.disable_adapter_layers()
                else:
                    self.peft.base_model.enable_adapter_layers()
                    self.peft.base_model.set_adapter(adapter)
                self._active = adapter
            yield

    @contextmanager
    def stop_when(self, check: Callable[[], bool]) -> Iterator[None]:
        """Within this block (on this thread) every decoder layer raises `Interrupted` once `check()` is true."""
        before = getattr(self._tls, "check", None)
        self._tls.check = check
        try:
            yield
        finally:
            self._tls.check = before

    def _check_stop(self, _module: Any, _args: Any) -> None:
        check = getattr(self._tls, "check", None)
        if check is not None and check():
            raise Interrupted("abandoned: every request in this batch was cancelled or timed out")

    # ---------------------------------------------------------------------------------------- forward

    def encode(self, text: str) -> list[int]:
        """Token ids of an already templated prompt (special tokens are in the text)."""
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def prefix_kv(self, adapter: str | None, prefix_ids: Sequence[int]) -> list[tuple[Any, Any]]:
        """KV tensors (batch 1) of `prefix_ids` under `adapter`, computed once. Call inside `use(adapter)`."""
        from transformers import DynamicCache

        key = (adapter, tuple(prefix_ids))
        kv = self._prefix.get(key)
        if kv is None:
            import torch

            cache = DynamicCache()
            ids = torch.tensor([list(prefix_ids)], device=self.device)
            self.hf.model(input_ids=ids, past_key_values=cache, use_cache=True)
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            self._prefix[key] = kv
        return kv

    def cache_from_prefix(self, kv: list[tuple[Any, Any]] | None, batch: int) -> Any:
        """A fresh DynamicCache holding the prefix repeated `batch` times (or empty)."""
        from transformers import DynamicCache

        if kv is None:
            return DynamicCache()
        return DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv])

    def hidden(self, input_ids: Any, cache: Any, attention_mask: Any = None, position_ids: Any = None) -> Any:
        """Last-layer hidden states (after the final norm) for new tokens, extending `cache` in place."""
        out = self.hf.model(input_ids=input_ids, past_key_values=cache, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=True)
        return out.last_hidden_state

    def logits(self, hidden: Any) -> Any:
        """Vocabulary logits (float32) for hidden states [..., hidden]."""
        return self.hf.lm_head(hidden).float()
