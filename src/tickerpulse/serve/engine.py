"""`SentimentEngine`: the sentiment task in-process, used by `/v1/sentiment` and by the stream's `engine` scorer.

Two modes, one prompt (`tickerpulse.task.contract`), and every answer validates as `SentimentAnswer`
whatever the model writes:

An item is (text, target): a symbol, an entity name or None (`task.contract.resolve_target`); every answer
echoes the target and its symbol when known.

- fast: one forward pass over prompt + `answer_prefix(target)` (`{"target": "AAPL", "ticker": "AAPL",
  "sentiment": "`); the
  softmax over the first tokens of the three labels gives the label (argmax) and score = p(pos) - p(neg)
  (optionally temperature-calibrated). The reasoning is empty. The shared system prompt's KV is computed once
  per adapter and the suffixes of a batch run against it. Each item is padded to its own length bucket, so its
  answer does not depend on the other items of its batch (bf16 included).
- reasoning: the same pass picks the label (so both modes always agree on it), then, by the model's
  reasoning kind (`reasoning_kind`, from serving.json's `reasoning`, default "generated"):
  - generated: constrained decoding writes the rest of the JSON: a score in the label's range and a bounded,
    JSON-safe reasoning string (`tickerpulse.serve.grammar`, llguidance), the fixed parts fed without sampling;
  - evidence (a model trained without reasoning text): the score is fast mode's and the reasoning is the span
    of the post whose removal lowers p(label) the most (`tickerpulse.serve.evidence`, occlusion).

Calibration: a `calibration.json` `{"temperature": T, "label_bias": [...]}` in the adapter (or model) folder
shifts and scales the three label logits before the softmax (`task.calibration`; absent = identity).

Limitations: greedy decoding in reasoning mode; texts are cut to 2000 characters by `sanitize_text`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tickerpulse.task.answers import clean_text, make_answer, normalize_target
from tickerpulse.task.calibration import LabelCalibration
from tickerpulse.task.contract import DEFAULT_PROMPT, LABELS, answer_prefix, build_messages, load_prompt, sanitize_text

Mode = Literal["fast", "reasoning"]
ReasoningKind = Literal["evidence", "generated"]
REASONING_KINDS = ("evidence", "generated")
Item = tuple[str, "str | None"]

# A forward pass costs about batch x length; cap it so one 2000-char text does not pad 31 short ones.
TOKEN_BUDGET = 4096
# Each item is padded to the next multiple of this many tokens and shares passes only with items of the same
# padded length. In bf16 the label probabilities move with the padded length (by up to 0.06, enough to flip a
# label near the boundary) but not with the number of rows, so an item's answer then depends on the item alone:
# the same post gets the same answer whatever it is batched with (a request, the server's batcher, `eval`).
LENGTH_BUCKET = 16
DEFAULT_REASONING_TOKENS = 48
def _model_folder(name: str) -> Path | None:
    """The local folder of a model given as a folder or by installed name (`tickerpulse-sentiment`)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if "/" in name:
        return None
    from tickerpulse.models.registry import named_model_dir

    folder = named_model_dir(name)
    return folder if folder.is_dir() else None


def served_prompt_version(model: str) -> str:
    """The prompt a model answers with, without loading it: its folder's serving.json `prompt_version` (what
    the recipe trained it with); a serving.json without one was written before targets (sentiment-v1); a model
    without serving.json (a base model) gets DEFAULT_PROMPT."""
    from tickerpulse.models.loading import SERVING_FILE, declared_serving

    folder = _model_folder(model)
    legacy = "sentiment-v1" if folder is not None and (folder / SERVING_FILE).is_file() else None
    return declared_serving(folder, "prompt_version") or legacy or DEFAULT_PROMPT


class SentimentEngine:
    """The sentiment task over a Runtime (base model + optional adapters).

    Args:
        model: base model name/folder, or an existing `Runtime` to share with the OpenAI routes.
        adapter: a run/adapter folder used by default (loaded under the name of its folder), or None.
        device, dtype: as in `load_model` ("auto": fp32 on CPU unless the model folder's serving.json says bf16).
        adapters: more named adapters (name -> folder) a call may pick with `adapter_name=`.
        prompt_version: the prompt file; None: the one the model folder's serving.json names (what the recipe
            trained it with; a serving.json without one predates targets: sentiment-v1), else `DEFAULT_PROMPT`.
        reasoning: what reasoning mode returns, "evidence" or "generated"; None: serving.json's `reasoning`,
            else "generated".
        threads: torch intra-op threads (None keeps torch's default).
        max_text_tokens: posts longer than this many tokens are cut (after `sanitize_text`'s 2000 chars).
        prefix_cache: reuse the system prompt's KV (off only to measure what it saves).
    """

    def __init__(self, model: Any = "smollm2-135m", adapter: str | Path | None = None, device: str = "auto",
                 dtype: str = "auto", *, adapters: Mapping[str, str | Path] | None = None,
                 prompt_version: str | None = None, reasoning: ReasoningKind | None = None,
                 threads: int | None = None,
                 max_text_tokens: int = 512, prefix_cache: bool = True) -> None:
        from tickerpulse.serve.runtime import Runtime

        named = dict(adapters or {})
        self.default_adapter: str | None = None
        if adapter is not None:
            self.default_adapter = Path(str(adapter)).expanduser().resolve().name or "adapter"
            named.setdefault(self.default_adapter, adapter)
        if isinstance(model, Runtime):
            self.rt = model
        else:
            self.rt = Runtime(str(model), adapters=named, device=device, dtype=dtype, threads=threads)
        from tickerpulse.models.loading import declared_serving

        folder = _model_folder(str(self.rt.model_name))
        self.prompt_version = prompt_version or served_prompt_version(str(self.rt.model_name))
        kind = reasoning or declared_serving(folder, "reasoning") or "generated"
        if kind not in REASONING_KINDS:
            raise ValueError(f"reasoning must be one of {REASONING_KINDS}, not {kind!r} (serving.json or argument)")
        self.reasoning_kind: ReasoningKind = kind  # type: ignore[assignment]
        self.max_text_tokens = max_text_tokens
        self.prefix_cache = prefix_cache
        self.prompt_hash = load_prompt(self.prompt_version)["hash"]
        tok = self.rt.tok
        self._label_ids = self._first_label_tokens()
        # The shared prefix: everything up to the user turn's text, identical for every request.
        probe = self._prompt_text("x", None)
        marker = "<|im_start|>user\n" if "<|im_start|>user\n" in probe else None
        cut = probe.index(marker) + len(marker) if marker else probe.index("Ticker:" if "Ticker:" in probe else "Target:")
        self._prefix_text = probe[:cut]
        self._prefix_ids = self.rt.encode(self._prefix_text)
        self._calib: dict[str | None, LabelCalibration] = {
            name: LabelCalibration.read(Path(path)) for name, path in self.rt.adapters.items()
        }
        self._calib[None] = LabelCalibration.read(_model_folder(str(self.rt.model_name)))
        self.stats = {"fast_texts": 0, "reasoning_texts": 0, "generated_tokens": 0, "evidence_rows": 0}
        del tok

    # ------------------------------------------------------------------------------------------ prompts

    def _prompt_text(self, text: str, target: str | None) -> str:
        msgs = build_messages(text, target, version=self.prompt_version)
        return (self.rt.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                + answer_prefix(target, self.prompt_version))

    def _first_label_tokens(self) -> list[int]:
        base = self.rt.encode(answer_prefix("X", self.prompt_version))
        ids = []
        for label in LABELS:
            full = self.rt.encode(answer_prefix("X", self.prompt_version) + label)
            if full[: len(base)] != base or len(full) == len(base):
                raise RuntimeError(f"tokenizer splits the answer prefix oddly before {label!r}")
            ids.append(full[len(base)])
        if len(set(ids)) != 3:
            raise RuntimeError("the three labels share a first token: fast mode cannot tell them apart")
        return ids

    def encode_item(self, text: str, target: str | None) -> tuple[list[int], bool]:
        """(ids, uses_prefix): ids after the cached prefix when it applies, else the whole prompt.

        `sanitize_text` bounds a post to 2000 characters, but 2000 digits or CJK characters are 2000+ tokens:
        posts longer than `max_text_tokens` are cut there (with " ...") so one post cannot stall a batch.
        """
        text = clean_text(text)
        ids = self.rt.encode(self._prompt_text(text, target))
        if len(ids) > len(self._prefix_ids) + self.max_text_tokens + 64:
            body = self.rt.encode(sanitize_text(text))
            text = self.rt.tok.decode(body[: self.max_text_tokens], skip_special_tokens=True) + " ..."
            ids = self.rt.encode(self._prompt_text(text, target))
        p = len(self._prefix_ids)
        if self.prefix_cache and ids[:p] == self._prefix_ids and len(ids) > p:
            return ids[p:], True
        return ids, False

    # ------------------------------------------------------------------------------------------- public

    def analyze(self, items: Sequence[tuple[str, str | None]], mode: Mode = "fast",
                max_tokens: int = DEFAULT_REASONING_TOKENS, adapter_name: str | None = "__default__") -> list[dict[str, Any]]:
        """One answer dict (valid `SentimentAnswer`) per (text, target), in order.

        Args:
            items: (text, target: a symbol, an entity name, or None for the market). Symbols are normalized
                (`$aapl` -> `AAPL`).
            mode: "fast" (label scoring, empty reasoning) or "reasoning" (the label pass's label, then the
                engine's `reasoning_kind`: generated text or evidence from the post).
            max_tokens: reasoning mode: the most tokens of reasoning text per answer.
            adapter_name: a loaded adapter, None for the base; by default the engine's `adapter`.

        Raises:
            ValueError: unknown mode, or a target the schema refuses (longer than MAX_TARGET_CHARS).
        """
        if mode not in ("fast", "reasoning"):
            raise ValueError(f"mode must be 'fast' or 'reasoning', not {mode!r}")
        adapter, norm, encoded = self._prepare(items, adapter_name)
        if not norm:
            return []
        if mode == "fast":
            with self.rt.use(adapter):
                probs = self._label_pass(adapter, encoded)
            self.stats["fast_texts"] += len(norm)
            return [self._fast_answer(k, p) for (_, k), p in zip(norm, probs)]
        self.stats["reasoning_texts"] += len(norm)
        with self.rt.use(adapter):
            probs = self._label_pass(adapter, encoded)  # batch-independent: the label is fast mode's, always
            if self.reasoning_kind == "evidence":
                from tickerpulse.serve.evidence import evidence

                spans = evidence(self, adapter, norm, probs)
                return [self._fast_answer(k, p, span) for (_, k), p, span in zip(norm, probs, spans)]
        from tickerpulse.serve.reasoning import reason

        return reason(self, adapter, norm, encoded, max_tokens=max_tokens, probs=probs)

    def label_probs(self, items: Sequence[tuple[str, str | None]],
                    adapter_name: str | None = "__default__") -> list[list[float]]:
        """[p(negative), p(neutral), p(positive)] per (text, target) as fast mode computes them (with the
        calibration temperature in effect); what a caller needs to fit that calibration."""
        adapter, norm, encoded = self._prepare(items, adapter_name)
        if not norm:
            return []
        with self.rt.use(adapter):
            probs = self._label_pass(adapter, encoded)
        return [[float(x) for x in p] for p in probs]

    def info(self) -> dict[str, str]:
        """What every model this engine serves answers with: the prompt version and the reasoning kind (one
        of each per engine: adapters share the base's prompt)."""
        return {"prompt_version": self.prompt_version, "reasoning": self.reasoning_kind}

    @property
    def prefix_ids(self) -> list[int]:
        """Token ids of the cached system-prompt prefix (chat prompts that start with it reuse its KV)."""
        return self._prefix_ids

    def schema(self) -> dict[str, Any]:
        from tickerpulse.task.contract import answer_json_schema

        return answer_json_schema()

    def close(self) -> None:
        """Nothing to release (the model is freed with the engine); kept for the stream's Scorer protocol."""

    # ------------------------------------------------------------------------------------------ internals

    def _prepare(self, items: Sequence[tuple[str, str | None]], adapter_name: str | None,
                 ) -> tuple[str | None, list[tuple[str, str | None]], list[tuple[list[int], bool]]]:
        """(adapter, cleaned (text, target) items, encoded prompts): the common start of every request."""
        adapter = self.default_adapter if adapter_name == "__default__" else self.rt.resolve(adapter_name)
        norm = [(clean_text(t), normalize_target(k)) for t, k in items]
        return adapter, norm, [self.encode_item(t, k) for t, k in norm]

    def _fast_answer(self, target: str | None, p: Any, reasoning: str = "") -> dict[str, Any]:
        label = LABELS[int(p.argmax())]
        return make_answer(target, label, float(p[2] - p[0]), reasoning)

    def _label_pass(self, adapter: str | None, encoded: list[tuple[list[int], bool]]) -> list[Any]:
        """Label probabilities per item (3 floats, LABELS order). Call inside `rt.use(adapter)`.

        Items are sorted by length and cut into forward passes of at most TOKEN_BUDGET padded tokens among items
        of the same padded length (`LENGTH_BUCKET`), so each item's probabilities are independent of its batch.
        """
        import torch

        calib = self._calib.get(adapter, LabelCalibration())
        label_ids = torch.tensor(self._label_ids, device=self.rt.device)

        def shape(i: int) -> tuple[bool, int]:  # (shares the prefix, padded length)
            return encoded[i][1], -(-len(encoded[i][0]) // LENGTH_BUCKET) * LENGTH_BUCKET

        order = sorted(range(len(encoded)), key=lambda i: (encoded[i][1], len(encoded[i][0])))
        probs: list[Any] = [None] * len(encoded)
        start = 0
        while start < len(order):
            use_prefix, longest = shape(order[start])
            end = start + 1
            while (end < len(order) and shape(order[end]) == (use_prefix, longest)
                   and (end - start + 1) * longest <= TOKEN_BUDGET):
                end += 1
            chunk, start = order[start:end], end
            kv = self.rt.prefix_kv(adapter, self._prefix_ids) if use_prefix else None
            cache = self.rt.cache_from_prefix(kv, len(chunk))
            x = torch.full((len(chunk), longest), self.rt.pad_id, dtype=torch.long)
            lens = [len(encoded[i][0]) for i in chunk]
            for row, i in enumerate(chunk):
                x[row, : lens[row]] = torch.tensor(encoded[i][0])
            # Right padding needs no mask: real tokens never attend to the pads that follow them.
            h = self.rt.hidden(x.to(self.rt.device), cache)
            last = h[torch.arange(len(chunk)), torch.tensor(lens) - 1]
            lab = calib.probs(self.rt.logits(last)[:, label_ids].float()).cpu()
            for row, i in enumerate(chunk):
                probs[i] = lab[row]
        return probs
