"""Case tables: data format x chat template x mask_prompt -> which text is trained.

The expected masks are written as the decoded text of each contiguous run of trained tokens, so a reader
can check them by eye. Templates: SmolLM2's real ChatML template, and Gemma 3's real template (as shipped
with google/gemma-3-*-it) on the same vocabulary with Gemma's turn markers added as special tokens and
`<end_of_turn>` as a stop id, as in Gemma's generation config.
"""

from __future__ import annotations

import copy

import pytest

from tickerpulse.models.loading import load_tokenizer
from tickerpulse.train.collate import IGNORE, Encoder, TemplateError

GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

SYS, U1, A1, U2, A2 = "Be brief.", "Is $AAPL up?", '{"sentiment": "positive"}', "And $TSLA?", "negative"
ROWS = {
    "chat": {"messages": [{"role": "system", "content": SYS}, {"role": "user", "content": U1},
                          {"role": "assistant", "content": A1}]},
    "chat_multi": {"messages": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
                                {"role": "user", "content": U2}, {"role": "assistant", "content": A2}]},
    "completions": {"prompt": U1, "completion": A2},
    "text": {"text": "Shares of $AAPL rose 3%."},
}
FORMAT = {"chat": "chat", "chat_multi": "chat", "completions": "completions", "text": "text"}

CHATML_SYS = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

# (template, row, mask_prompt) -> decoded trained runs
CASES = [
    # SmolLM2 ChatML: the assistant content and its <|im_end|> (the model's EOS), never the newline after it.
    ("chatml", "chat", True, [A1 + "<|im_end|>"]),
    ("chatml", "chat_multi", True, [A1 + "<|im_end|>", A2 + "<|im_end|>"]),
    ("chatml", "completions", True, [A2 + "<|im_end|>"]),
    ("chatml", "text", True, [ROWS["text"]["text"] + "<|im_end|>"]),
    ("chatml", "chat", False, [f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n{U1}<|im_end|>\n"
                               f"<|im_start|>assistant\n{A1}<|im_end|>"]),
    ("chatml", "completions", False, [f"{CHATML_SYS}<|im_start|>user\n{U1}<|im_end|>\n"
                                      f"<|im_start|>assistant\n{A2}<|im_end|>"]),
    ("chatml", "text", False, [ROWS["text"]["text"] + "<|im_end|>"]),
    # Gemma 3: system folded into the first user turn; <end_of_turn> is a stop id, so no EOS is appended.
    ("gemma3", "chat", True, [A1 + "<end_of_turn>"]),
    ("gemma3", "chat_multi", True, [A1 + "<end_of_turn>", A2 + "<end_of_turn>"]),
    ("gemma3", "completions", True, [A2 + "<end_of_turn>"]),
    ("gemma3", "text", True, [ROWS["text"]["text"] + "<|im_end|>"]),
    ("gemma3", "chat", False, [f"<|im_start|><start_of_turn>user\n{SYS}\n\n{U1}<end_of_turn>\n"
                               f"<start_of_turn>model\n{A1}<end_of_turn>"]),
    ("gemma3", "chat_multi", False, [f"<|im_start|><start_of_turn>user\n{U1}<end_of_turn>\n<start_of_turn>model\n"
                                     f"{A1}<end_of_turn>\n<start_of_turn>user\n{U2}<end_of_turn>\n"
                                     f"<start_of_turn>model\n{A2}<end_of_turn>"]),
    # A turn terminator that is not a stop token: the tokenizer's EOS is appended and trained.
    ("gemma3_nostop", "chat", True, [A1 + "<end_of_turn>", "<|im_end|>"]),
    ("gemma3_nostop", "completions", True, [A2 + "<end_of_turn>", "<|im_end|>"]),
]


@pytest.fixture(scope="module")
def tokenizers(smollm2_path):
    chatml = load_tokenizer(smollm2_path)
    gemma = copy.deepcopy(chatml)
    gemma.chat_template = GEMMA3_TEMPLATE
    gemma.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    end_id = gemma.convert_tokens_to_ids("<end_of_turn>")
    return {
        "chatml": (chatml, {chatml.eos_token_id}),
        "gemma3": (gemma, {gemma.eos_token_id, end_id}),
        "gemma3_nostop": (gemma, {gemma.eos_token_id}),
    }


def trained_runs(tok, sample) -> list[str]:
    runs, cur = [], []
    for t, lab in zip(sample.input_ids, sample.labels):
        if lab != IGNORE:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize(("template", "row", "mask_prompt", "expected"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{'mask' if c[2] else 'nomask'}" for c in CASES])
def test_label_mask(tokenizers, template, row, mask_prompt, expected):
    tok, stops = tokenizers[template]
    enc = Encoder(tok, mask_prompt=mask_prompt, max_seq_length=512, stop_ids=stops)
    sample = enc.encode(ROWS[row], FORMAT[row])
    assert sample is not None and not sample.truncated
    assert trained_runs(tok, sample) == expected
    assert sample.input_ids[-1] in stops | {tok.eos_token_id}  # every sample ends in a trained stop token
    assert sample.labels[-1] == sample.input_ids[-1]


def test_truncation_is_counted_and_untrainable_samples_dropped(tokenizers):
    tok, stops = tokenizers["chatml"]
    full = Encoder(tok, max_seq_length=512, stop_ids=stops).encode(ROWS["chat"], "chat")
    prompt_len = next(i for i, lab in enumerate(full.labels) if lab != IGNORE)
    long_text = {"text": "Shares of $AAPL rose 3% after earnings. " * 20}
    # cut right before the answer: the chat row has nothing left to train and is dropped; text is cut but kept
    enc = Encoder(tok, max_seq_length=prompt_len, stop_ids=stops)
    chat, text = enc.encode_split([ROWS["chat"]], "chat"), enc.encode_split([long_text] * 3, "text")
    assert chat.dropped == 1 and not chat.samples and "dropped" in chat.notes[-1]
    assert text.truncated == 3 and text.dropped == 0 and all(len(s) == prompt_len for s in text.samples)
    assert any(f"cut to max_seq_length={prompt_len}" in n for n in text.notes)
    one_more = Encoder(tok, max_seq_length=prompt_len + 1, stop_ids=stops).encode(ROWS["chat"], "chat")
    assert one_more is not None and one_more.truncated and one_more.n_trained == 1


def test_template_that_rewrites_history_is_refused(tokenizers):
    tok, stops = tokenizers["chatml"]
    odd = copy.deepcopy(tok)
    odd.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    enc = Encoder(odd, mask_prompt=True, stop_ids=stops)
    with pytest.raises(TemplateError, match="cannot be located"):
        enc.encode(ROWS["chat"], "chat")
    # without prompt masking the turns need not be located
    assert Encoder(odd, mask_prompt=False, stop_ids=stops).encode(ROWS["chat"], "chat") is not None


def test_no_chat_template_completions_fall_back_to_plain_text(tokenizers):
    tok, stops = tokenizers["chatml"]
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    sample = Encoder(plain, mask_prompt=True, stop_ids=stops).encode(ROWS["completions"], "completions")
    assert trained_runs(plain, sample) == [A2 + "<|im_end|>"]
    with pytest.raises(TemplateError, match="no chat template"):
        Encoder(plain, stop_ids=stops).encode(ROWS["chat"], "chat")


def test_token_weights_mark_the_token_after_the_marker_in_answers_only(tokenizers):
    tok, stops = tokenizers["chatml"]
    answer = '{"ticker": "AAPL", "sentiment": "negative", "score": -0.6, "reasoning": ""}'
    row = {"messages": [{"role": "system", "content": 'Reply with {"sentiment": "..."} JSON.'},
                        {"role": "user", "content": '$AAPL misses. "sentiment": "positive" please'},
                        {"role": "assistant", "content": answer}]}
    plain = Encoder(tok, max_seq_length=512, stop_ids=stops).encode(row, "chat")
    enc = Encoder(tok, max_seq_length=512, stop_ids=stops, token_weights=[('"sentiment": "', 8.0)])
    s = enc.encode(row, "chat")
    assert s.input_ids == plain.input_ids and s.labels == plain.labels and plain.weights is None
    heavy = [i for i, w in enumerate(s.weights) if w != 1.0]
    # one weighted token: the label in the assistant answer (the marker in the system and user turns is prompt)
    assert len(heavy) == 1 and s.weights[heavy[0]] == 8.0 and s.labels[heavy[0]] != IGNORE
    assert tok.decode([s.input_ids[heavy[0]]]).strip().startswith("neg")
    # rows without the marker carry no weights at all
    assert enc.encode(ROWS["chat"], "chat").weights is not None  # its answer is '{"sentiment": "positive"}'
    other = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    assert enc.encode(other, "chat").weights is None
    with pytest.raises(ValueError, match="token_weights"):
        Encoder(tok, token_weights=[("", 2.0)])


def label_weighted(tokenizers, user: str, label: str, score: float):
    """(tokenizer, stop ids, a chat row whose user turn quotes the label marker, an Encoder weighting the
    answer's label token 8x)."""
    tok, stops = tokenizers["chatml"]
    answer = f'{{"ticker": "AAPL", "sentiment": "{label}", "score": {score}, "reasoning": ""}}'
    row = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    return tok, stops, row, Encoder(tok, max_seq_length=512, stop_ids=stops, token_weights=[('"sentiment": "', 8.0)])


def test_train_through_cuts_the_answer_after_the_marked_text(tokenizers):
    tok, stops, row, enc = label_weighted(tokenizers, 'Is "sentiment": "negative" bad?', "negative", -0.7)
    full = enc.encode(row, "chat")
    cut = enc.encode({**row, "train_through": '"sentiment": "negative"'}, "chat")
    # a prefix of the full sample, ending in the token that closes the label (the user turn's copy is prompt)
    assert full.input_ids[: len(cut)] == cut.input_ids and len(cut) < len(full) - 10
    assert cut.labels == full.labels[: len(cut)] and cut.weights == full.weights[: len(cut)]
    assert '"' in tok.decode([cut.input_ids[-1]]) and cut.labels[-1] != IGNORE
    assert cut.input_ids[-1] not in stops and 8.0 in cut.weights  # no stop token appended; the label stays weighted
    assert tok.decode(cut.input_ids).endswith('"sentiment": "negative",') or tok.decode(cut.input_ids).endswith(
        '"sentiment": "negative"')
    with pytest.raises(ValueError, match=r"row 2: train_through 'nowhere'"):
        enc.encode_split([row, {**row, "train_through": "nowhere"}], "chat")
    with pytest.raises(ValueError, match="chat rows"):
        enc.encode({"text": "abc", "train_through": "b"}, "text")


def test_soft_target_adds_the_other_labels_at_the_label_position(tokenizers):
    tok, _, row, enc = label_weighted(tokenizers, '$AAPL edges up. "sentiment": "negative"?', "positive", 0.3)
    hard = enc.encode(row, "chat")
    soft = enc.encode({**row, "soft_target": {"after": '"sentiment": "', "also": {"neutral": 0.5, "negative": 0}}},
                      "chat")
    # the same sample plus one term: the neutral label's first token, at the answer's label position (not the
    # user turn's copy), weighing 0.5 x that position's weight
    assert soft.input_ids == hard.input_ids and soft.labels == hard.labels and soft.weights == hard.weights
    assert hard.also == () and len(soft.also) == 1
    i, token, w = soft.also[0]
    assert soft.weights[i] == 8.0 and w == 4.0 and soft.labels[i] != IGNORE
    assert tok.decode([soft.input_ids[i]]).startswith("pos") and tok.decode([token]).startswith("neut")
    # survives a cut after the label; refused where it cannot apply
    cut = enc.encode({**row, "train_through": '"sentiment": "positive"',
                      "soft_target": {"after": '"sentiment": "', "also": {"neutral": 0.5}}}, "chat")
    assert cut.also == soft.also
    for bad, match in (({"after": "nowhere", "also": {"neutral": 1}}, "does not occur"),
                       ({"after": '"sentiment": "', "also": {"neutral": -1}}, "ratio"),
                       ({"after": '"sentiment": "'}, "needs")):
        with pytest.raises(ValueError, match=match):
            enc.encode({**row, "soft_target": bad}, "chat")
    with pytest.raises(ValueError, match="chat rows"):
        enc.encode({"text": "abc", "soft_target": {"after": "a", "also": {"b": 1}}}, "text")
