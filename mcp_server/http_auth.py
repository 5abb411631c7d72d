"""Bearer-token check for the HTTP transport, and the rule for when one is required."""
from __future__ import annotations

import hmac
import ipaddress
import json

TOKEN_ENV = "REA2SEG_MCP_TOKEN"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for anything reachable from another machine (0.0.0.0 too)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``.

    A missing or wrong token gets **403** with a one-line JSON message and no ``WWW-Authenticate`` header, and
    ``/.well-known/*`` answers **404** without a token. The token is a static secret the operator hands out, not
    MCP's OAuth authorization (which is optional; this server publishes no RFC 9728 metadata). Clients built on the
    TypeScript SDK (MCP Inspector 2.12, Claude Code) react to *any* 401, with or without ``WWW-Authenticate``, by
    starting OAuth discovery and dynamic client registration against this server, which can never succeed and
    hides this message ("Interactive OAuth requires a TTY"); a 403 makes them show the message instead, and 404s on
    the metadata paths tell them at once that there is no OAuth here.
    """

    def __init__(self, app, token: str):
        if not token:
            raise ValueError("an empty token would accept everyone")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan events pass through
            return await self.app(scope, receive, send)
        if scope.get("path", "").startswith("/.well-known/"):
            return await _json(send, 404, {"error": "not_found", "error_description": (
                "this server has no OAuth metadata: send its static token as 'Authorization: Bearer <token>'")})
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            return await self.app(scope, receive, send)
        problem = "no token was sent" if not given else "the token is wrong"
        return await _json(send, 403, {"error": "forbidden", "error_description": (
            f"{problem}: send the server's token (its --token or {TOKEN_ENV}) as 'Authorization: Bearer <token>'")})


async def _json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
