"""`EngineLabeler`: the served `SentimentEngine` in-process as an evaluation labeler (`evaluate.labelers`),
so `tickerpulse eval --mode fast|reasoning` and the recipe measure exactly what `/v1/sentiment` answers.

It lives in serve because evaluate never imports a later stage; callers above both (the CLI, the recipe)
build it and hand it to `evaluate.runner.run_labeler`. Each item is asked about its target (`EvalItem.target`:
a symbol, an entity name, None = the market), like the HTTP labeler asks the running server. Reasoning mode
gives what the engine's `reasoning_kind` says (generated text or evidence spans).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Answer, LabelerRun, in_batches
from tickerpulse.serve.engine import DEFAULT_REASONING_TOKENS, Mode, SentimentEngine


@dataclass
class EngineLabeler:
    """`engine.analyze` in one mode; every answer is a valid `SentimentAnswer`, dumped as its JSON text.

    Args:
        batch_size: items per `analyze` call (an item's latency is its call's); None = all in one call.
    """

    engine: SentimentEngine
    mode: Mode = "fast"
    max_tokens: int = DEFAULT_REASONING_TOKENS
    batch_size: int | None = None
    name: str = "engine"
    system: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.system = {"model": str(self.engine.rt.model_name), "mode": self.mode,
                       "dtype": str(self.engine.rt.dtype).removeprefix("torch."), **self.engine.info(),
                       **self.system}

    def answer(self, items: Sequence[EvalItem]) -> LabelerRun:
        def call(chunk: Sequence[EvalItem]) -> list[dict[str, Any]]:
            return self.engine.analyze([(it.text, it.target) for it in chunk], mode=self.mode,
                                       max_tokens=self.max_tokens)

        answers, latency, wall = in_batches(call, items, self.batch_size)
        return LabelerRun([Answer(json.dumps(a, ensure_ascii=False), latency=lat) for a, lat in zip(answers, latency)],
                          wall)
