"""`HttpLabeler`: a running `tickerpulse serve` measured through its `/v1/sentiment` route, so
`tickerpulse eval --url` scores exactly what the server answers.

Each item is sent as `{"text", "ticker"}` with the ticker given explicitly (null = the market), so the server
asks the same question as the in-process engine instead of extracting tickers from the text. Items go in
requests of `batch_size` (default: the server's cap, 256 items); an item's latency is its request's round trip.
With `TICKERPULSE_API_KEY` set,
requests carry `Authorization: Bearer <key>` (the server's own variable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tickerpulse.evaluate.items import EvalItem
from tickerpulse.evaluate.labelers import Answer, LabelerRun, in_batches

API_KEY_ENV = "TICKERPULSE_API_KEY"  # the server reads the same variable (serve.security)
MAX_REQUEST_ITEMS = 256  # the server's per-request cap (serve.openai_api.MAX_ITEMS; a test checks)


@dataclass
class HttpLabeler:
    """The served sentiment route of the server at `url` (e.g. http://127.0.0.1:8080)."""

    url: str
    mode: Literal["fast", "reasoning"] = "fast"
    max_tokens: int | None = None  # reasoning mode: tokens of reasoning; None = the server's default
    batch_size: int = MAX_REQUEST_ITEMS
    model: str | None = None  # a served adapter/model name; None = the server's default
    timeout: float = 600.0
    name: str = "served"

    @property
    def system(self) -> dict[str, Any]:
        return {"url": self.url, "mode": self.mode, "model": self.model, "max_tokens": self.max_tokens}

    def answer(self, items: Sequence[EvalItem]) -> LabelerRun:
        import httpx

        key = os.environ.get(API_KEY_ENV, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        endpoint = self.url.rstrip("/").removesuffix("/v1") + "/v1/sentiment"
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            def call(chunk: Sequence[EvalItem]) -> list[str]:
                body: dict[str, Any] = {"items": [{"text": it.text, "target": it.target} for it in chunk],
                                        "mode": self.mode}
                if self.max_tokens is not None:
                    body["max_tokens"] = self.max_tokens
                if self.model is not None:
                    body["model"] = self.model
                resp = client.post(endpoint, json=body)
                if resp.status_code != 200:
                    raise RuntimeError(f"{endpoint}: HTTP {resp.status_code}: {resp.text[:300]}")
                return [json.dumps(a, ensure_ascii=False) for a in resp.json()["results"]]

            texts, latency, wall = in_batches(call, items, self.batch_size)
        return LabelerRun([Answer(t, latency=lat) for t, lat in zip(texts, latency)], wall)
