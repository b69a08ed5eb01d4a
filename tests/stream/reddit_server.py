"""A local HTTP server that answers like Reddit's API for the calls PRAW makes in read-only mode:
POST /api/v1/access_token (application-only OAuth, HTTP basic auth) and GET /r/<subs>/new and
/r/<subs>/comments (Listing JSON). reddit.com can't be reached here; this checks our source end to end
through the real PRAW/prawcore stack."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def submission(sid: str, sub: str, title: str, body: str, created: float, author: str = "alice") -> dict[str, Any]:
    return {"kind": "t3", "data": {
        "id": sid, "name": f"t3_{sid}", "title": title, "selftext": body, "author": author,
        "created_utc": created, "subreddit": sub, "subreddit_name_prefixed": f"r/{sub}",
        "permalink": f"/r/{sub}/comments/{sid}/x/", "url": f"https://www.reddit.com/r/{sub}/comments/{sid}/x/",
        "num_comments": 0, "score": 1, "is_self": True}}


def comment(cid: str, sub: str, body: str, created: float, link: str, author: str = "bob") -> dict[str, Any]:
    return {"kind": "t1", "data": {
        "id": cid, "name": f"t1_{cid}", "body": body, "author": author, "created_utc": created,
        "subreddit": sub, "link_id": f"t3_{link}", "parent_id": f"t3_{link}",
        "permalink": f"/r/{sub}/comments/{link}/x/{cid}/", "score": 1}}


class RedditLike:
    """Serves `submissions` / `comments` (lists of Reddit things, newest first as Reddit does).
    Records requests (path, Authorization header) in `requests`."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.submissions: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, str]] = []
        self.token = "test-token-123"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ratelimit-remaining", "599")
                self.send_header("x-ratelimit-used", "1")
                self.send_header("x-ratelimit-reset", "60")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(n).decode())
                auth = self.headers.get("Authorization", "")
                outer.requests.append(("POST", self.path, auth))
                expected = "Basic " + base64.b64encode(f"{outer.client_id}:{outer.client_secret}".encode()).decode()
                if urlparse(self.path).path != "/api/v1/access_token":
                    return self._send(404, {"error": 404})
                if auth != expected or form.get("grant_type") != ["client_credentials"]:
                    return self._send(401, {"error": "invalid_client"})
                self._send(200, {"access_token": outer.token, "token_type": "bearer", "expires_in": 3600, "scope": "*"})

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                auth = self.headers.get("Authorization", "")
                outer.requests.append(("GET", self.path, auth))
                if auth.lower() != f"bearer {outer.token}":
                    return self._send(401, {"message": "Unauthorized", "error": 401})
                parts = url.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "r" or parts[2] not in ("new", "comments"):
                    return self._send(404, {"message": "Not Found", "error": 404})
                subs = set(parts[1].split("+"))
                limit = int(parse_qs(url.query).get("limit", ["25"])[0])
                things = outer.submissions if parts[2] == "new" else outer.comments
                children = [t for t in things if t["data"]["subreddit"] in subs][:limit]
                self._send(200, {"kind": "Listing", "data": {"after": None, "before": None, "dist": len(children),
                                                             "children": children}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RedditLike":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
