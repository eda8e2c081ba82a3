"""ONNX import: loading cost against `onnx.load` alone, and `netc run` on imported torchvision
models against ONNX Runtime on the same file.

    python bench/onnx_models.py [--iters 20] [--threads 2] [--models resnet18,mobilenet_v2,...] [--write]

The models are torchvision's definitions with seeded random weights, exported by torch.onnx at
224x224 with BatchNorm kept. Loading: median of 5 of `onnx.load(path)` vs `netc.load(path)`
followed by `analyze()` (ResNet-50: a 100 MB file). Running: batch 1, both runtimes with the same
thread count, timed in rotating blocks in one process (ORT with spinning off, as in bench/cpu.py);
medians, and the geometric mean of netc / ORT. --write puts the results under "## ONNX import"
in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

THREADS = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "2"))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import netc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import torchvision_models as tv  # noqa: E402


def median_s(fn, n=5) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def loading(path: Path) -> dict:
    onnx.load(str(path))                                   # warm the page cache for both
    plain = median_s(lambda: onnx.load(str(path)))
    ours = median_s(lambda: netc.load(path).analyze())
    return {"bytes": path.stat().st_size, "onnx_load_s": plain, "netc_s": ours}


def running(path: Path, iters: int) -> dict:
    net = netc.load(path)
    t0 = time.perf_counter()
    ex = net.compile(batch=1)
    compile_s = time.perf_counter() - t0
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"image": x})[0]
    got = ex.run({"image": x})["logits"]
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    runs = {"netc": lambda: ex.run({"image": x}), "onnxruntime": lambda: sess.run(None, {"image": x})}
    times = {k: [] for k in runs}
    rounds = 4
    for fn in runs.values():
        fn(), fn()
    for _ in range(rounds):
        for k, fn in runs.items():
            fn()
            for _ in range(-(-iters // rounds)):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    return {"compile_s": compile_s, "rel_err": err, "median_ms": med,
            "macc": ex.analysis.totals["macc"], "params": ex.analysis.totals["params"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,mobilenet_v3_small,squeezenet1_1,"
                                        "shufflenet_v2_x1_0,efficientnet_b0,densenet121")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    load_avg = os.getloadavg()
    rows, load_row = [], None
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            path = tv.export(tv.build(name), Path(d) / f"{name}.onnx", size=224, dynamic=False)
            if name == "resnet50":
                load_row = loading(path)
                print(f"load {name}: {load_row}", flush=True)
            r = running(path, args.iters)
            r["model"] = name
            rows.append(r)
            print(f"{name}: {r}", flush=True)
    ratios = [r["median_ms"]["netc"] / r["median_ms"]["onnxruntime"] for r in rows]
    lines = ["| model (torchvision, random weights) | MACs | netc ms | ONNX Runtime ms | **netc / ORT** | "
             "rel err vs ORT | compile (s) |", "|---|--:|--:|--:|--:|--:|--:|"]
    for r, q in zip(rows, ratios):
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {r['macc'] / 1e9:.3f} G | {m['netc']:.1f} | {m['onnxruntime']:.1f} | "
                     f"**{q:.2f}** | {r['rel_err']:.1e} | {r['compile_s']:.1f} |")
    geo = float(np.exp(np.mean(np.log(ratios))))
    lines.append(f"| **geometric mean** | | | | **{geo:.2f}** | | |")
    text = (f"{datetime.date.today()}, `python bench/onnx_models.py --iters {args.iters} --threads {args.threads}`: "
            f"{platform.machine()} with {os.cpu_count()} cores, load average {load_avg[0]:.1f} at the start; "
            f"ONNX Runtime {ort.__version__}, onnx {onnx.__version__}.\n\n")
    if load_row:
        text += (f"Loading ResNet-50 ({load_row['bytes'] / 1e6:.0f} MB): `onnx.load` {load_row['onnx_load_s']:.2f} s, "
                 f"`netc.load` + `analyze()` {load_row['netc_s']:.2f} s "
                 f"(**{load_row['netc_s'] / load_row['onnx_load_s']:.2f}x** reading alone); medians of 5.\n\n")
    text += ("Batch 1 at 224x224, fp32, the same file in both, medians of "
             f"{args.iters} runs in rotating blocks (compile: `Network.compile`, near zero once netc's on-disk "
             "kernel cache holds the model's kernels):\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.write:
        from benchmarks_md import write_section
        write_section("ONNX import (`bench/onnx_models.py`)", text)


if __name__ == "__main__":
    main()
