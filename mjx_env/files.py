"""Writing files safely and naming their contents, with no torch: datasets, configs and exports share it."""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path

from mjx_env.errors import UserError


def check_folder(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output path whose folder does not exist."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist")


def atomic_write(path: str | os.PathLike, write) -> None:
    """write(tmp_path) then rename: a crash mid-write never truncates an existing file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_pickle(obj, path) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
    atomic_write(path, write)


def sha256(path) -> str:
    """Hex digest of a file's bytes (the model and checkpoint fingerprints of datasets and exports)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
