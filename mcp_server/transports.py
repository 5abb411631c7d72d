"""Serving an MCPServer over stdio (on the private protocol streams) or streamable HTTP (uvicorn)."""
from __future__ import annotations

import io
import logging

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings

from .http_auth import BearerTokenMiddleware, is_loopback
from .stdout_guard import ProtocolStreams

log = logging.getLogger("rea2seg.mcp")


async def serve_stdio(server: MCPServer, streams: ProtocolStreams) -> None:
    """JSON-RPC over the private stdin/stdout duplicates (fd 1 itself already points at stderr)."""
    stdin = anyio.wrap_file(io.TextIOWrapper(streams.stdin, encoding="utf-8", errors="replace"))
    stdout = anyio.wrap_file(io.TextIOWrapper(streams.stdout, encoding="utf-8"))
    # MCPServer.run_stdio_async() would claim fd 1 itself, which now is stderr; hand the transport our streams and
    # run the low-level server on them, as the SDK's stdio_server() documents.
    lowlevel = server._lowlevel_server
    async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def http_app(server: MCPServer, host: str, token: str | None, max_body: int):
    """The ASGI app: the SDK's streamable-HTTP app at /mcp, behind the bearer-token check when a token is set."""
    security = None
    if not is_loopback(host):
        # DNS-rebinding protection only means something for a loopback bind (the SDK enables it there); off
        # loopback the required bearer token is what keeps other sites and hosts out.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(host=host, transport_security=security, max_request_body_size=max_body)
    return BearerTokenMiddleware(app, token) if token else app


def serve_http(server: MCPServer, host: str, port: int, token: str | None, max_body: int, log_level: str) -> None:
    import uvicorn

    app = http_app(server, host, token, max_body)
    log.info("serving MCP over streamable HTTP at http://%s:%d/mcp%s", host, port,
             " (bearer token required)" if token else "")
    # log_config=None: uvicorn's loggers propagate to our stderr handler instead of its own (stdout) handlers.
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(), log_config=None)).run()
