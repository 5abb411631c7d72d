"""``rea2seg-mcp``: the MCP server's command line.

    rea2seg-mcp [--preset NAME | --vlm ID_OR_DIR --sam PATH] [--scorer DIR] [--download] [--allowed-dir DIR ...]
                [--output-dir DIR]
                [--transport stdio|http] [--host 127.0.0.1] [--port N] [--token TOKEN] [--max-queue N]

Arguments are parsed first (``--help`` prints to stdout as usual); then stdout is handed to the protocol alone, and
only then are the engine, torch and the SDK imported and the models loaded (in the background: the server answers
the client's handshake at once, tool calls wait for the models).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from rea2seg.cli.common import add_model_arguments

from .http_auth import TOKEN_ENV, is_loopback

log = logging.getLogger("rea2seg.mcp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rea2seg-mcp",
        description="Rea2Seg MCP server: reasoning segmentation tools (segment, discover_candidates, "
                    "score_candidates, get_mask, server_status) for Claude Desktop and other MCP clients.")
    add_model_arguments(p)  # the same model choices as `rea2seg segment` (--preset, --vlm/--sam, --scorer, ...)
    f = p.add_argument_group("files")
    f.add_argument("--allowed-dir", action="append", default=[], metavar="DIR",
                   help="directory images may be read from (repeatable; also REA2SEG_ALLOWED_DIRS, "
                        "separated by the OS path separator); symlinks leading out are refused")
    f.add_argument("--output-dir", metavar="DIR", help="directory get_mask(save=true) writes to (default: none)")
    f.add_argument("--max-base64-bytes", type=int, default=8 * 1024 * 1024, metavar="N",
                   help="largest image_base64 accepted, decoded bytes (default: 8 MiB)")
    t = p.add_argument_group("transport")
    t.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio (Claude Desktop; default) or streamable HTTP")
    t.add_argument("--host", default="127.0.0.1",
                   help="HTTP bind address (default 127.0.0.1); any non-loopback address requires --token")
    t.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765); the endpoint is /mcp")
    t.add_argument("--token", default=None,
                   help=f"bearer token HTTP clients must send (also {TOKEN_ENV}); required off loopback")
    s = p.add_argument_group("load")
    s.add_argument("--max-queue", type=int, default=8, metavar="N",
                   help="requests that may wait behind the running one; more get a 'busy' error (default 8)")
    s.add_argument("--max-results", type=int, default=32, metavar="N",
                   help="results kept for get_mask / score_candidates, least recently used dropped (default 32)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="stderr log level (default INFO)")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argument combinations that are wrong before anything is loaded."""
    if (args.vlm or args.sam) and args.preset:
        p.error("give either --preset or --vlm/--sam, not both")
    if args.preset:
        from rea2seg.errors import InputError
        from rea2seg.presets import get_preset  # light: config dataclasses only

        try:
            get_preset(args.preset)
        except InputError as e:
            p.error(str(e))
    args.token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.transport == "http" and not is_loopback(args.host) and not args.token:
        p.error(f"refusing to serve HTTP on {args.host} without a token: anyone who can reach it could read files "
                f"in the allowed directories. Pass --token TOKEN (or set {TOKEN_ENV}), or bind 127.0.0.1")
    if args.sources:
        from rea2seg.config import check_sources
        from rea2seg.errors import InputError

        try:
            args.sources = check_sources(args.sources)
        except InputError as e:
            p.error(str(e))
    if args.max_queue < 0 or args.max_results < 1 or args.max_base64_bytes < 1:
        p.error("--max-queue must be >= 0, --max-results and --max-base64-bytes >= 1")
    if not 0 < args.port < 65536:
        p.error(f"--port must be 1..65535, got {args.port}")


def pipeline_factory(args: argparse.Namespace):
    """A zero-argument callable that loads the models the arguments name."""
    def load():
        from rea2seg.cli.common import build_pipeline

        return build_pipeline(args)
    return load


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)

    from .stdout_guard import claim_protocol_streams

    streams = claim_protocol_streams()
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="rea2seg-mcp %(levelname)s %(name)s: %(message)s")

    from rea2seg.errors import Rea2SegError
    from rea2seg.serve.paths import AllowedDirs, OutputDir
    from rea2seg.serve.service import SegmentationService

    from .tools import MCP_WORDING, build_server

    try:
        allowed = AllowedDirs.from_env(args.allowed_dir)
        output = OutputDir(args.output_dir)
    except Rea2SegError as e:
        print(f"rea2seg-mcp: error: {e}", file=sys.stderr)
        return e.exit_code
    if not allowed:
        log.warning("no --allowed-dir given: image_path is refused, only image_base64 works")
    service = SegmentationService(pipeline_factory(args), allowed_dirs=allowed, output_dir=output,
                                  max_queue=args.max_queue, max_results=args.max_results,
                                  max_base64_bytes=args.max_base64_bytes, wording=MCP_WORDING)
    service.start_loading()
    server = build_server(service, transport=args.transport)
    log.info("allowed directories: %s; output directory: %s", allowed.describe(), output.path)
    try:
        if args.transport == "stdio":
            import anyio

            from .transports import serve_stdio
            anyio.run(serve_stdio, server, streams)
        else:
            from .transports import serve_http
            serve_http(server, host=args.host, port=args.port, token=args.token,
                       max_body=args.max_base64_bytes * 4 // 3 + 256 * 1024, log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
