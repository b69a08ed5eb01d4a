"""The training loop: exact resume, refusing to overwrite, the other fine-tune types (on a small Llama with
SmolLM2's tokenizer, since the mechanics do not depend on the weights), and the
no-backward-below-the-trained-blocks rule (on the real SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tickerpulse.config import ConfigError
from tickerpulse.train.api import resolve_config, train

from .conftest import write_split_folder


def base_flags(data: Path, run: Path, model: Path, **kw) -> dict:
    flags = {
        "model": str(model), "data": str(data), "adapter_path": str(run), "dtype": "float32", "num_layers": 2, "batch_size": 2,
        "max_seq_length": 96, "steps_per_report": 1, "steps_per_eval": 10, "val_batches": 1, "save_every": 10,
        "seed": 3, "lora_parameters": {"rank": 4, "scale": 2.0, "dropout": 0.1},  # dropout: the RNG state must be restored too
        "lr_schedule": {"name": "cosine_decay", "warmup": 3, "arguments": [1e-3, 40, 1e-5]},
    }
    flags.update(kw)
    return flags


def losses(run: Path, kind: str = "train", key: str = "loss") -> dict[int, float]:
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if r["kind"] == kind}


def test_resume_20_plus_20_equals_40_straight(short_data: Path, tiny_model: Path, tmp_path: Path, one_thread):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(resolve_config(None, base_flags(short_data, straight, tiny_model, iters=40)))
    first = train(resolve_config(None, base_flags(short_data, split, tiny_model, iters=20)))
    assert first.summary["step"] == 20 and (split / "0000020_adapters.safetensors").is_file()
    resumed = train(resolve_config(None, {"resume": str(split), "iters": 40}))
    assert resumed.summary["step"] == 40

    a, b = losses(straight), losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-5, {s: (a[s], b[s]) for s in a if abs(a[s] - b[s]) >= 1e-5}
    assert len(set(round(v, 4) for v in a.values())) > 10  # the losses really move
    va, vb = losses(straight, "val", "val_loss"), losses(split, "val", "val_loss")
    assert sorted(va) == sorted(vb) == [0, 10, 20, 30, 40]
    assert max(abs(va[s] - vb[s]) for s in va) < 1e-5
    wa, wb = load_file(straight / "0000040_adapters.safetensors"), load_file(split / "0000040_adapters.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6
    assert (split / "command.txt").read_text().count("\n") == 2  # both invocations recorded
    assert resumed.summary["best_step"] == train_summary(straight)["best_step"]


def test_time_budget_ends_the_run_with_the_schedule_decayed(short_data: Path, tiny_model: Path, tmp_path: Path,
                                                             one_thread):
    run = tmp_path / "budget"
    flags = base_flags(short_data, run, tiny_model, iters=100_000, time_budget=2.0, steps_per_eval=1_000,
                       lr_schedule={"name": "cosine", "warmup": 3})
    res = train(resolve_config(None, flags))
    s = res.summary
    assert s["status"] == "time_budget" and s["time_budget_s"] == 2.0
    assert 10 < s["step"] < 100_000 and 2.0 <= s["train_time_s"] < 4.0
    lrs = losses(run, key="lr")
    assert sorted(lrs) == list(range(1, s["step"] + 1))
    after_warmup = [lrs[k] for k in sorted(lrs) if k > 4]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:]))  # decaying in time
    assert after_warmup[-1] < 0.1 * max(lrs.values())  # ... down to (nearly) its end at the budget
    assert sorted(losses(run, "val", "val_loss")) == [0, s["step"]]  # the last step is validated
    assert (run / f"{s['step']:07d}_adapters.safetensors").is_file() and s["best_step"] is not None


def test_budget_fit_shortens_the_time_budget_from_the_measured_throughput(short_data: Path, tiny_model: Path,
                                                                          tmp_path: Path, one_thread):
    """The recipe's deadline hook: called once at step 30 with the real tokens/s; only a shorter budget is taken."""
    from tickerpulse.train.config import BUDGET_FIT_STEP, BUDGET_WARMUP_STEPS

    calls: list[tuple[float, float]] = []

    def fit(tok_s: float, spent: float) -> float:
        calls.append((tok_s, spent))
        return spent + 1.0  # one more second of steps

    run = tmp_path / "fit"
    flags = base_flags(short_data, run, tiny_model, iters=100_000, time_budget=600.0, steps_per_eval=1_000)
    s = train(resolve_config(None, flags), budget_fit=fit).summary
    assert len(calls) == 1
    tok_s, spent = calls[0]
    assert s["status"] == "time_budget" and s["time_budget_s"] == pytest.approx(spent + 1.0) and s["time_budget_fitted"]
    # train_time_s is rounded to 0.01 s in the summary
    assert BUDGET_FIT_STEP < s["step"] < 100_000 and spent + 1.0 - 0.005 <= s["train_time_s"] < spent + 3.0
    train_rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    at_fit = [r for r in train_rows if r.get("kind") == "train" and BUDGET_WARMUP_STEPS < r["step"] <= BUDGET_FIT_STEP]
    measured = sum(r["tokens"] for r in at_fit) / sum(r["tokens"] / r["tokens_per_sec"] for r in at_fit)
    assert tok_s == pytest.approx(measured, rel=0.05)  # the throughput the run itself reported after warm-up
    # a budget_fit that asks for MORE time than configured leaves the configured budget
    run2 = tmp_path / "cap"
    s2 = train(resolve_config(None, base_flags(short_data, run2, tiny_model, iters=100_000, time_budget=2.0,
                                               steps_per_eval=1_000)), budget_fit=lambda t, sp: 1e9).summary
    assert s2["time_budget_s"] == 2.0 and not s2["time_budget_fitted"] and s2["train_time_s"] < 4.0


def train_summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_refuses_to_overwrite_a_finished_run_and_resume_checks_data(short_data: Path, tiny_model: Path,
                                                                    tmp_path: Path, one_thread):
    run = tmp_path / "r"
    train(resolve_config(None, base_flags(short_data, run, tiny_model, iters=2, save_every=2, steps_per_eval=2)))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(resolve_config(None, base_flags(short_data, run, tiny_model, iters=2)))
    with pytest.raises(ConfigError, match="data/batching changed"):
        train(resolve_config(None, {"resume": str(run), "iters": 4, "batch_size": 3}))
    with pytest.raises(ConfigError, match="data/batching changed"):  # length grouping orders the data too
        train(resolve_config(None, {"resume": str(run), "iters": 4, "length_group_batches": 4}))


def test_no_graph_below_the_lowest_trained_block(smollm2_path):
    from tickerpulse.train.peft_setup import build_trainable_model

    cfg = resolve_config(None, {"num_layers": 2, "dtype": "float32"})
    tm = build_trainable_model(cfg, smollm2_path)
    assert tm.trained_layers == [28, 29]
    seen: dict[int, bool] = {}
    blocks = tm.causal_lm.model.layers
    hooks = [blocks[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(
        i, (out[0] if isinstance(out, tuple) else out).requires_grad)) for i in (26, 27, 28)]
    tm.causal_lm(input_ids=torch.tensor([[1, 2, 3, 4]]), use_cache=False)
    for h in hooks:
        h.remove()
    assert seen == {26: False, 27: False, 28: True}  # autograd records nothing below block 28
    names = {n for n, p in tm.model.named_parameters() if p.requires_grad}
    assert names and all(".layers.28." in n or ".layers.29." in n for n in names)
    assert all(p.dtype == torch.float32 for p in tm.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["dora", "full", "qlora"])
def test_other_fine_tune_types_train_and_apply(kind: str, short_data: Path, tmp_path: Path, tiny_model: Path,
                                               one_thread):
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter, read_run

    run = tmp_path / kind
    if kind == "qlora":
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (dev extra)")
    res = train(resolve_config(None, base_flags(short_data, run, tiny_model, iters=2, num_layers=1, fine_tune_type=kind,
                                                steps_per_eval=2, save_every=2, learning_rate=1e-3,
                                                lr_schedule=None)))
    assert res.summary["first_val_loss"] > 0
    assert res.summary["status"] == "finished" and res.summary["fine_tune_type"] == kind
    info = read_run(run)
    assert info.kind == ("full" if kind == "full" else "peft") and info.best_step is not None
    assert ("peft_type" in json.loads((run / "adapter_config.json").read_text())) == (kind != "full")
    assert json.loads((run / "adapter_config.json").read_text())["use_dora"] if kind == "dora" else True
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), run)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_lora_runs_in_the_bf16_base_dtype_with_fp32_master_weights(tiny_model):
    """bf16 base: LoRA's products run in bf16 (no fp32 copies of activations), the adapter weights and their
    gradients stay fp32, and the output matches PEFT's own fp32-cast LoRA to bf16 rounding. DoRA is untouched."""
    from tickerpulse.train.peft_setup import build_trainable_model

    cfg = resolve_config(None, {"num_layers": 2, "dtype": "bfloat16", "lora_parameters": {"rank": 8, "scale": 2.0}})
    tm = build_trainable_model(cfg, tiny_model)
    assert tm.base_dtype == torch.bfloat16
    assert all(m.cast_input_dtype_enabled is False for m in tm.causal_lm.modules() if hasattr(m, "lora_A"))
    torch.manual_seed(0)
    for p in tm.model.parameters():  # a non-zero update so that the LoRA branch matters
        if p.requires_grad:
            p.data.normal_(0, 0.05)

    peft_default = build_trainable_model(cfg, tiny_model)  # the same weights through PEFT's fp32-cast path
    for m in peft_default.causal_lm.modules():
        if hasattr(m, "lora_A"):
            m.cast_input_dtype_enabled = True
            for sub in [*m.lora_A.values(), *m.lora_B.values()]:
                sub.__dict__.pop("forward", None)  # back to nn.Linear.forward
    peft_default.model.load_state_dict(tm.model.state_dict())
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])
    out = tm.causal_lm(input_ids=ids, use_cache=False).logits.float()
    ref = peft_default.causal_lm(input_ids=ids, use_cache=False).logits.float()
    assert (out - ref).abs().max().item() < 0.05 * ref.abs().max().item()

    out.sum().backward()
    trained = [p for p in tm.model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in trained)

    dora = build_trainable_model(cfg.model_copy(update={"fine_tune_type": "dora"}), tiny_model)
    assert not any(getattr(m, "cast_input_dtype_enabled", True) is False for m in dora.causal_lm.modules())


def test_early_stopping_on_the_weighted_token_loss_keeps_the_best_label_step(short_data: Path, tmp_path: Path,
                                                                            tiny_model: Path, one_thread):
    """`early_stopping_metric: weighted_token_loss`: every validation logs the loss of the token_weights positions
    alone (here the label after '"sentiment": "', recomputed below from plain full-vocabulary logits), and the
    best adapter is the step where that loss, not the whole-answer loss, was lowest."""
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter
    from tickerpulse.models.loading import load_tokenizer

    marker = '"sentiment": "'
    rows = []
    for split in ("train", "valid"):
        for ln in (short_data / f"{split}.jsonl").read_text().splitlines():
            m = json.loads(ln)["messages"]
            rows.append((split, [m[0], {"role": "assistant", "content": '{"sentiment": "%s", "score": 0.0}' % m[1]["content"]}]))
    data = write_split_folder(tmp_path / "json", {s: [{"messages": m} for sp, m in rows if sp == s]
                                                  for s in ("train", "valid")})
    run = tmp_path / "marked"
    with pytest.raises(ValueError, match="needs token_weights"):
        resolve_config(None, base_flags(data, run, tiny_model, early_stopping_metric="weighted_token_loss"))
    res = train(resolve_config(None, base_flags(
        data, run, tiny_model, iters=30, steps_per_eval=5, save_every=5, val_batches=-1, learning_rate=3e-3,
        lora_parameters={"rank": 4, "scale": 2.0}, lr_schedule=None, early_stopping_metric="weighted_token_loss",
        token_weights=[{"after": marker, "weight": 4.0}])))
    s = res.summary
    marked, whole = losses(run, "val", "val_weighted_token_loss"), losses(run, "val", "val_loss")
    assert sorted(marked) == sorted(whole) == [0, 5, 10, 15, 20, 25, 30]
    assert s["early_stopping_metric"] == "weighted_token_loss"
    assert s["best_step"] == min(marked, key=marked.get) and s["best_metric"] == pytest.approx(marked[s["best_step"]])
    assert s["best_val_loss"] == pytest.approx(whole[s["best_step"]])
    assert s["best_step"] != min(whole, key=whole.get)  # this run's two metrics disagree: the choice is visible
    best, at_best = load_file(run / "adapters.safetensors"), load_file(run / f"{s['best_step']:07d}_adapters.safetensors")
    assert all(torch.equal(best[k], at_best[k]) for k in best)

    tok = load_tokenizer(tiny_model)
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                          run / f"{s['step']:07d}_adapters.safetensors").eval()
    ces = []
    for sp, msgs in rows:
        if sp != "valid":
            continue
        text = tok.apply_chat_template(msgs, tokenize=False)
        at = text.rindex(marker) + len(marker)
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
        i = next(j for j, (a, b) in enumerate(enc["offset_mapping"]) if a <= at < b)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([enc["input_ids"][: i + 1]])).logits[0, i - 1].float()
        ces.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([enc["input_ids"][i]])).item())
    assert marked[s["step"]] == pytest.approx(sum(ces) / len(ces), rel=1e-3)
    assert abs(marked[s["step"]] - whole[s["step"]]) > 1e-3  # a different number than the whole-answer loss
