"""Which files a door may read and write: the allowed-directory check every agent door shares.

An agent (or whoever prompts it) chooses the path, so a path is checked after resolving every symlink and ``..``:
the real file must lie inside one of the configured directories. Only absolute paths are taken (an agent has no
meaningful working directory), and only regular files (a FIFO or a device would hang or stream forever). Outputs go
to one configured folder under plain file names.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from .messages import DoorWording

#: Environment variable with the allowed directories, separated by ``os.pathsep`` (":" on Linux/macOS, ";" on Windows).
ALLOWED_DIRS_ENV = "REA2SEG_ALLOWED_DIRS"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class AllowedDirs:
    """The directories a door may read images from.

    dirs: directories given by the operator (CLI flag, environment, constructor); relative ones are taken from the
    current directory, symlinks are resolved once here. Each must exist. An empty list refuses every path.
    setting: what the operator calls this setting (named when a directory does not exist).
    """

    def __init__(self, dirs: Iterable[str | os.PathLike] = (), setting: str = "allowed directories"):
        roots: list[Path] = []
        for d in dirs:
            if not os.fspath(d):
                continue
            real = _real(Path(d).expanduser())
            if not real.is_dir():
                raise InputError(f"allowed directory {d} does not exist or is not a directory; create it or fix "
                                 f"the {setting} setting")
            if real not in roots:
                roots.append(real)
        self.roots: tuple[Path, ...] = tuple(roots)

    @classmethod
    def from_env(cls, extra: Iterable[str | os.PathLike] = (), env: str = ALLOWED_DIRS_ENV) -> "AllowedDirs":
        """The directories in ``extra`` plus those listed in the environment variable ``env``."""
        listed = [p for p in os.environ.get(env, "").split(os.pathsep) if p.strip()]
        return cls([*extra, *listed], setting=f"--allowed-dir / {env}")

    def __bool__(self) -> bool:
        return bool(self.roots)

    def __repr__(self) -> str:
        return f"AllowedDirs({[str(r) for r in self.roots]})"

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots) if self.roots else "(none configured)"

    def check_file(self, path: str, what: str = "image_path", wording: DoorWording = DoorWording()) -> Path:
        """Return the real path of ``path`` if it is an existing regular file inside an allowed directory.

        Raises ``InputError`` naming the problem: not a string, relative, outside the allowed directories (also
        when a symlink inside them points out), missing, a directory, or not a regular file; the fix in the door's
        ``wording``. Whether a file outside the allowed directories exists is never revealed.
        """
        if not isinstance(path, str) or not path.strip():
            raise InputError(f"{what} must be a non-empty absolute file path")
        if "\x00" in path:
            raise InputError(f"{what} contains a NUL character")
        if not os.path.isabs(path):
            raise InputError(f"{what} must be an absolute path, got {path!r}; pass the full path of a file inside "
                             f"the allowed directories: {self.describe()}")
        if not self.roots:
            raise InputError(f"no directories are allowed for reading, so {path} cannot be opened; "
                             f"{wording.no_dirs}")
        real = _real(path)
        if not any(_inside(real, root) for root in self.roots):
            lexical = Path(os.path.normpath(path))
            if any(_inside(lexical, root) for root in self.roots):
                raise InputError(f"{path} is a symlink (or under one) that leads outside the allowed directories "
                                 f"({self.describe()}); copy the file into one of them instead")
            raise InputError(f"{path} is outside the allowed directories ({self.describe()}); move the file into "
                             f"one of them or {wording.allow_dir}")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise InputError(f"file not found: {path}; check the path") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path} is a directory; pass the path of one image file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path} is not a regular file (a pipe, socket or device); pass an image file")
        if not os.access(real, os.R_OK):
            raise InputError(f"{path} is not readable by this process; check its permissions")
        return real


class OutputDir:
    """One folder outputs are written to, under plain file names (no separators, no ``..``, no hidden files)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path: Path | None = None
        if path is not None and os.fspath(path):
            real = _real(Path(path).expanduser())
            if not real.is_dir():
                raise InputError(f"output directory {path} does not exist; create it first (mkdir -p {path})")
            self.path = real

    def __bool__(self) -> bool:
        return self.path is not None

    def file(self, name: str, suffix: str = ".png", wording: DoorWording = DoorWording()) -> Path:
        """The path for a new output file ``name`` inside the folder; raises ``InputError`` for an unsafe name."""
        if self.path is None:
            raise InputError(f"no output directory is configured, so nothing can be saved; {wording.output_dir}")
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise InputError(f"file name {name!r} is not allowed; use letters, digits, '.', '_' or '-' only "
                             f"(no folders), at most 128 characters, not starting with '.'")
        if suffix and not name.lower().endswith(suffix):
            name += suffix
        target = self.path / name
        if not _inside(_real(target), self.path):  # e.g. a symlink planted in the output folder
            raise InputError(f"{name} in {self.path} is a symlink leading out of the output directory; remove it")
        return target
