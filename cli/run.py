"""`netc run | bench | build | weights`: argument handling and printing around the Python API
(runtime/: Executable, runtime/bench.py)."""
from __future__ import annotations

import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np

from ..compiler.errors import NetcError
from ..compiler.layers.base import fmt_shape
from ..compiler.report import plain
from ..runtime.images import IMAGENET_CLASSES, imagenet_classes  # noqa: F401 -- explain reads them here
from .common import check_output, load_model as _load, save_array, save_arrays


def _input_source(net, ex):
    name = ex.required_inputs[0]
    n, _ = ex.inputs[name]
    return name, net.graph.nodes[n]["attrs"]


def _read_input(args, net) -> np.ndarray | None:
    paths = args.input or []
    if not paths:
        return None
    from ..runtime.files import regular_file
    for p in paths:
        regular_file(Path(p), "input" if p.endswith(".npy") else "image")
    if len(paths) == 1 and paths[0].endswith(".npy"):
        return read_npy(Path(paths[0]))
    if any(p.endswith(".npy") for p in paths):
        raise NetcError("give either one .npy file or image files to --input")
    return paths  # images: read once the input shape is known


def _numbers(text: str, what: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise NetcError(f"--{what} takes comma-separated numbers (e.g. 104,117,123), got {text!r}") from None
    if not all(np.isfinite(values)):
        raise NetcError(f"--{what} values must be finite, got {text!r}")
    return values


def preprocessing(args, attrs: dict):
    """The model input's preprocessing with the command line's changes."""
    import dataclasses
    from ..runtime.images import Preprocess
    prep = Preprocess.of(attrs)
    change = {}
    if args.mean:
        if Path(args.mean).suffix == ".binaryproto" or Path(args.mean).is_file():
            from ..runtime.caffemodel import read_mean_file
            change.update(mean_image=read_mean_file(Path(args.mean)), mean=(0.0,))
        else:
            change.update(mean=_numbers(args.mean, "mean"), mean_image=None)
    if args.std:
        std = _numbers(args.std, "std")
        if any(v <= 0 for v in std):
            raise NetcError(f"--std values must be positive, got {args.std!r}")
        change["std"] = std
    if args.scale is not None:
        change["scale"] = args.scale
    if args.pixels:
        change["pixel_scale"] = 1 / 255 if args.pixels == "0-1" else 1.0
    if args.channels:
        change["color_order"] = args.channels.upper()
    if args.crop:
        change["crop"] = args.crop == "center"
    if args.resize:
        r = args.resize.lower().split("x")
        if not all(v.isdigit() and 0 < int(v) < 1 << 16 for v in r) or len(r) > 2:
            raise NetcError(f"--resize takes S or HxW (positive sizes), got {args.resize!r}")
        change["resize"] = int(r[0]) if len(r) == 1 else (int(r[0]), int(r[1]))
    return dataclasses.replace(prep, **change)


def read_npy(path: Path) -> np.ndarray:
    """A floating-point array from an .npy file whose header is checked first: at least one
    dimension, and no more data declared than the file holds (a small file can declare 112 GiB)."""
    shown = path
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            start = f.tell()
        if dtype.hasobject:
            raise NetcError(f"{shown} holds Python objects; expected floating point")
        need = math.prod(shape) * dtype.itemsize
        if need > path.stat().st_size - start:
            raise NetcError(f"{shown} declares {fmt_shape(shape)} {dtype} ({need:,} bytes) but holds "
                            f"{path.stat().st_size - start:,} bytes of data")
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise NetcError(f"cannot read {shown}: {e}") from None
    if x.ndim == 0:
        raise NetcError(f"{shown} holds a single number; expected an array shaped like the network input")
    if x.dtype.kind != "f":
        raise NetcError(f"{shown} holds {x.dtype}; expected floating point")
    return x


MAX_LABELS_BYTES = 16 << 20


def read_labels(path: str) -> list[str]:
    """Class names, one per line, read (and checked) before anything is compiled."""
    from ..runtime.files import regular_file
    p = regular_file(Path(path), "labels")
    if p.stat().st_size > MAX_LABELS_BYTES:
        raise NetcError(f"labels file {path} is {p.stat().st_size:,} bytes; netc reads up to {MAX_LABELS_BYTES:,}")
    try:
        return p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise NetcError(f"labels file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise NetcError(f"cannot read labels {path}: {e.strerror}") from None


def _target(args) -> str:
    """"cuda" with --gpu, else "cpu"; refuses --tune without --gpu and, with it, says up front
    that compiling waits on timing (the first tuning on a GPU takes a while)."""
    if getattr(args, "tune", False):
        if not getattr(args, "gpu", False):
            raise NetcError("--tune times GEMM tiles on the GPU: use it with --gpu")
        print("autotune: timing the GEMM layers' tiles on this GPU (compiled and timed once per GPU model "
              "and layer shape, then read from the cache)", file=sys.stderr)
    return "cuda" if getattr(args, "gpu", False) else "cpu"


def _print_tune_report(ex, f) -> None:
    """What the autotuner chose (runtime/autotune.py): one line per GEMM problem whose tile
    differs from the default, then a total."""
    rows = ex.tune_report
    if not rows:
        return
    for r in rows:
        if r["tile"] != r["default"]:
            gain = f"{r['default_ms'] / r['ms']:.2f}x" if r["ms"] and r["default_ms"] else "-"
            print(f"autotune: {plain(', '.join(r['layers'][:3]))}{' ...' if len(r['layers']) > 3 else ''}: "
                  f"tile {r['tile']} instead of {r['default']} ({gain} faster)", file=f)
    timed = sum(r["measured"] for r in rows)
    print(f"autotune: {len(rows)} GEMM problem(s), {timed} timed now, {len(rows) - timed} from the cache; "
          f"{sum(r['tile'] != r['default'] for r in rows)} not on the default tile", file=f)


def run_command(args) -> int:
    for flag in ("recursive", "resume", "ray", "actors"):
        if getattr(args, flag) not in (None, False):
            raise NetcError(f"--{flag} is for a folder of images: --input DIR/")
    if bool(args.blobs) != bool(args.blobs_out):
        raise NetcError("--blobs and --blobs-out go together: --blobs a,b --blobs-out blobs.npz")
    if args.labels and not args.top:
        raise NetcError("--labels is used with --top K")
    if args.output:
        check_output(args.output, args, others=[args.blobs_out])
    if args.blobs_out:
        check_output(args.blobs_out, args)
    labels = read_labels(args.labels) if args.labels else None
    net = _load(args)
    x = _read_input(args, net)
    batch = args.batch
    if isinstance(x, np.ndarray):
        if batch is not None and x.shape[0] != batch:
            raise NetcError(f"--batch {batch} but the input holds {x.shape[0]} item(s)")
        batch = x.shape[0]
    elif isinstance(x, list):
        batch = len(x)
    blobs = [b for b in (args.blobs or "").split(",") if b]
    ex = net.compile(_target(args), weights=args.weights, batch=batch or 1, seed=args.seed, blobs=blobs,
                     tune=args.tune)
    _print_tune_report(ex, sys.stderr)
    for note in net.graph.graph.get("weight_notes", []):
        print(f"note: {plain(note)}", file=sys.stderr)
    if len(ex.required_inputs) != 1 and x is not None:
        raise NetcError(f"this network has {len(ex.required_inputs)} inputs; --input feeds one")
    feeds = {}
    for k, name in enumerate(ex.required_inputs):
        shape = ex.input_shape(name)
        if x is None:
            feeds[name] = np.random.default_rng(args.seed + 1 + k).standard_normal(shape).astype(np.float32)
            print(f"note: no --input; feeding random values to \"{plain(name)}\" {fmt_shape(shape)}", file=sys.stderr)
        elif isinstance(x, list):
            from ..runtime.images import load_images
            prep = preprocessing(args, _input_source(net, ex)[1])
            feeds[name] = load_images(x, shape, prep)        # checks the shape describe() reads
            print(f"note: preprocessing: {prep.describe(shape)}", file=sys.stderr)
        else:
            feeds[name] = x
    got = ex.run(feeds, blobs)
    out_name = ex.outputs[-1]
    y = got[out_name]
    if args.output:
        save_array(args.output, y)
    if blobs:
        save_arrays(args.blobs_out, {b: got[b] for b in blobs})
    if args.top:
        scores = y.reshape(y.shape[0], -1)
        if labels is None and scores.shape[1] == IMAGENET_CLASSES:
            labels = imagenet_classes()       # a 1000-class output: ImageNet's classes, in their order
        if args.weights is None and net.graph.graph.get("weights") is None:
            print(f"note: random weights (seed {args.seed}): these scores mean nothing; "
                  f"--weights FILE runs a trained network")
        softmax = net.graph.nodes[ex.blob_key[out_name][0]]["type"] == "Softmax"
        kind = "probability" if softmax else "score (raw, no Softmax)"
        for item in range(scores.shape[0]):
            if scores.shape[0] > 1:
                print(f"item {item}:")
            print(f"  rank  class  {kind:<12}  name")
            for rank, idx in enumerate(np.argsort(-scores[item], kind="stable")[:args.top], 1):
                label = labels[idx] if labels and idx < len(labels) else ""
                print(f"  {rank:>4}  {idx:>5}  {scores[item, idx]:<12.6f}  {plain(label)}")
    else:
        print(f'{plain(out_name)}: {fmt_shape(y.shape)}  min {y.min():.6g}  max {y.max():.6g}  mean {y.mean():.6g}')
    if args.profile:
        _print_profile(ex.profile(feeds, repeat=5), sys.stdout)
        print(f"(median of 5 passes: {ex.profile_totals['pass'] * 1e3:.3f} ms)")
    return 0


def _print_profile(rows, f, limit=None) -> None:
    total = sum(r["seconds"] for r in rows) or 1e-30
    shown = sorted(rows, key=lambda r: -r["seconds"])[:limit] if limit else rows
    w = max([len(plain(r["name"])) for r in shown] + [5])
    print(f"{'layer':<{w}}  {'type':<20} {'ms':>8} {'share':>6} {'GFLOP/s':>8}  fused", file=f)
    for r in shown:
        gf = r["flops"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
        print(f"{plain(r['name']):<{w}}  {r['type']:<20} {r['seconds'] * 1e3:8.3f} {r['seconds'] / total:6.1%} "
              f"{gf:8.1f}  {plain('+'.join(r['layers'][1:]))}", file=f)
    print(f"{'total':<{w}}  {'':<20} {total * 1e3:8.3f}", file=f)


def bench_command(args) -> int:
    if args.iters < 1 or args.batch < 1:
        raise NetcError("--iters and --batch must be positive")
    from ..runtime.bench import bench
    target = _target(args)
    r = bench(_load(args), args.batch, args.iters, target=target, tune=args.tune,
              report_tuning=_print_tune_report)
    if args.format == "json":
        print(json.dumps(r, indent=2))
        return 0
    where = "CPU, numba + numpy sgemm" if r["target"] == "cpu" else "CUDA, numba-cuda kernels"
    print(f"{plain(r['network'])}  batch {r['batch']}  {r['iters']} iterations ({where})")
    print(f"  latency   median {r['median_ms']:.2f} ms  (p10 {r['p10_ms']:.2f}, p90 {r['p90_ms']:.2f}, "
          f"min {r['min_ms']:.2f})")
    print(f"  throughput {r['images_per_s']:.1f} images/s   {r['gflops']:.1f} GFLOP/s "
          f"({r['gflop']:.2f} GFLOP per pass)")
    if r["sgemm_peak_gflops"]:
        print(f"  sgemm 2048^3 on this machine: {r['sgemm_peak_gflops']:.1f} GFLOP/s -> "
              f"{r['fraction_of_sgemm_peak']:.1%} of it")
    print(f"  arena {r['arena_bytes'] / 2**20:.2f} MiB (plan peak {r['peak_activation_bytes'] / 2**20:.2f} MiB)")
    threads = f"; sgemm on {r['sgemm_threads']} thread(s)" if r["sgemm_threads"] else ""
    if r["loaded"]:
        print(f"  LOADED MACHINE: other programs kept {r['other_programs_cores']:.1f} of {r['cores']} cores busy "
              f"during the timing{threads}. These are not quiet-machine figures.", file=sys.stderr)
    else:
        print(f"  machine quiet: other programs used {r['other_programs_cores']:.2f} of {r['cores']} cores{threads}")
    print(f"  slowest layers (the steps add up to {r['profile_steps_ms']:.2f} ms; a profiled pass took "
          f"{r['profile_pass_ms']:.2f} ms):")
    for s in r["slowest"]:
        fused = f"  (+{plain('+'.join(s['fused']))})" if s["fused"] else ""
        print(f"    {plain(s['layer']):<32} {s['type']:<20} {s['ms']:8.3f} ms {s['gflops']:8.1f} GFLOP/s{fused}")
    return 0


def build_command(args) -> int:
    if args.target == "cuda":
        return build_cuda(args)
    if args.tiles:
        raise NetcError("--tiles chooses GEMM tiles of the CUDA target: use it with --target cuda")
    from ..compiler.codegen.lowering import Namespace
    from ..runtime.executor import generate
    net = _load(args)
    prog, _ = generate(net, batch=args.batch)
    out = check_output(args.output, args, directory=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (Namespace().create("net_", net.name or "model") + ".py")
    path.write_text(prog.source, encoding="utf-8")
    kernels = prog.source.count("@nb.njit")
    print(f"wrote {path}: {kernels} kernels, {len(prog.steps)} steps, "
          f"scratch {prog.scratch * 4} bytes (batch {args.batch})")
    return 0


def weights_command(args) -> int:
    from ..runtime.weights import expected, optional
    if args.model == "convert":
        return convert_weights(args)
    if args.source or args.output:
        raise NetcError("netc weights MODEL lists a model's weight keys; to convert, netc weights convert SRC -o DST")
    net = _load(args)
    net.analyze(batch=1)
    keys = expected(net.graph)
    w = max([len(plain(k)) for k in keys] + [3])
    total = 0
    for k, s in keys.items():
        n = int(np.prod(s))
        total += n
        print(f"{plain(k):<{w}}  {fmt_shape(s):<22} {n:>12,}")
    print(f"{len(keys)} keys, {total:,} values (float32, {total * 4:,} bytes)")
    opt = optional(net.graph)
    if opt:
        print(f"optional: {len(opt)} BatchNorm moving_average_factor keys, shape [1] (Caffe's scale on mean/var)")
    return 0


def convert_weights(args) -> int:
    """caffemodel -> npz (exact with --model; else keyed by each layer's type), npz (or a
    caffemodel) -> caffemodel for --model's layers, or an ONNX file's initializers -> either."""
    from ..compiler.layers import lookup, REGISTRY
    from ..compiler.network import load
    from ..runtime import caffemodel
    from ..runtime.files import regular_file
    from ..runtime.weights import load as load_weights
    if not args.source or not args.output:
        raise NetcError("netc weights convert SRC -o DST (.caffemodel to .npz, or .npz to .caffemodel with --model)")
    src, dst = Path(args.source), Path(args.output)
    regular_file(src, "weights")
    check_output(args.output, args)
    to_caffe = dst.suffix.lower() == ".caffemodel"
    if not to_caffe and dst.suffix.lower() != ".npz":
        raise NetcError(f"cannot tell what to write from {dst.name}: name it .npz or .caffemodel")
    net = None
    if src.suffix.lower() == ".onnx":      # its weights belong to its own graph
        if args.for_model:
            raise NetcError(f"{src.name} carries its own graph: drop --model")
        args.for_model = str(src)
    if args.for_model:
        net = load(args.for_model)
        net.analyze()
    if to_caffe:
        if net is None:
            raise NetcError("writing a .caffemodel needs --model MODEL: Caffe files carry each layer's type")
        w = dict(net.graph.graph["weights"]) if src.suffix.lower() == ".onnx" else load_weights(net.graph, str(src))
        layers = []
        for n in net.graph.nodes:
            d = net.graph.nodes[n]
            layer = REGISTRY[d["type"]]
            spare = {k: np.ones(shape, np.float32) for k, shape in layer.optional_blobs(d["attrs"]).items()}
            blobs = [w.get(f"{n}.{k}", spare.get(k)) for k in layer.caffe_blobs(d["attrs"])
                     if f"{n}.{k}" in w or k in spare]     # Caffe's BatchNorm keeps its factor (1) in place
            if blobs:
                layers.append((n, d["type"], blobs))
        caffemodel.write(dst, net.name, layers)
        print(f"wrote {plain(str(dst))}: {len(layers)} layers, {sum(b.size for _, _, bs in layers for b in bs):,} values")
        return 0
    if src.suffix.lower() == ".onnx":
        w = dict(net.graph.graph["weights"])
    elif net is not None:
        w = load_weights(net.graph, str(src))
        for note in net.graph.graph.get("weight_notes", []):
            print(f"note: {plain(note)}", file=sys.stderr)
    else:
        _, layers = caffemodel.read_layers(src)
        w = {}
        for layer in layers:
            try:
                names = lookup(layer.type, None).caffe_blobs({})
            except NetcError:
                names = [f"blob{j}" for j in range(len(layer.blobs))]
            if len(layer.blobs) > len(names):
                names = names + [f"blob{j}" for j in range(len(names), len(layer.blobs))]
            for name, ref in zip(names, layer.blobs):
                w[f"{layer.name}.{name}"] = caffemodel.load_blob(src, ref)
        print("note: keys follow each layer's type; give --model MODEL to check them against the model "
              "(a two-input Scale keeps only its bias)", file=sys.stderr)
    save_arrays(args.output, w)
    print(f"wrote {plain(str(dst))}: {len(w)} arrays, {sum(a.size for a in w.values()):,} values")
    return 0


def build_cuda(args) -> int:
    """DIR/<net>.py (the generated kernel module), DIR/ptx/<kernel>.ptx per kernel for --arch,
    DIR/manifest.json: per step its layers and launches, per kernel its PTX file and, when
    ptxas is installed, registers / shared memory / spills from `ptxas -v` (and with nvdisasm the
    main loop's instruction mix: ptx.main_loop_mix). Kernels compile in
    --jobs processes (NVVM takes seconds per GEMM kernel). --tiles: the GEMM tiles a `--tune` run
    chose on a GPU (its cache file), for a build made without that GPU."""
    import re
    from ..compiler.codegen.lowering import Namespace
    from ..compiler.codegen.ptx import nvdisasm_path, ptxas_path
    from ..runtime.cuda_device import numba_cuda
    from ..runtime.cuda_executor import cuda_lower
    from ..runtime.executor import generate
    from ..runtime.kernel_pool import compile_ptx_many
    from ..runtime.cuda_device import simulator
    numba_cuda()
    if simulator():
        raise NetcError("netc build --target cuda compiles PTX with NVVM, which the CUDA simulator "
                        "replaces: unset NUMBA_ENABLE_CUDASIM to build (no GPU is needed); the simulator "
                        "runs kernels (netc run --gpu) but compiles none")
    m = re.fullmatch(r"sm_(\d+)(\d)", args.arch)
    if not m or not (5, 0) <= (int(m.group(1)), int(m.group(2))) <= (12, 9):
        raise NetcError(f'bad --arch "{args.arch}": expected sm_XY of a CUDA GPU, e.g. sm_80 or sm_90')
    cc = (int(m.group(1)), int(m.group(2)))
    if args.jobs is not None and args.jobs < 1:
        raise NetcError(f"--jobs {args.jobs}: expected at least 1")
    net = _load(args)
    tiles, tuned = None, None
    if args.tiles:
        from ..runtime.autotune import tiles_from_file
        device, tiles, stale = tiles_from_file(args.tiles)
        tuned = {"file": str(args.tiles), "device": device, "stale": stale}
        if stale:
            print(f"warning: {args.tiles} was tuned with another version of the kernel generator; "
                  "its tiles still apply, its timings may not", file=sys.stderr)
    prog, _ = generate(net, batch=args.batch, target_lower=partial(cuda_lower, tiles=tiles))
    if tuned is not None:
        tuned["layers_tuned"] = sum(len(v) for k, v in prog.gemm_problems.items() if k in tiles)
        tuned["gemm_layers"] = sum(len(v) for v in prog.gemm_problems.values())
        print(f"tiles from {args.tiles} ({plain(tuned['device'])}): {tuned['layers_tuned']} of "
              f"{tuned['gemm_layers']} GEMM layers tuned, the rest on the default tile", file=sys.stderr)
    out = check_output(args.output, args, directory=True)
    (out / "ptx").mkdir(parents=True, exist_ok=True)
    path = out / (Namespace().create("net_", net.name or "model") + ".py")
    path.write_text(prog.source, encoding="utf-8")
    has_ptxas = ptxas_path() is not None
    kernels = {}
    built = compile_ptx_many(list(prog.kernels.items()), cc, args.arch if has_ptxas else None, args.jobs,
                             loop_mix=nvdisasm_path() is not None)
    for name, (ptx, report) in zip(prog.kernels, built):
        (out / "ptx" / f"{name}.ptx").write_text(ptx, encoding="utf-8")
        kernels[name] = {"ptx": f"ptx/{name}.ptx", **({"ptxas": report} if has_ptxas else {})}
    steps = [{"layers": s.layers, "type": s.type,
              "launches": [{"kernel": l.kernel, "grid": list(l.grid), "block": list(l.block),
                            "shared_bytes": l.shared_bytes} for l in s.launches]} for s in prog.steps]
    share = _ffma_share(net.graph, prog.steps, kernels)
    manifest = {"network": net.name, "batch": args.batch, "arch": args.arch, "module": path.name,
                "arena_bytes": prog.arena * 4, "param_bytes": int(prog.params.nbytes),
                "ptxas": has_ptxas, "gemm_ffma_share": share, "tiles": tuned, "kernels": kernels, "steps": steps}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    spills = sum(k["ptxas"]["spill_stores"] + k["ptxas"]["spill_loads"] for k in kernels.values() if "ptxas" in k)
    print(f"wrote {path}, {len(kernels)} PTX files ({args.arch}) and manifest.json: "
          f"{sum(len(s.launches) for s in prog.steps)} launches in {len(prog.steps)} steps"
          + (f", {spills} bytes of spills" if has_ptxas else " (ptxas not found: no register counts)")
          + (f"; GEMM k loops {share:.0%} FFMA (weighted by multiply-adds)" if share is not None else ""))
    return 0


def _ffma_share(g, steps, kernels: dict) -> float | None:
    """FFMA / instructions of the GEMM kernels' main loops (ptx.main_loop_mix), weighted by
    their steps' multiply-adds: the bound on the share of FP32 peak the network's GEMMs can issue
    at. None without nvdisasm or without GEMM kernels."""
    num = den = 0.0
    for s in steps:
        macc = sum(g.nodes[n]["ops"].macc for n in s.layers)
        for l in s.launches:
            loop = kernels[l.kernel].get("ptxas", {}).get("main_loop")
            if loop and loop["ffma"] and macc:
                num += macc * loop["ffma"] / loop["instructions"]
                den += macc
    return num / den if den else None
