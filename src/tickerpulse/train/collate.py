"""Turn data rows into token ids and a label mask, with the model's own chat template.

Rules (the case tables in tests/train/test_collate.py pin them down):
- chat: the conversation is rendered with the tokenizer's chat template. With `mask_prompt` only the
  assistant turns are trained (every assistant turn, content plus the template's turn terminator such as
  `<|im_end|>`), otherwise every token is.
- completions: rendered as a [user: prompt, assistant: completion] chat (as mlx-lm does) when the tokenizer
  has a chat template, else as `prompt + completion`; with `mask_prompt` only the completion is trained.
- text: every token is trained.
- The sequence always ends in a stop token that is trained: the template's terminator when it is one of the
  model's EOS ids, otherwise the tokenizer's EOS is appended. A model that never sees its stop token in
  training never learns to stop.
- Samples longer than `max_seq_length` are cut at the end and counted; a sample whose trained tokens were
  all cut away is dropped and counted.
- A chat / completions row may carry `"train_through": TEXT`: the sample ends with the token that holds the
  last character of TEXT's last occurrence in the final assistant turn (no stop token, nothing after it is
  computed). For answers whose tail is boilerplate, e.g. a stock score after the label a classifier reads:
  those tokens cost compute and teach only format, which the uncut rows teach.
- A chat / completions row may carry `"soft_target": {"after": TEXT, "also": {ALT: RATIO, ...}}`: the token
  right after the last occurrence of TEXT in the final assistant turn is trained as usual (weight w), and at
  the same position the first token of each ALT (as it would follow TEXT) is trained with weight w * RATIO.
  The position's target is then the distribution proportional to onehot(answer) + sum RATIO * onehot(ALT):
  a soft label, e.g. a label token whose probabilities should follow a graded gold score.

Assistant turns are located in character space: `render(messages[:i], add_generation_prompt=True)` and
`render(messages[:i+1])` must both be prefixes of the full rendering (true for ChatML, Llama 3, Gemma,
Mistral...). Tokens whose character span overlaps an assistant span are trained. Templates that rewrite
earlier turns (e.g. ones that drop past reasoning) are refused with an error instead of a silently wrong mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.data.formats import Format

IGNORE = -100


@dataclass(frozen=True)
class Sample:
    """One tokenized example. `labels[i]` is `input_ids[i]` where trained, IGNORE elsewhere (not shifted)."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    weights: tuple[float, ...] | None = None  # loss weight per position (aligned with labels); None = all 1
    also: tuple[tuple[int, int, float], ...] = ()  # (label index, other token, weight): `soft_target` terms

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        """Tokens that are predicted (a label needs a previous token to be predicted from)."""
        return sum(1 for lab in self.labels[1:] if lab != IGNORE)


@dataclass
class EncodedSplit:
    """The samples of one split and what happened on the way."""

    samples: list[Sample]
    format: Format
    rows: int
    truncated: int = 0
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.samples)


class TemplateError(ValueError):
    """The chat template cannot be used to locate assistant turns (or is missing)."""


def stop_token_ids(tokenizer: Any, model_dir: str | None = None) -> set[int]:
    """EOS ids that end a turn: the tokenizer's EOS plus the generation config's `eos_token_id`(s)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if model_dir is not None:
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        except (OSError, ValueError):
            eos = None
        if eos is not None:
            ids.update([eos] if isinstance(eos, int) else eos)
    return ids


def _end_in_answer(text: str, spans: Sequence[tuple[int, int]], marker: str, key: str) -> int:
    """Character offset right after the last occurrence of `marker` in the final assistant turn."""
    a, b = spans[-1]
    at = text.rfind(marker, a, b)
    if at < 0:
        raise ValueError(f"{key} {marker!r} does not occur in the last assistant turn")
    return at + len(marker)


class Encoder:
    """Tokenizes rows of one format into `Sample`s.

    Args:
        tokenizer: a fast (offset-mapping capable) HF tokenizer.
        mask_prompt: train on assistant / completion tokens only.
        max_seq_length: samples are cut to this many tokens.
        stop_ids: token ids that count as "the model stops here" (see `stop_token_ids`).
        token_weights: [(after, weight)]: in trained chat text, the token that starts right after each
            occurrence of `after` counts `weight` times in the loss (e.g. the label after `"sentiment": "`: one
            token of a ~26-token JSON answer, and the only one fast mode reads).
    """

    def __init__(self, tokenizer: Any, *, mask_prompt: bool = True, max_seq_length: int = 2048,
                 stop_ids: Iterable[int] | None = None, token_weights: Sequence[tuple[str, float]] = ()):
        if not getattr(tokenizer, "is_fast", False):
            raise TemplateError("a fast tokenizer (tokenizer.json) is needed to map template text to tokens")
        self.tok = tokenizer
        self.mask_prompt = mask_prompt
        self.max_seq_length = max_seq_length
        self.stop_ids = set(stop_ids) if stop_ids is not None else stop_token_ids(tokenizer)
        if tokenizer.eos_token_id is None:
            raise TemplateError("the tokenizer has no EOS token: cannot teach the model to stop")
        self.eos_id = int(tokenizer.eos_token_id)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.token_weights = [(str(a), float(w)) for a, w in token_weights]
        if any(not a or w <= 0 for a, w in self.token_weights):
            raise ValueError("token_weights: each entry needs a non-empty 'after' text and a weight > 0")

    # --- rendering ----------------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, Any]], tools: Any = None, gen: bool = False) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": gen}
        if tools:
            kwargs["tools"] = tools
        return self.tok.apply_chat_template(messages, **kwargs)

    def chat_spans(self, messages: list[dict[str, Any]], tools: Any = None) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of its assistant turns (terminator included)."""
        if not self.has_template:
            raise TemplateError("the tokenizer has no chat template: use 'text' or 'completions' data, "
                                "or a model with a chat template")
        full = self._render(messages, tools)
        spans = []
        for i, msg in enumerate(messages):
            if msg.get("role") != "assistant":
                continue
            head = self._render(messages[:i], tools, gen=True) if i else ""
            upto = self._render(messages[: i + 1], tools)
            if not (full.startswith(head) and full.startswith(upto) and len(head) <= len(upto)):
                raise TemplateError(
                    "the chat template renders earlier turns differently once later turns exist, so assistant "
                    f"turn {i} cannot be located; train with mask_prompt: false or use another template"
                )
            end = len(upto.rstrip())  # the newline after a terminator is layout, not something to generate
            spans.append((len(head), max(end, len(head))))
        return full, spans

    # --- encoding -----------------------------------------------------------------------------------
    def _tokens(self, text: str, spans: Sequence[tuple[int, int]] | None, special: bool
                ) -> tuple[list[int], list[bool], int | None, list[tuple[int, int]]]:
        """(ids, in-span flags (all True without spans), index of the last token of the last span, character
        offsets of each token)."""
        enc = self.tok(text, add_special_tokens=special, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        if spans is None:
            return ids, [True] * len(ids), len(ids) - 1 if ids else None, offsets
        inside = []
        for s, e in offsets:
            # added special tokens (BOS) have an empty (0, 0) span: never part of an assistant turn
            inside.append(e > s and any(s < b and e > a for a, b in spans))
        last = max((i for i, f in enumerate(inside) if f), default=None)
        return ids, inside, last, offsets

    def _chat(self, messages: list[dict[str, Any]], tools: Any, through: str | None = None,
              soft: dict[str, Any] | None = None
              ) -> tuple[list[int], list[bool], bool, list[float] | None, list[tuple[int, int, float]]]:
        """(ids, trained flags, ends-in-a-stop-token (or was cut by `through`), `token_weights` per token or
        None, `soft_target` terms as (index, token, ratio)) of one conversation."""
        try:
            text, spans = self.chat_spans(messages, tools)
        except TemplateError:
            if self.mask_prompt:
                raise
            text, spans = self._render(messages, tools), None  # everything is trained: no turn to locate
        ids, inside, last, offsets = self._tokens(text, spans, special=False)
        if spans is None:  # last non-blank token
            last = max((i for i, t in enumerate(ids) if self.tok.decode([t]).strip()), default=None)
        stops = last is not None and ids[last] in self.stop_ids
        if stops and messages[-1].get("role") == "assistant":
            ids, inside = ids[: last + 1], inside[: last + 1]  # what follows the final stop token is layout
        trained = inside if self.mask_prompt else [True] * len(ids)
        weights = self._position_weights(text, spans, offsets[: len(ids)]) if self.token_weights and spans else None
        also = self._soft_terms(text, spans, offsets[: len(ids)], ids, soft) if soft is not None else []
        if through is not None:
            cut = self._through_index(text, spans, offsets[: len(ids)], through)
            ids, trained = ids[: cut + 1], trained[: cut + 1]
            weights = weights[: cut + 1] if weights is not None else None
            stops = True  # cut on purpose: no stop token is appended or trained
            also = [a for a in also if a[0] <= cut]
        return ids, trained, stops, weights, also

    def _soft_terms(self, text: str, spans: Sequence[tuple[int, int]] | None, offsets: Sequence[tuple[int, int]],
                    ids: Sequence[int], soft: dict[str, Any]) -> list[tuple[int, int, float]]:
        """`soft_target` -> [(index of the token after `after`, first token of ALT there, RATIO)]."""
        after, also = (soft.get("after"), soft.get("also")) if isinstance(soft, dict) else (None, None)
        if not isinstance(after, str) or not after or not isinstance(also, dict) or not spans:
            raise ValueError("soft_target needs {'after': non-empty text, 'also': {text: ratio}} and an assistant turn")
        end = _end_in_answer(text, spans, after, "soft_target after")
        i = next((k for k, (s, e) in enumerate(offsets) if s <= end < e), None)
        if i is None or offsets[i][0] != end:
            raise ValueError(f"soft_target: no token starts right after {after!r}")
        terms = []
        for alt, ratio in also.items():
            if (not isinstance(alt, str) or not alt or isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                    or not 0 <= ratio <= 1e3):
                raise ValueError(f"soft_target: {alt!r}: {ratio!r} is not a text with a ratio in [0, 1000]")
            alt_ids = self.tok(text[:end] + alt, add_special_tokens=False)["input_ids"]
            if list(alt_ids[:i]) != list(ids[:i]) or len(alt_ids) <= i:
                raise ValueError(f"soft_target: the tokenizer splits the text before {alt!r} differently")
            if ratio > 0 and alt_ids[i] != ids[i]:
                terms.append((i, int(alt_ids[i]), float(ratio)))
        return terms

    @staticmethod
    def _through_index(text: str, spans: Sequence[tuple[int, int]] | None, offsets: Sequence[tuple[int, int]],
                       through: str) -> int:
        """Index of the token holding the last character of `through` in the final assistant turn."""
        if not through or not spans:
            raise ValueError("train_through needs a non-empty text and an assistant turn to cut")
        last = _end_in_answer(text, spans, through, "train_through") - 1
        return next(i for i, (s, e) in enumerate(offsets) if s <= last < e)

    def _position_weights(self, text: str, spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]
                          ) -> list[float] | None:
        """Per-token loss weights for `token_weights` (None when no marker occurs in an assistant turn)."""
        starts = []
        for after, w in self.token_weights:
            at = text.find(after)
            while at >= 0:
                end = at + len(after)
                if any(a <= end < b for a, b in spans):
                    starts.append((end, w))
                at = text.find(after, at + 1)
        if not starts:
            return None
        weights = [1.0] * len(offsets)
        for end, w in starts:
            i = next((k for k, (s, e) in enumerate(offsets) if s <= end < e), None)
            if i is not None:
                weights[i] = w
        return weights

    def encode(self, row: dict[str, Any], fmt: Format) -> Sample | None:
        """One row -> Sample (None when nothing trainable survives truncation)."""
        weights: list[float] | None = None
        also: list[tuple[int, int, float]] = []
        through, soft = row.get("train_through"), row.get("soft_target")
        for key, v in (("train_through", through), ("soft_target", soft)):
            if v is not None and not (fmt == "chat" or (fmt == "completions" and self.has_template)):
                raise ValueError(f"{key} works on chat rows (and completions with a chat template)")
        if fmt == "chat":
            ids, trained, stops, weights, also = self._chat(row["messages"], row.get("tools"), through, soft)
        elif fmt == "completions" and self.has_template:
            msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
            ids, trained, stops, weights, also = self._chat(msgs, None, through, soft)
        elif fmt == "completions":
            prompt_ids = self._tokens(row["prompt"], None, special=True)[0]
            done_ids = self._tokens(row["completion"], None, special=False)[0]
            ids = prompt_ids + done_ids
            trained = [not self.mask_prompt] * len(prompt_ids) + [True] * len(done_ids)
            stops = bool(ids) and ids[-1] in self.stop_ids
        else:
            ids, trained = self._tokens(row["text"], None, special=True)[:2]
            stops = bool(ids) and ids[-1] in self.stop_ids
        if not stops:  # the answer does not end in a stop token: append the EOS and train it
            ids.append(self.eos_id)
            trained.append(True)
        truncated = len(ids) > self.max_seq_length
        if truncated:
            ids, trained = ids[: self.max_seq_length], trained[: self.max_seq_length]
        labels = [t if ok else IGNORE for t, ok in zip(ids, trained)]
        if weights is not None:  # an appended EOS weighs 1; weights of untrained positions are irrelevant
            weights = [w if ok else 1.0 for w, ok in zip(weights + [1.0] * (len(ids) - len(weights)), trained)]
        # a soft term weighs RATIO times its position's weight; only on trained, predicted positions
        terms = tuple((i, tok, r * (weights[i] if weights else 1.0)) for i, tok, r in also
                      if 0 < i < len(labels) and labels[i] != IGNORE)
        weighted = bool(weights) and any(w != 1.0 for w in weights)
        sample = Sample(ids, labels, truncated, tuple(weights) if weighted else None, terms)
        return sample if sample.n_trained else None

    def encode_split(self, rows: Sequence[dict[str, Any]], fmt: Format) -> EncodedSplit:
        """Encode every row; counts truncated and dropped samples."""
        out = EncodedSplit([], fmt, len(rows))
        for n, row in enumerate(rows, 1):
            try:
                sample = self.encode(row, fmt)
            except TemplateError:
                raise
            except ValueError as e:
                raise ValueError(f"row {n}: {e}") from e
            if sample is None:
                out.dropped += 1
                continue
            out.truncated += sample.truncated
            out.samples.append(sample)
        if out.truncated:
            out.notes.append(f"{out.truncated} of {len(rows)} samples cut to max_seq_length={self.max_seq_length}")
        if out.dropped:
            out.notes.append(f"{out.dropped} samples dropped: no trained token left within max_seq_length")
        return out
