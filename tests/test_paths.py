"""The allowed-directory check shared by the agent doors (rea2seg/paths.py)."""
from __future__ import annotations

import os

import pytest

from rea2seg.errors import InputError
from rea2seg.serve.paths import AllowedDirs, OutputDir


@pytest.fixture()
def tree(tmp_path):
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "a.png").write_bytes(b"x")
    (allowed / "sub" / "b.png").write_bytes(b"x")
    (outside / "secret.png").write_bytes(b"x")
    return allowed, outside


def test_accepts_files_inside_and_returns_the_real_path(tree):
    allowed, _ = tree
    dirs = AllowedDirs([allowed])
    assert dirs.check_file(str(allowed / "a.png")) == (allowed / "a.png").resolve()
    assert dirs.check_file(str(allowed / "sub" / ".." / "sub" / "b.png")) == (allowed / "sub" / "b.png").resolve()


def test_refuses_outside_and_dotdot_escape_without_revealing_existence(tree):
    allowed, outside = tree
    dirs = AllowedDirs([allowed])
    msgs = []
    for p in (outside / "secret.png", outside / "missing.png", allowed / ".." / "outside" / "secret.png"):
        with pytest.raises(InputError, match="outside the allowed directories") as e:
            dirs.check_file(str(p))
        msgs.append(str(e.value).replace(str(p), "P"))
    assert len(set(msgs)) == 1  # same message whether or not the file exists


def test_refuses_symlink_leading_out(tree):
    allowed, outside = tree
    (allowed / "link.png").symlink_to(outside / "secret.png")
    (allowed / "linkdir").symlink_to(outside, target_is_directory=True)
    dirs = AllowedDirs([allowed])
    with pytest.raises(InputError, match="symlink"):
        dirs.check_file(str(allowed / "link.png"))
    with pytest.raises(InputError, match="symlink"):
        dirs.check_file(str(allowed / "linkdir" / "secret.png"))


def test_symlink_staying_inside_is_fine(tree):
    allowed, _ = tree
    (allowed / "alias.png").symlink_to(allowed / "sub" / "b.png")
    assert AllowedDirs([allowed]).check_file(str(allowed / "alias.png")) == (allowed / "sub" / "b.png").resolve()


def test_allowed_dir_given_through_a_symlink(tree, tmp_path):
    allowed, _ = tree
    (tmp_path / "via").symlink_to(allowed, target_is_directory=True)
    dirs = AllowedDirs([tmp_path / "via"])
    assert dirs.check_file(str(tmp_path / "via" / "a.png")) == (allowed / "a.png").resolve()
    assert dirs.check_file(str(allowed / "a.png")) == (allowed / "a.png").resolve()


@pytest.mark.parametrize("bad, match", [
    ("a.png", "absolute"), ("./a.png", "absolute"), ("~/a.png", "absolute"), ("", "non-empty"),
    ("/x\x00.png", "NUL"),
])
def test_refuses_relative_empty_and_nul(tree, bad, match):
    allowed, _ = tree
    with pytest.raises(InputError, match=match):
        AllowedDirs([allowed]).check_file(bad)


def test_missing_directory_and_special_files(tree):
    allowed, _ = tree
    dirs = AllowedDirs([allowed])
    with pytest.raises(InputError, match="not found"):
        dirs.check_file(str(allowed / "nope.png"))
    with pytest.raises(InputError, match="is a directory"):
        dirs.check_file(str(allowed / "sub"))
    os.mkfifo(allowed / "fifo")
    with pytest.raises(InputError, match="not a regular file"):
        dirs.check_file(str(allowed / "fifo"))


def test_no_allowed_dirs_refuses_everything_with_the_fix(tree):
    """The fix is worded by the door (an MCP server's flag, a toolkit's argument); the default names no door."""
    from rea2seg.serve.messages import DoorWording

    allowed, _ = tree
    with pytest.raises(InputError, match="configure at least one allowed directory$"):
        AllowedDirs([]).check_file(str(allowed / "a.png"))
    with pytest.raises(InputError, match="; pass allowed_dirs=X$"):
        AllowedDirs([]).check_file(str(allowed / "a.png"), wording=DoorWording(no_dirs="pass allowed_dirs=X"))


def test_configuration_errors_and_env(tree, monkeypatch):
    allowed, outside = tree
    with pytest.raises(InputError, match="does not exist"):
        AllowedDirs([allowed / "missing"])
    monkeypatch.setenv("REA2SEG_ALLOWED_DIRS", f"{allowed}{os.pathsep}{outside}{os.pathsep}")
    dirs = AllowedDirs.from_env()
    assert dirs.roots == (allowed.resolve(), outside.resolve())
    assert dirs.check_file(str(outside / "secret.png"))


def test_output_dir_names(tmp_path, tree):
    _, outside = tree
    (tmp_path / "out").mkdir()
    out = OutputDir(tmp_path / "out")
    assert out.file("r0123_mask") == (tmp_path / "out").resolve() / "r0123_mask.png"
    assert out.file("x.PNG").name == "x.PNG"
    for bad in ("../x", "a/b", ".hidden", "", "x" * 200, "a b"):
        with pytest.raises(InputError, match="not allowed"):
            out.file(bad)
    (tmp_path / "out" / "planted.png").symlink_to(outside / "secret.png")
    with pytest.raises(InputError, match="symlink"):
        out.file("planted.png")
    with pytest.raises(InputError, match="nothing can be saved; configure an output directory$"):
        OutputDir(None).file("x")
    from mcp_server.tools import MCP_WORDING
    with pytest.raises(InputError, match="start the server with --output-dir DIR$"):
        OutputDir(None).file("x", wording=MCP_WORDING)
    with pytest.raises(InputError, match="does not exist"):
        OutputDir(tmp_path / "nope")
