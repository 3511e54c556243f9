"""Atomic file writes: a file vtp_bench writes is the previous one or the complete new one, never a torn one.

A full disk once left a 0-byte results JSON after a whole evaluation, and a truncated checkpoint beside the good
ones. Every writer therefore writes a temporary file in the target's directory (same filesystem: the rename is
atomic), fsyncs it, gives it the mode ``open(path, "w")`` would (the existing file's, else 0666 & ~umask; temp
files and safetensors make 0600 ones) and renames it over the target (``os.replace``). A failed write removes the
temporary file, leaves the previous file as it was and raises ``AtomicWriteError``, which names the file and the
cause ("No space left on device").

``overwrite=False`` publishes only where no file exists yet (a hard link: two writers cannot both win), else
raises ``FileExistsError``: what ``vtp-bench eval`` uses to never replace another run's results silently.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

# AtomicCheckpointIO is built on first use by __getattr__ (Lightning is slow to import)
__all__ = ["AtomicCheckpointIO", "AtomicWriteError", "atomic_path", "atomic_write_bytes",  # noqa: F822
           "atomic_write_text", "dir_mode", "file_mode"]

# where a hard link cannot be made (some network / FUSE filesystems): an exists-check and a rename instead
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


class AtomicWriteError(OSError):
    """A file that could not be written; the previous file, if any, is unchanged. Names the file and the cause."""

    def __str__(self) -> str:
        return f"could not write {self.filename}: {self.strerror} (the previous file, if any, is unchanged)"


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (os.umask would race with threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def dir_mode() -> int:
    """The mode ``os.mkdir`` would give a new folder (0755 under the usual umask): for folders made by mkdtemp
    (0700) that are renamed into place."""
    return 0o777 & ~_umask()


def file_mode(path: str | os.PathLike, replacing: bool = True) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's (when ``replacing``), else
    0666 & ~umask."""
    if replacing:
        with contextlib.suppress(OSError):
            return stat.S_IMODE(os.stat(path).st_mode)
    return 0o666 & ~_umask()


def _publish_new(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path`` only if ``path`` does not exist (FileExistsError otherwise), race-free."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; best effort (not every filesystem lets a directory be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a path (faiss, tar writers, savefig: pass the
    format, the name ends in ``.tmp``); on a clean exit it becomes ``path`` atomically. On an error it is removed;
    an OSError is raised as ``AtomicWriteError`` naming ``path``. ``overwrite=False``: FileExistsError when
    ``path`` exists by then."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp
        mode = file_mode(path, replacing=overwrite)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, (FileExistsError, AtomicWriteError)):
            raise AtomicWriteError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview, overwrite: bool = True
                       ) -> Path:
    """Write ``data`` to ``path`` atomically (see the module); returns the path."""
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see the module); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), overwrite)


@functools.cache
def _checkpoint_io_class() -> type:
    """Built on first use: importing Lightning and torch costs seconds that manifest writers should not pay."""
    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning's checkpoint writer, atomic: a full disk leaves the previous checkpoint, not a torn one. The
        checkpoint is serialised in memory first (as Lightning does), so a write error is a plain OSError."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
                            ) -> None:
            if storage_options is not None or "://" in str(path):  # remote filesystems: Lightning's own writer
                return super().save_checkpoint(checkpoint, path, storage_options)
            buf = io.BytesIO()
            torch.save(checkpoint, buf)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getbuffer())
            return None

    AtomicCheckpointIO.__module__, AtomicCheckpointIO.__qualname__ = __name__, "AtomicCheckpointIO"  # picklable
    return AtomicCheckpointIO


def __getattr__(name: str) -> Any:
    if name == "AtomicCheckpointIO":
        return _checkpoint_io_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
