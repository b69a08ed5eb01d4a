"""Token generation with a KV cache: `stream_generate` for one prompt, `generate_batch` for many.

Both run the same decode loop (`_decode`), so a batched greedy answer equals the unbatched one: eval and
serve use `generate_batch`, the CLI streams with `stream_generate`. We do not call `model.generate` because
we need, per token: time to first token, incremental detokenization, stop strings, and a batch that shrinks
as rows finish (finished rows stop costing compute).

Prompts are either chat messages (the model's chat template is applied with `add_generation_prompt=True`)
or a raw string (tokenized as is, special tokens added by the tokenizer).

Limitations: no beam search or repetition penalty; one temperature/top-k/min-p/top-p per batch; stop strings are
matched on decoded text and removed from the output. Batched rows are left-padded: in fp32 batched and
unbatched greedy outputs match; in bf16/fp16 a near-tie may flip a token.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tickerpulse.models.detokenize import IncrementalDecoder, held_back, stop_cut

Prompt = str | Sequence[Mapping[str, Any]]
FinishReason = Literal["stop", "length", "cancelled"]

# Turn terminators of common chat templates; added to the EOS set when the tokenizer knows them, because
# some converted checkpoints only list the document EOS in their generation config.
_CHAT_END_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


@dataclass
class GenStats:
    """Numbers for one streamed generation (printed by `tickerpulse generate`)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0  # wall time, prefill included
    ttft: float = 0.0  # time to first token (prefill + first sample)
    tokens_per_s: float = 0.0  # decode speed after the first token
    prompt_tokens_per_s: float = 0.0
    peak_memory_mb: float = 0.0  # peak RSS (CPU/MPS) or torch.cuda.max_memory_allocated
    finish_reason: FinishReason = "length"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenResult:
    """One row of `generate_batch`."""

    text: str
    n_tokens: int
    finish_reason: FinishReason
    latency: float  # seconds from the start of its batch to this row's last token
    prompt_tokens: int = 0
    token_ids: list[int] = field(default_factory=list, repr=False)


# ----------------------------------------------------------------------------------------------- prompts


def encode_prompt(tok: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: chat messages through the chat template, or a raw string as is.

    Raises:
        ValueError: messages given but the tokenizer has no chat template.
    """
    if isinstance(prompt, str):
        return list(tok(prompt, add_special_tokens=True)["input_ids"])
    if not getattr(tok, "chat_template", None):
        raise ValueError("this tokenizer has no chat template: pass a raw prompt string instead of messages")
    # tokenize=False then tokenize ourselves: in transformers 5 tokenize=True returns a BatchEncoding, and the
    # template already holds the special tokens, so none are added again.
    text = tok.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(model: Any, tok: Any) -> set[int]:
    """Every id that ends an answer: generation config EOS (int or list), tokenizer EOS, chat terminators."""
    ids: set[int] = set()
    gen_cfg = getattr(model, "generation_config", None)
    cfg_eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif cfg_eos:
        ids.update(int(i) for i in cfg_eos)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    vocab = tok.get_vocab()
    ids.update(vocab[t] for t in _CHAT_END_TOKENS if t in vocab)
    return ids


def _pad_id(tok: Any, eos: set[int]) -> int:
    return int(tok.pad_token_id) if tok.pad_token_id is not None else min(eos)


# ---------------------------------------------------------------------------------------------- sampling


def _make_generator(device: Any, seed: int | None) -> Any:
    import torch

    if seed is None:
        return None
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # a backend without device generators: sample on CPU RNG semantics
        gen = torch.Generator()
    return gen.manual_seed(int(seed))


def _pick(logits: Any, temperature: float, top_p: float, gen: Any, top_k: int = 0, min_p: float = 0.0) -> Any:
    """Next token per row: argmax when temperature is 0, else a sample from the temperature-scaled distribution
    restricted to the tokens that pass every cut (as mlx-lm's sampler chain): top-p (the nucleus), min-p (at
    least `min_p` times as likely as the top token) and top-k (the k most likely). 1.0 / 0.0 / 0 turn a cut
    off; the top token always survives."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0 and min_p <= 0.0 and not 0 < top_k < probs.shape[-1]:
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    drop = torch.zeros_like(sorted_p, dtype=torch.bool)
    if top_p < 1.0:  # drop a token when the mass before it already reaches top_p
        drop |= (sorted_p.cumsum(-1) - sorted_p) >= top_p
    if min_p > 0.0:
        drop |= sorted_p < min_p * sorted_p[..., :1]
    if 0 < top_k < probs.shape[-1]:
        drop[..., top_k:] = True
    drop[..., 0] = False
    choice = torch.multinomial(sorted_p.masked_fill(drop, 0.0), 1, generator=gen)
    return order.gather(-1, choice).squeeze(-1)


def _check_cuts(top_k: int, min_p: float) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1] (0 = off), got {min_p!r}")


# ------------------------------------------------------------------------------------------- decode loop


def _decode(
    model: Any,
    prompts: list[list[int]],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    gen: Any,
    eos: set[int],
    pad_id: int,
    stopped: set[int],
    top_k: int = 0,
    min_p: float = 0.0,
) -> Iterator[list[tuple[int, int]]]:
    """Left-padded prefill, then one token per active row per step.

    Yields, per step, [(row_index, token_id)] for the rows still running. A row leaves the batch after it
    yields an EOS id or when the caller adds its index to `stopped`; the KV cache is shrunk with it.
    """
    import torch

    device = model.device
    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    # positions count real tokens only, so a left-padded row sees the same RoPE positions as alone
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = torch.arange(n, device=device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    next_pos = pos[:, -1:] + 1
    for step in range(max_tokens):
        nxt = _pick(out.logits[:, -1, :], temperature, top_p, gen, top_k, min_p)
        events = list(zip(rows.tolist(), nxt.tolist(), strict=True))
        yield events
        if step == max_tokens - 1:
            return
        keep = [j for j, (r, t) in enumerate(events) if t not in eos and r not in stopped]
        if not keep:
            return
        if len(keep) < len(events):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            rows, nxt, mask, next_pos = rows[idx], nxt[idx], mask[idx], next_pos[idx]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache,
                    use_cache=True)
        next_pos = next_pos + 1


# ---------------------------------------------------------------------------------------------- memory


def reset_peak_memory(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: Any) -> float:
    """Peak memory in MiB: CUDA allocator peak on GPU, else the process's peak RSS."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20


# ------------------------------------------------------------------------------------------- public API


class StreamGeneration(Iterator[str]):
    """Iterate to get text pieces as they are generated; `.stats` and `.text` are set when it ends.

    Breaking out of the loop early is fine: `close()` (called by the garbage collector or explicitly)
    records the stats with finish_reason "cancelled".
    """

    def __init__(self, it_factory: Any):
        self.stats: GenStats | None = None
        self.text = ""
        self.token_ids: list[int] = []
        self._it = it_factory(self)

    def __iter__(self) -> StreamGeneration:
        return self

    def __next__(self) -> str:
        return next(self._it)

    def close(self) -> None:
        self._it.close()


def stream_generate(
    model: Any,
    tok: Any,
    prompt: Prompt,
    *,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    top_k: int = 0,
    min_p: float = 0.0,
) -> StreamGeneration:
    """Generate for one prompt, yielding text pieces as soon as they are whole characters.

    Args:
        model: a causal LM (transformers or PEFT-wrapped), already on its device and in eval mode.
        tok: its tokenizer.
        prompt: chat messages (chat template applied) or a raw prompt string.
        max_tokens: hard cap on generated tokens (finish_reason "length").
        temperature: 0 means greedy.
        top_p: nucleus sampling mass (only when temperature > 0).
        seed: makes sampling reproducible.
        stop: strings that end the answer; they are not included in the output.
        top_k: sample among the k most likely tokens only (0 = off; with temperature > 0).
        min_p: drop tokens less than `min_p` times as likely as the most likely one (0 = off).

    Returns:
        A StreamGeneration: iterate it for pieces; afterwards `.stats` (GenStats) and `.text`.
    """
    import torch

    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    _check_cuts(top_k, min_p)
    prompt_ids = encode_prompt(tok, prompt)
    eos = eos_token_ids(model, tok)
    stops = [s for s in (stop or []) if s]

    def run(state: StreamGeneration) -> Iterator[str]:
        device = model.device
        reset_peak_memory(device)
        dec = IncrementalDecoder(tok)
        stats = GenStats(prompt_tokens=len(prompt_ids))
        emitted, cut_by_stop = 0, False
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                steps = _decode(model, [prompt_ids], max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                gen=_make_generator(device, seed), eos=eos, pad_id=_pad_id(tok, eos), stopped=set(),
                                top_k=top_k, min_p=min_p)
                for events in steps:
                    token = events[0][1]
                    if stats.generated_tokens == 0:
                        stats.ttft = time.perf_counter() - start
                    if token in eos:
                        stats.finish_reason = "stop"
                        break
                    stats.generated_tokens += 1
                    state.token_ids.append(token)
                    dec.add(token)
                    if stops:
                        cut = stop_cut(dec.text, stops, emitted - max(map(len, stops)))
                        if cut is not None:
                            if cut > emitted:
                                yield dec.text[emitted:cut]
                            emitted, cut_by_stop = cut, True
                            stats.finish_reason = "stop"
                            break
                        safe = len(dec.text) - held_back(dec.text, stops)
                    else:
                        safe = len(dec.text)
                    if safe > emitted:
                        yield dec.text[emitted:safe]
                        emitted = safe
                else:
                    stats.finish_reason = "length"
                if not cut_by_stop:
                    dec.flush()
                    if len(dec.text) > emitted:
                        yield dec.text[emitted:]
                        emitted = len(dec.text)
        except GeneratorExit:
            stats.finish_reason = "cancelled"
            raise
        finally:
            stats.seconds = time.perf_counter() - start
            decode_s = stats.seconds - stats.ttft
            if stats.generated_tokens > 1 and decode_s > 0:
                stats.tokens_per_s = (stats.generated_tokens - 1) / decode_s
            if stats.ttft > 0:
                stats.prompt_tokens_per_s = stats.prompt_tokens / stats.ttft
            stats.peak_memory_mb = peak_memory_mb(device)
            state.text = dec.text[:emitted]
            state.stats = stats

    return StreamGeneration(run)


def generate_batch(
    model: Any,
    tok: Any,
    prompts: Sequence[Prompt],
    *,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    batch_size: int = 16,
    top_k: int = 0,
    min_p: float = 0.0,
) -> list[GenResult]:
    """Generate for many prompts, `batch_size` at a time (left padding, shared KV cache, per-row stop).

    Prompts are grouped by length (less padding) and results come back in input order. Greedy when
    temperature is 0; with a seed, sampling is reproducible for the same prompts and batch_size.

    Args:
        prompts: chat message lists or raw strings (see `encode_prompt`).
        Others: as in `stream_generate`.

    Returns:
        One GenResult per prompt, in order.
    """
    import torch

    if batch_size < 1 or max_tokens < 1:
        raise ValueError("batch_size and max_tokens must be >= 1")
    _check_cuts(top_k, min_p)
    encoded = [encode_prompt(tok, p) for p in prompts]
    eos = eos_token_ids(model, tok)
    pad = _pad_id(tok, eos)
    stops = [s for s in (stop or []) if s]
    longest_stop = max(map(len, stops), default=0)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[GenResult | None] = [None] * len(encoded)
    gen = _make_generator(model.device, seed)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            decoders = [IncrementalDecoder(tok) for _ in chunk]
            reasons: dict[int, FinishReason] = {}
            cut_at: dict[int, int] = {}
            finished_at: dict[int, float] = {}
            stopped: set[int] = set()
            start = time.perf_counter()
            steps = _decode(model, [encoded[i] for i in chunk], max_tokens=max_tokens, temperature=temperature,
                            top_p=top_p, gen=gen, eos=eos, pad_id=pad, stopped=stopped, top_k=top_k, min_p=min_p)
            for events in steps:
                now = time.perf_counter()
                for row, token in events:
                    if token in eos:
                        reasons[row], finished_at[row] = "stop", now
                        continue
                    dec = decoders[row]
                    before = len(dec.text)
                    dec.add(token)
                    finished_at[row] = now
                    if stops and (cut := stop_cut(dec.text, stops, before - longest_stop)) is not None:
                        reasons[row], cut_at[row] = "stop", cut
                        stopped.add(row)
            for row, i in enumerate(chunk):
                dec = decoders[row]
                if row not in cut_at:
                    dec.flush()
                text = dec.text[: cut_at[row]] if row in cut_at else dec.text
                results[i] = GenResult(text=text, n_tokens=len(dec.tokens), finish_reason=reasons.get(row, "length"),
                                       latency=finished_at.get(row, time.perf_counter()) - start,
                                       prompt_tokens=len(encoded[i]), token_ids=dec.tokens)
    return [r for r in results if r is not None]
