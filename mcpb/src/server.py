"""The bundle's entry point: the host (Claude Desktop) passes the user's settings as environment variables (see
manifest.json: user_config -> mcp_config.env); they become the arguments of the project's own ``rea2seg-mcp``, which
then serves MCP over stdio.

A host leaves a setting the user left empty as the literal text ``${user_config.NAME}``, and may pass a default such as
``${HOME}/Pictures`` unexpanded: both are handled here.
"""
import os
import sys


def setting(name: str) -> str | None:
    """The value of an environment setting, or None when it is unset, empty or an unsubstituted ``${user_config.x}``."""
    value = os.path.expanduser(os.path.expandvars(os.environ.get(name, "").strip()))
    return None if not value or value.startswith("${") else value


def arguments() -> list[str]:
    argv = []
    if setting("REA2SEG_PRESET"):
        argv += ["--preset", setting("REA2SEG_PRESET")]
    if setting("REA2SEG_OUTPUT_DIR"):
        argv += ["--output-dir", setting("REA2SEG_OUTPUT_DIR")]
    if (setting("REA2SEG_DOWNLOAD") or "true").lower() in ("true", "1", "yes"):
        argv += ["--download"]
    allowed = setting("REA2SEG_ALLOWED_DIRS")
    os.environ.pop("REA2SEG_ALLOWED_DIRS", None)  # passed as an argument instead, expanded
    if allowed:
        argv += ["--allowed-dir", allowed]
    return argv


def main() -> int:
    from mcp_server.cli import main as serve

    return serve(arguments() + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
