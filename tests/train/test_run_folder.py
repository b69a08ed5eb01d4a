"""A run folder written by the torch backend loads unchanged in mlx-lm (`mlx_lm.load(BASE, adapter_path=RUN)`)
and in plain PEFT (`PeftModel.from_pretrained(base, RUN)`), and both give what our torch path gives.

Runs the real `train` on a tiny random Llama with SmolLM2's tokenizer (a few seconds); mlx parts skip where
mlx / mlx-lm are not installed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tickerpulse.train.api import resolve_config, train

from .conftest import write_split_folder

PROMPT = "<|im_start|>user\n$AAPL beats earnings, shares jump 5%<|im_end|>\n<|im_start|>assistant\n"
N_TOKENS = 8


@pytest.fixture(scope="module")
def tiny_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    with open(shared_data / "twitter-financial-news-sentiment" / "train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append({"messages": [{"role": "user", "content": r["text"][:80]},
                                      {"role": "assistant", "content": r["label"]}]})
            if len(rows) == 12:
                break
    return write_split_folder(tmp_path_factory.mktemp("tiny-data"), {"train": rows[:8], "valid": rows[8:]})


def _train(kind: str, data: Path, model: Path, run: Path) -> Path:
    flags = {"model": str(model), "data": str(data), "adapter_path": str(run), "dtype": "float32", "num_layers": 2,
             "batch_size": 2, "max_seq_length": 96, "iters": 4, "steps_per_report": 2, "steps_per_eval": 2,
             "val_batches": 1, "save_every": 2, "seed": 0, "fine_tune_type": kind, "learning_rate": 5e-2,
             "lora_parameters": {"rank": 4, "scale": 4.0, "dropout": 0.0}}
    train(resolve_config(None, flags))
    return run


@pytest.fixture(scope="module", params=["lora", pytest.param("dora", marks=pytest.mark.slow),
                                        pytest.param("full", marks=pytest.mark.slow)])
def torch_run(request: pytest.FixtureRequest, tiny_data: Path, tiny_model: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    torch.set_num_threads(1)
    return request.param, _train(request.param, tiny_data, tiny_model, tmp_path_factory.mktemp("run") / request.param)


def _torch_greedy(model: torch.nn.Module, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """Greedy continuation (no stop tokens) and the logits of the prompt's last position, in fp32."""
    out, first = list(ids), None
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([out])).logits[0, -1]
            first = logits.numpy() if first is None else first
            out.append(int(logits.argmax()))
    return out[len(ids):], first


def test_run_folder_layout_carries_both_tools_files(torch_run):
    from safetensors import safe_open

    kind, run = torch_run
    cfg = json.loads((run / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == kind and cfg["num_layers"] == 2
    with safe_open(str(run / "adapters.safetensors"), framework="np") as fh:
        names, meta = list(fh.keys()), fh.metadata()
    assert meta["step"] and meta["fine_tune_type"] == kind
    if kind == "full":
        assert "peft_type" not in cfg and not (run / "adapter_model.safetensors").exists()
        assert all(n.startswith("model.layers.") for n in names)
        return
    assert cfg["peft_type"] == "LORA" and cfg["use_dora"] == (kind == "dora")
    assert cfg["lora_parameters"]["rank"] == 4 and cfg["lora_parameters"]["scale"] == pytest.approx(4.0)
    assert all(n.endswith((".lora_a", ".lora_b", ".m")) for n in names)  # mlx-lm's names
    with safe_open(str(run / "0000004_adapters.safetensors"), framework="np") as fh:
        assert set(fh.keys()) == set(names)  # checkpoints too (mlx_lm --resume-adapter-file)
    with safe_open(str(run / "adapter_model.safetensors"), framework="np") as fh:
        peft_names = list(fh.keys())
    assert all(n.startswith("base_model.model.model.layers.") for n in peft_names) and len(peft_names) == len(names)


def test_plain_peft_loads_the_run_folder_like_apply_adapter(torch_run, tiny_model: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tickerpulse.models.adapters import apply_adapter

    kind, run = torch_run
    if kind == "full":
        pytest.skip("a full fine-tune is no PEFT adapter")
    load = lambda: AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)  # noqa: E731
    x = torch.tensor([[1, 9690, 198, 4093, 28, 216, 2, 198]])
    with warnings.catch_warnings(record=True) as caught:  # PEFT names mlx-lm's keys in a warning, ignores them
        warnings.simplefilter("always")
        plain = PeftModel.from_pretrained(load(), str(run)).eval()
    assert not [w for w in caught if "fine_tune_type" not in str(w.message) and "adapter_config" in str(w.message)]
    with torch.no_grad():
        base = load()(x).logits
        got = plain(x).logits
        ours = apply_adapter(load(), run).eval()(x).logits
    torch.testing.assert_close(got, ours, atol=0, rtol=0)
    assert (got - base).abs().max() > 1e-3, "the trained adapter must change the logits for this to mean anything"


def test_mlx_lm_loads_the_torch_run_folder_and_generates_the_same_greedy_tokens(torch_run, tiny_model: Path):
    pytest.importorskip("mlx")
    from tickerpulse.models.mlx import import_mlx, mlx_model_config

    mx = import_mlx()
    mlx_lm = pytest.importorskip("mlx_lm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tickerpulse.models.adapters import apply_adapter

    kind, run = torch_run
    ids = AutoTokenizer.from_pretrained(str(tiny_model))(PROMPT)["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    base_logits = _torch_greedy(base, ids, 1)[1]
    want, torch_logits = _torch_greedy(apply_adapter(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), run).eval(), ids, N_TOKENS)
    assert np.abs(torch_logits - base_logits).max() > 1e-3, "the adapter must matter"

    # mlx-lm's own API, the run folder as it is (mlx_model_config only passes transformers 5's rope keys)
    model, tok = mlx_lm.load(str(tiny_model), adapter_path=str(run), model_config=mlx_model_config(tiny_model))
    mlx_logits = np.array(model(mx.array([ids]))[0, -1].astype(mx.float32))
    assert np.abs(mlx_logits - torch_logits).max() < 1e-3
    got = [r.token for r in mlx_lm.stream_generate(model, tok, ids, max_tokens=N_TOKENS)]
    eos = set(tok.eos_token_ids)
    assert got == want[: len(got)] and (len(got) == N_TOKENS or want[len(got) - 1] in eos), (got, want)
    text = mlx_lm.generate(model, tok, prompt=ids, max_tokens=N_TOKENS)
    assert text == tok.decode(got)
    print(f"\n[{kind}] mlx-lm greedy {got} == torch; max |logit diff| {np.abs(mlx_logits - torch_logits).max():.1e}")


def test_resume_reads_the_mlx_named_checkpoint(torch_run, tiny_data: Path):
    """`train --resume` loads the newest checkpoint (mlx-lm's names) back into the torch model."""
    kind, run = torch_run
    if kind != "lora":
        pytest.skip("one kind is enough")
    res = train(resolve_config(None, {"resume": str(run), "iters": 6}))
    assert res.summary["step"] == 6 and (run / "0000006_adapters.safetensors").is_file()


def test_fuse_and_serve_read_the_run_folder(torch_run, tiny_model: Path, tmp_path: Path):
    """The other readers of run folders: `fuse` (verified against base + adapter) and serve's per-request adapter
    loading give the adapter's logits from the mlx-named `adapters.safetensors`."""
    from transformers import AutoModelForCausalLM

    from tickerpulse.export.fuse import fuse
    from tickerpulse.models.adapters import apply_adapter
    from tickerpulse.serve.runtime import _load_adapter_into

    kind, run = torch_run
    load = lambda: AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)  # noqa: E731
    x = torch.tensor([[1, 9690, 198, 4093, 28, 216, 2, 198]])
    res = fuse(run, tmp_path / "fused", model=str(tiny_model))
    assert res.max_abs_logit_diff is not None and res.max_abs_logit_diff < 1e-4
    with torch.no_grad():
        want = apply_adapter(load(), run).eval()(x).logits
        fused = AutoModelForCausalLM.from_pretrained(res.path, dtype=torch.float32).eval()(x).logits
        torch.testing.assert_close(fused, want, atol=1e-4, rtol=0)
        if kind != "full":
            served = _load_adapter_into(load(), "sent", run).eval()
            served.set_adapter("sent")
            torch.testing.assert_close(served(x).logits, want, atol=0, rtol=0)


def test_convert_adapter_both_ways_from_a_run_folder(torch_run, tiny_model: Path, tmp_path: Path):
    """`convert-adapter --to mlx` gives an mlx-lm-only folder, `--to peft` back a folder like a run's; the
    tensors survive both ways bit for bit."""
    from safetensors.numpy import load_file

    from tickerpulse.models.adapter_convert import convert_run
    from tickerpulse.models.adapter_files import is_mlx_adapter_dir
    from tickerpulse.models.adapter_format import AdapterFormatError

    kind, run = torch_run
    if kind == "full":
        with pytest.raises(AdapterFormatError, match="full fine-tune"):
            convert_run(run, tmp_path / "mlx", to="mlx")
        return
    assert is_mlx_adapter_dir(run)
    mlx_dir = convert_run(run, tmp_path / "mlx", to="mlx")
    cfg = json.loads((mlx_dir / "adapter_config.json").read_text())
    assert "peft_type" not in cfg and cfg["fine_tune_type"] == kind and cfg["model"] == str(tiny_model)
    assert is_mlx_adapter_dir(mlx_dir) and not (mlx_dir / "adapter_model.safetensors").exists()
    back = convert_run(mlx_dir, tmp_path / "peft", to="peft")
    orig, again = load_file(str(run / "adapter_model.safetensors")), load_file(str(back / "adapter_model.safetensors"))
    assert set(orig) == set(again) and all(np.array_equal(orig[k], again[k]) for k in orig)
    a, b = json.loads((run / "adapter_config.json").read_text()), json.loads((back / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "use_dora", "layers_to_transform", "fine_tune_type", "num_layers", "lora_parameters"):
        assert a[key] == b[key], key
