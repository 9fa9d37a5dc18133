"""Discovery of the demo's input: the Python files of the standard library."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

# Third-party packages are installed inside the standard library folder on
# many systems, but the demo analyses only what ships with Python.
SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "__pycache__"})


def stdlib_folder() -> Path:
    """Return the standard library folder of the running Python."""
    return Path(sysconfig.get_paths()["stdlib"])


def find_python_files(root: Path, limit: int | None = None) -> list[Path]:
    """Return the `.py` files under root, sorted by path, at most `limit`.

    Folders named in SKIPPED_FOLDERS are not entered, and symbolic links to
    folders are not followed, so each file is found once. The order is
    stable, so `limit` always selects the same files on one machine.
    """
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder. Pass a folder that contains .py files.")
    files = sorted(_walk_python_files(root))
    return files if limit is None else files[:limit]


def _walk_python_files(root: Path) -> list[Path]:
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        found.extend(Path(folder, name) for name in names if name.endswith(".py"))
    return found
