"""The one way explorer writes a file: atomically, and never through a symbolic link.

Every file the library writes (exported grids and tables, feature maps, report pages and crops, scan shards,
markers and manifests) goes through :func:`write_atomic`: the bytes go to a new temporary file in the target's
folder (created with ``O_EXCL | O_NOFOLLOW``, so nothing planted there is opened), are flushed to disk, and the
temporary file is renamed over the target with ``os.replace``. A reader sees the old file or the whole new one,
never half of it; a symbolic link (or anything but a regular file) where the file goes is refused, not followed,
so a link planted in a shared report folder cannot redirect a write to another file.

Example::

    >>> write_atomic(Path("index.html"), b"<!doctype html>...")
    PosixPath('index.html')
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ._args import shown
from .errors import ExplorerError, WriteError

__all__ = ["as_path", "make_folder", "write_atomic"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


_HINT = "Pass a path in a folder you can write."


def _refusal(err: OSError, path: Path, error: type[ExplorerError], hint: str = _HINT) -> ExplorerError:
    if err.errno == errno.ENOSPC:
        return error(f"The disk holding {path.parent} is full. Free some space. {hint}")
    return error(f"Cannot write {path} ({err.strerror or err}). {hint}")


def _refuse_link(path: Path, error: type[ExplorerError]) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise _refusal(err, path, error) from err
    if stat.S_ISLNK(mode):
        raise error(
            f"{path} is a symbolic link; explorer never writes through one. Remove the link, or write elsewhere."
        )
    if not stat.S_ISREG(mode):
        raise error(f"{path} exists and is not a regular file (a folder?). Remove it, or write elsewhere.")


def as_path(path: object, error: type[ExplorerError] = WriteError) -> Path:
    """``path`` (a ``str`` or path-like) as a :class:`~pathlib.Path`; anything else is refused."""
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise error(f"{shown(path)} ({type(path).__name__}) is not a path; pass a str or a pathlib.Path.")
    return Path(path)


def make_folder(path: Path, error: type[ExplorerError] = WriteError, hint: str = _HINT) -> Path:
    """Create ``path`` (and its parents) unless it exists; a symbolic link or a file in its place is refused.

    Raises:
        WriteError (or ``error``): the folder cannot be created, or a link or a file is in its place.
    """
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise error(
                f"{path} is a symbolic link; explorer never writes through one. Remove the link, or pass "
                "another folder."
            )
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise error(f"Cannot create the folder {str(path)!r:.200} ({err}). {hint}") from err
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _refusal(err, path, error, hint) from err
    return path


def write_atomic(
    path: str | os.PathLike, data: bytes, error: type[ExplorerError] = WriteError, hint: str = _HINT
) -> Path:
    """Write ``data`` to ``path`` atomically, never following a symbolic link (see the module docs).

    Args:
        path: the file to write; its folder must exist.
        data: the whole content.
        error: the :class:`~explorer.ExplorerError` class raised on failure (the scan cache raises
            :class:`~explorer.CacheError`).
        hint: the fix the error message ends with.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError (or ``error``): a link or a folder is in the file's place, the folder is not writable, the
            disk is full or the path holds a NUL byte; the temporary file is removed and ``path`` is unchanged.
    """
    path = as_path(path, error)
    if "\x00" in str(path):
        raise error(f"The path {str(path)!r:.200} holds a NUL byte. Pass a plain file path.")
    _refuse_link(path, error)
    temporary = None
    try:
        for _attempt in range(100):
            candidate = path.parent / f".{path.name[:200]}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            try:
                handle = os.open(candidate, _FLAGS, 0o666)
            except FileExistsError:
                continue
            temporary = candidate
            break
        else:
            raise error(f"Cannot create a temporary file beside {path}. Remove stale .tmp files there.")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        _refuse_link(path, error)  # planted while the bytes were written
        os.replace(
            temporary, path
        )  # renames over the name itself; a link planted since is replaced, not followed
        temporary = None
    except OSError as err:
        raise _refusal(err, path, error, hint) from err
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path
