"""What every command does the same way: load the model and print its warnings, write output."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..compiler.errors import NetcError
from ..compiler.report import plain


def load_model(args):
    """The model named on the command line, its warnings printed with names escaped (a layer
    name is data: it may hold terminal escapes)."""
    from ..compiler.network import load
    shapes = dict(getattr(args, "input_shape", None) or [])
    net = load(args.model, phase=getattr(args, "phase", "test"), input_shapes=shapes)
    if shapes:
        batches = {s[0] for s in shapes.values()} - {1}    # N=1 leaves the batch to --batch
        if len(batches) > 1:
            raise NetcError(f"--input-shape gives different batch sizes ({', '.join(map(str, sorted(batches)))})")
        if batches and hasattr(args, "batch"):
            if args.batch not in (None, 1, *batches):
                raise NetcError(f"--input-shape says batch {batches.pop()} but --batch is {args.batch}")
            args.batch = batches.pop()
        net.set_input_shapes(shapes)
    try:   # the warnings shape inference finds, shown before the command's own output
        net.analyze(batch=getattr(args, "batch", None) or 1)
    except NetcError:
        pass   # the command reports it (or, as draw does, goes on without shapes)
    for loc, msg in net.graph.graph.get("warnings", []):
        print(f"{plain(str(loc))}: warning: {plain(msg)}", file=sys.stderr)
    return net


def write_output(text: str, path: str | None) -> None:
    """`text` to `path` (checked with check_output first) or stdout."""
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise NetcError(f"cannot write {path}: {e.strerror}") from None
    elif sys.stdout.isatty():       # data on a terminal: no raw escape may act on it
        sys.stdout.write(plain(text, keep="\n\t"))
    else:
        sys.stdout.write(text)


def input_files(args) -> list[Path]:
    """Every file the command reads: the model (when it is a file, not a zoo name), weights,
    inputs, labels, tiles."""
    from ..compiler.network import resolve
    found = []
    try:
        if getattr(args, "model", None):
            found.append(resolve(args.model))
    except NetcError:
        pass
    for attr in ("weights", "labels", "tiles", "source", "for_model"):
        if getattr(args, attr, None):
            found.append(Path(getattr(args, attr)))
    found += [Path(p) for p in (getattr(args, "input", None) or [])]
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):          # hard links and symlinks to the same file
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path, args, *, directory: bool = False, others=()) -> Path:
    """Refuse, before any work, an output that is one of the command's inputs (through links
    too), or another of its outputs; an existing directory where a file goes (or a file where a
    directory goes); a parent directory that does not exist."""
    p = Path(path)
    for src in input_files(args):
        if _same(p, src):
            raise NetcError(f"refusing to write {p}: it is an input of this command "
                            f"({src}); netc never overwrites its inputs")
    for other in others:
        if other is not None and _same(p, Path(other)):
            raise NetcError(f"refusing to write two outputs to {p}")
    if directory:
        if p.exists() and not p.is_dir():
            raise NetcError(f"cannot write into {p}: it is a file, not a directory")
        return p
    if p.is_dir():
        raise NetcError(f"cannot write {p}: it is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise NetcError(f"cannot write {p}: directory {parent} does not exist")
    return p


def save_array(path, array) -> None:
    """`array` as .npy at exactly `path` (np.save would add a suffix to any other name)."""
    import numpy as np
    try:
        with open(path, "wb") as f:
            np.save(f, array, allow_pickle=False)
    except OSError as e:
        raise NetcError(f"cannot write {path}: {e.strerror}") from None


def save_arrays(path, arrays: dict) -> None:
    """Named arrays as an .npz at exactly `path`; any blob name is a key (np.savez would take
    "file" or "allow_pickle" as its own arguments)."""
    import zipfile

    import numpy as np
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, a in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    except OSError as e:
        raise NetcError(f"cannot write {path}: {e.strerror}") from None


def preprocessing_flags(p, command: str):
    """The image preprocessing options run, explain and report share."""
    g = p.add_argument_group(f"image preprocessing (default: what the model's input says; {command} prints what "
                             "it applies)")
    g.add_argument("--mean", help="per-channel mean (104,117,123) in the model's channel order, or a Caffe "
                   "mean.binaryproto file")
    g.add_argument("--std", help="per-channel divisor after the mean (torchvision: 0.229,0.224,0.225 with --pixels 0-1)")
    g.add_argument("--scale", type=float, default=None, help="multiplier after mean and std (Caffe's transform scale)")
    g.add_argument("--pixels", choices=("0-255", "0-1"), default=None, help="pixel range before the mean (0-1: /255)")
    g.add_argument("--channels", choices=("rgb", "bgr"), default=None, help="channel order (Caffe models: bgr)")
    g.add_argument("--resize", help="before the crop: S (shorter side, as torchvision's Resize(256)) or HxW")
    g.add_argument("--crop", choices=("center", "none"), default=None,
                   help="center-crop to the input size (default), or resize straight to it")
