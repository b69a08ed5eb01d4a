"""Round-trip check of an exported GGUF: does it answer like the PyTorch model it came from?

Two engines read the GGUF back and answer a few sentiment prompts greedily; each answer is compared with
the greedy answer of the source HF folder in PyTorch fp32, every engine using its own stop tokens (so an
export that lost the EOS or the chat template fails: the answer runs on or the prompt differs).

- `transformers` (always available): `from_pretrained(gguf_file=...)` for model and tokenizer; also checks
  that the GGUF's tokenizer + chat template give the same prompt ids, and measures the max logit difference.
  transformers takes only `tokenizer.ggml.eos_token_id` as a stop token from a GGUF, so it is given the GGUF's
  end-of-generation set as llama.cpp reads it (EOS + EOT, e.g. Gemma's `<eos>` + `<end_of_turn>`).
- `llama.cpp` (optional, `pip install 'tickerpulse[gguf]'`): llama-cpp-python's chat completion with the
  chat template embedded in the GGUF; also checks its tokenizer against the HF one, and times a 40-token
  answer against PyTorch.

An answer "agrees" when it is identical, or when it first differs at a near-tie of the reference model
(reference top-token margin over the engine's token below `TIE_MARGIN[outtype]`): rounding weights to f16 or
q8_0 legitimately flips such tokens. Exact agreement is reported separately.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Reference-logit margin under which a different greedy token counts as a tie, by GGUF weight type.
TIE_MARGIN = {"F32": 1e-3, "F16": 0.1, "BF16": 0.3, "Q8_0": 0.5}
ENGINES = ("transformers", "llama.cpp")

# (text, ticker) pairs for the check: positive, negative, neutral, market-wide.
SENTIMENT_PROMPTS: tuple[tuple[str, str | None], ...] = (
    ("Apple beats earnings estimates; $AAPL up 5% after hours on record iPhone sales.", "AAPL"),
    ("Tesla shares slump after weak deliveries and a surprise recall of 100,000 cars.", "TSLA"),
    ("Microsoft will hold its annual shareholder meeting on December 5 in Redmond.", "MSFT"),
    ("Oil steadies as traders wait for the OPEC decision; stocks drift lower.", None),
)


@dataclass
class Answer:
    """One prompt answered by the reference and by an engine."""

    prompt: str
    reference: str
    candidate: str
    identical: bool
    agrees: bool
    first_diff_token: int | None = None
    tie_margin: float | None = None  # reference logit margin at the first differing token


@dataclass
class EngineReport:
    engine: str
    ok: bool
    skipped: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)  # tokenizer/metadata checks, name -> bool or value
    answers: list[Answer] = field(default_factory=list)
    identical: int = 0
    agree: int = 0
    tokens_per_s: float | None = None  # 40-token answer, prompt included
    seconds_40: float | None = None


@dataclass
class RoundTripReport:
    gguf: str
    model: str
    weight_type: str
    ok: bool
    reference_seconds_40: float | None
    reference_tokens_per_s: float | None
    engines: list[EngineReport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Reference:
    """The source HF folder in PyTorch fp32: greedy answers, logits, 40-token timing."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def prompt_ids(self, messages: list[dict[str, str]], tok: Any = None) -> list[int]:
        tok = tok or self.tok
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def greedy(self, model: Any, ids: list[int], max_new_tokens: int, *, min_new_tokens: int = 0) -> list[int]:
        import torch

        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                 do_sample=False, attention_mask=torch.ones(1, len(ids), dtype=torch.long))
        new = out[0, len(ids):].tolist()
        eos = _eos_set(model)
        return new[: next((i for i, t in enumerate(new) if t in eos), len(new))]

    def margin(self, ids: list[int], ref_token: int, other_token: int) -> float:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0, -1]
        return float(logits[ref_token] - logits[other_token])

    def text(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens, skip_special_tokens=True)


def check_gguf(gguf_path: str | Path, model_dir: str | Path, *, engines: Sequence[str] = ENGINES,
               prompts: Sequence[tuple[str, str | None]] = SENTIMENT_PROMPTS, max_new_tokens: int = 48,
               time_tokens: int = 40) -> RoundTripReport:
    """Compare greedy answers of `gguf_path` (read back by each engine) with PyTorch on `model_dir`.

    Args:
        gguf_path: the exported file.
        model_dir: the HF folder it was exported from (the reference, run in fp32).
        engines: "transformers" and/or "llama.cpp". llama.cpp is skipped with a reason when
            llama-cpp-python is not installed, unless it is the only engine asked for (then it raises).
        prompts: (text, ticker) pairs, turned into the task's chat messages.
        max_new_tokens: answer length cap.
        time_tokens: length of the timed answer (tokens/s, PyTorch vs llama.cpp); 0 skips timing.

    Raises:
        MissingDependency: only llama.cpp asked for and llama-cpp-python is missing.
    """
    from tickerpulse.task.contract import build_messages
    from tickerpulse.models import resolve

    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF not found: {gguf_path}")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        from tickerpulse.config import ConfigError

        raise ConfigError(f"unknown engine(s) {unknown}: choose from {', '.join(ENGINES)}")
    folder = resolve(str(model_dir))
    ref = _Reference(folder)
    chats = [build_messages(text, ticker) for text, ticker in prompts]
    ref_tokens = [ref.greedy(ref.model, ref.prompt_ids(m), max_new_tokens) for m in chats]
    wtype = weight_type(gguf_path)
    ref_secs = _time_reference(ref, chats[0], time_tokens) if time_tokens and "llama.cpp" in engines else None

    reports = []
    for engine in engines:
        if engine == "transformers":
            reports.append(_check_transformers(gguf_path, ref, chats, ref_tokens, max_new_tokens, wtype))
        else:
            reports.append(_check_llama_cpp(gguf_path, ref, chats, ref_tokens, max_new_tokens, wtype, time_tokens,
                                            only=len(engines) == 1))
    ok = all(r.ok for r in reports if r.skipped is None) and any(r.skipped is None for r in reports)
    return RoundTripReport(
        gguf=str(gguf_path), model=str(folder), weight_type=wtype, ok=ok, reference_seconds_40=ref_secs,
        reference_tokens_per_s=time_tokens / ref_secs if ref_secs else None, engines=reports,
    )


def weight_type(gguf_path: Path) -> str:
    """The GGUF's main weight type (of the first attention projection): F16, Q8_0, ..."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    for t in reader.tensors:
        if t.name.endswith("attn_q.weight"):
            return t.tensor_type.name
    return reader.tensors[0].tensor_type.name


def gguf_stop_ids(gguf_path: Path) -> list[int]:
    """The token ids a llama.cpp runtime ends generation on: the GGUF's EOS, EOT and EOM ids."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    ids = []
    for key in ("eos", "eot", "eom"):
        f = reader.fields.get(f"tokenizer.ggml.{key}_token_id")
        if f is not None and int(f.contents()) not in ids:
            ids.append(int(f.contents()))
    return ids


def _check_transformers(gguf_path: Path, ref: _Reference, chats: list[list[dict[str, str]]],
                        ref_tokens: list[list[int]], max_new_tokens: int, wtype: str) -> EngineReport:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Read the GGUF alone: next to an HF folder's tokenizer files transformers would mix those in.
    with tempfile.TemporaryDirectory(prefix="tp-gguf-") as tmp:
        (Path(tmp) / gguf_path.name).symlink_to(gguf_path)
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = gguf_stop_ids(gguf_path) or model.generation_config.eos_token_id
    rep = EngineReport(engine="transformers", ok=False)
    ids = [ref.prompt_ids(m) for m in chats]
    rep.checks["prompt_ids_equal"] = all(ref.prompt_ids(m, tok) == i for m, i in zip(chats, ids))
    rep.checks["chat_template_equal"] = tok.chat_template == ref.tok.chat_template
    for kind in ("bos", "eos", "pad"):
        rep.checks[f"{kind}_id_equal"] = getattr(tok, f"{kind}_token_id") == getattr(ref.tok, f"{kind}_token_id")
    rep.checks["stops_on_eos"] = _eos_set(ref.model) <= _eos_set(model) | {tok.eos_token_id}
    with torch.no_grad():
        diff = (model(torch.tensor([ids[0]])).logits - ref.model(torch.tensor([ids[0]])).logits).abs().max()
    rep.checks["max_abs_logit_diff"] = float(diff)
    for chat, pid, want in zip(chats, ids, ref_tokens):
        got = ref.greedy(model, pid, max_new_tokens)
        rep.answers.append(_compare(ref, chat, pid, want, got, wtype))
    _finish(rep)
    return rep


def _check_llama_cpp(gguf_path: Path, ref: _Reference, chats: list[list[dict[str, str]]],
                     ref_tokens: list[list[int]], max_new_tokens: int, wtype: str, time_tokens: int,
                     *, only: bool) -> EngineReport:
    from tickerpulse._optional import MissingDependency, require

    try:
        llama_cpp = require("llama_cpp", "the llama.cpp round-trip check")
    except MissingDependency as exc:
        if only:
            raise
        return EngineReport(engine="llama.cpp", ok=False, skipped=str(exc))
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=2048, n_batch=512, seed=0, verbose=False)
    rep = EngineReport(engine="llama.cpp", ok=False)
    meta = llm.metadata
    rep.checks["chat_template_equal"] = meta.get("tokenizer.chat_template") == ref.tok.chat_template
    rep.checks["eos_id_equal"] = llm.token_eos() == ref.tok.eos_token_id
    rep.checks["bos_id_equal"] = llm.token_bos() == ref.tok.bos_token_id
    ok_ids = True
    for chat in chats:
        text = ref.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ok_ids &= llm.tokenize(text.encode(), add_bos=False, special=True) == ref.prompt_ids(chat)
    rep.checks["prompt_ids_equal"] = ok_ids
    for chat, want in zip(chats, ref_tokens):
        out = llm.create_chat_completion(messages=chat, temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                         repeat_penalty=1.0, max_tokens=max_new_tokens, seed=0)
        text = out["choices"][0]["message"]["content"] or ""
        stopped = out["choices"][0]["finish_reason"] == "stop"
        got = ref.tok(text, add_special_tokens=False)["input_ids"]
        ans = _compare(ref, chat, ref.prompt_ids(chat), want, got, wtype)
        if stopped != (len(want) < max_new_tokens):  # stopping on EOS must match too
            ans.agrees = ans.identical = False
        rep.answers.append(ans)
    if time_tokens:
        rep.seconds_40 = _time_llama(llm, ref.prompt_ids(chats[0]), time_tokens)
        rep.tokens_per_s = time_tokens / rep.seconds_40
    llm.close()
    _finish(rep)
    return rep


def _compare(ref: _Reference, chat: list[dict[str, str]], prompt_ids: list[int], want: list[int], got: list[int],
             wtype: str) -> Answer:
    """Identical, or first difference at a near-tie of the reference model."""
    ans = Answer(prompt=chat[-1]["content"][-120:], reference=ref.text(want), candidate=ref.text(got),
                 identical=want == got, agrees=want == got)
    if ans.identical or ans.reference == ans.candidate:
        ans.identical = ans.agrees = True
        return ans
    k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    ans.first_diff_token = k
    if k < len(want) and k < len(got):
        ans.tie_margin = ref.margin(prompt_ids + want[:k], want[k], got[k])
        ans.agrees = ans.tie_margin < TIE_MARGIN.get(wtype, 0.1)
    return ans


def _finish(rep: EngineReport) -> None:
    rep.identical = sum(a.identical for a in rep.answers)
    rep.agree = sum(a.agrees for a in rep.answers)
    checks_ok = all(v for k, v in rep.checks.items() if isinstance(v, bool))
    rep.ok = checks_ok and rep.agree == len(rep.answers)


def _eos_set(model: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def _time_reference(ref: _Reference, chat: list[dict[str, str]], n: int) -> float:
    """Seconds for an n-token greedy answer (prompt included) in PyTorch fp32, best of two."""
    ids = ref.prompt_ids(chat)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        ref.greedy(ref.model, ids, n, min_new_tokens=n)
        best = min(best, time.perf_counter() - t0)
    return best


def _time_llama(llm: Any, ids: list[int], n: int) -> float:
    """Seconds for an n-token greedy answer (prompt included) in llama.cpp, best of two."""
    best = float("inf")
    for _ in range(2):
        llm.reset()
        t0 = time.perf_counter()
        for i, _tok in enumerate(llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                                              reset=True)):
            if i + 1 >= n:
                break
        best = min(best, time.perf_counter() - t0)
    return best
