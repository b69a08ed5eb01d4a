"""Request guards as one pure-ASGI middleware: optional API key (401) and a body size limit (413).

The key comes from the environment (`TICKERPULSE_API_KEY`), never from a flag, so it stays out of shell
history and `ps`. With a key set, every route except `/health` needs `Authorization: Bearer <key>` (the
official openai client sends exactly that). Bodies are counted as they stream in, so a chunked upload
without Content-Length is cut off too.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

API_KEY_ENV = "TICKERPULSE_API_KEY"
OPEN_PATHS = {"/health"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def api_key_from_env() -> str | None:
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


class _TooLarge(Exception):
    pass


async def _send_error(send: Any, status: int, message: str, etype: str, code: str) -> None:
    body = json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """ASGI middleware: API key check, then a body size limit.

    Args:
        app: the wrapped ASGI app.
        api_key: required bearer token, or None for an open server.
        max_body_bytes: largest request body accepted.
        on_reject: callback(path, status) for metrics.
    """

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int, on_reject: Any = None) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body_bytes
        self.on_reject = on_reject or (lambda path, status: None)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.api_key and path not in OPEN_PATHS and not self._authorized(scope):
            self.on_reject(path, 401)
            await _send_error(send, 401, "missing or wrong API key (send Authorization: Bearer <key>)",
                              "authentication_error", "invalid_api_key")
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                self.on_reject(path, 413)
                await _send_error(send, 413, f"request body larger than {self.max_body} bytes",
                                  "invalid_request_error", "request_too_large")
                return
        seen = 0
        state = {"started": False, "overflow": False}

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    state["overflow"] = True
                    raise _TooLarge()
            return msg

        async def guarded_send(msg: dict) -> None:
            if state["overflow"]:
                return  # the app's own answer to the aborted body (e.g. a 400) is replaced by our 413
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if state["overflow"] and not state["started"]:
            self.on_reject(path, 413)
            await _send_error(send, 413, f"request body larger than {self.max_body} bytes",
                              "invalid_request_error", "request_too_large")

    def _authorized(self, scope: dict) -> bool:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get(b"x-api-key", b"").decode("latin-1")
        return bool(token) and hmac.compare_digest(token.encode(), self.api_key.encode())  # type: ignore[union-attr]
