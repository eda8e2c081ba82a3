"""Folders of images: the files a folder holds (the formats Pillow reads), decoded on a pool of
threads while the network runs, in batches. An image that cannot be read is an error of its own
row, never the end of the run."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..compiler.errors import NetcError, plain

AHEAD = 2            # batches decoded ahead of the one being computed


def image_suffixes() -> set[str]:
    from PIL import Image
    return {ext.lower() for ext in Image.registered_extensions()}


def image_files(folder: str, recursive: bool = False) -> list[str]:
    """The image files of `folder` (and its subfolders with `recursive`), sorted by path;
    hidden files are skipped. A folder that is missing, unreadable or holds no image is an error."""
    root = Path(folder)
    if not root.exists():
        raise NetcError(f"no such folder: {plain(folder)}")
    if not root.is_dir():
        raise NetcError(f"{plain(folder)} is not a folder")
    suffixes = image_suffixes()
    found, subfolders = [], 0
    try:
        walk = os.walk(root, onerror=_raise) if recursive else [(str(root), [], os.listdir(root))]
        for here, dirs, files in walk:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                p = Path(here) / name
                if name.startswith("."):
                    continue
                if p.is_dir():
                    subfolders += 1
                elif p.suffix.lower() in suffixes and p.is_file():
                    found.append(str(p))
    except OSError as e:
        raise NetcError(f"cannot read folder {plain(getattr(e, 'filename', None) or folder)}: "
                        f"{e.strerror or e}") from None
    if not found:
        hint = f"; it has {subfolders} subfolder(s): --recursive looks in them" if subfolders else ""
        raise NetcError(f"{plain(folder)} holds no image files (the formats Pillow reads: .jpg, .png, "
                        f".bmp, ...){hint}")
    return sorted(found)


def _raise(e: OSError):
    raise e


@dataclass
class Batch:
    """`paths` decoded into x[:len(paths)] (rows of failed images are zeros); errors[k] is None
    or why paths[k] could not be read."""
    paths: list[str]
    x: np.ndarray
    errors: list


def batches(paths: list[str], decode: Callable[[str], np.ndarray], batch: int, shape: tuple,
            workers: int | None = None) -> Iterator[Batch]:
    """Batches of `batch` items shaped `shape` (per item), in path order. Decoding runs AHEAD
    batches in front on `workers` threads while the caller computes on the current one."""
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = deque(paths[k:k + batch] for k in range(0, len(paths), batch))

    def one(path):
        try:
            return decode(path), None
        except NetcError as e:
            return None, plain(e.message)
        except Exception as e:       # noqa: BLE001 -- any decoder failure is that image's error
            return None, f"cannot read image {plain(path)}: {e}"

    pool = ThreadPoolExecutor(workers, thread_name_prefix="netc-decode")
    pending: deque = deque()
    try:
        while chunks or pending:
            while chunks and len(pending) < AHEAD:
                chunk = chunks.popleft()
                pending.append((chunk, [pool.submit(one, p) for p in chunk]))
            chunk, futures = pending.popleft()
            x = np.zeros((batch, *shape), np.float32)
            errors = []
            for k, f in enumerate(futures):
                item, error = f.result()
                if item is not None:
                    x[k] = item
                errors.append(error)
            yield Batch(chunk, x, errors)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
