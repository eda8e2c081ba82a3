"""netc's CPU target vs ONNX Runtime and PyTorch eager, batch 1, same weights, one process.

    python bench/cpu.py [--iters 20] [--threads 2] [--models alexnet,vgg-16,...] [--no-start] [--write]

All three run with the same number of threads (default 2) in short blocks, rotated (A B C A B C
...: interleaving single iterations lets one runtime's thread pool starve the next); medians are
reported, and the geometric mean of netc / ONNX Runtime over the models is the figure the CPU
target is judged by. With --threads 1 the times are CPU seconds of the process, which other jobs
on a shared machine barely disturb (wall clock is what counts, on a quiet machine).
Cold start (`netc run vgg16` in a fresh process with an empty NETC_CACHE) and warm start (the
same command again, same cache) are timed as wall clock of the subprocess. --write puts the
results under "## CPU execution" in BENCHMARKS.md (replacing that section, leaving the others).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _threads_from_argv(argv) -> int:
    """--threads, read before numpy is imported: OpenBLAS and numba size their pools on load."""
    for k, a in enumerate(argv):
        if a.startswith("--threads"):
            return int(a.split("=", 1)[1] if "=" in a else argv[k + 1])
    return 2


THREADS = _threads_from_argv(sys.argv)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
# netc's numba loops follow netc's own policy (runtime/threads.py: one thread on <= 2 cores,
# OpenBLAS owns the cores), so what is measured is what `netc run` does.

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import netc  # noqa: E402
from netc.runtime.bench import measure_sgemm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _find_refs() -> Path:
    """The Caffe reference files: $NETC_REFS, else shared/refs/caffe (or refs/caffe) in a folder
    above this file, as tests/conftest.py finds them."""
    if os.environ.get("NETC_REFS"):
        return Path(os.environ["NETC_REFS"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        for cand in (parent / "shared" / "refs" / "caffe", parent / "refs" / "caffe"):
            if cand.is_dir():
                return cand
    return ROOT.parent / "shared" / "refs" / "caffe"


REFS = _find_refs()


class TorchNet(torch.nn.Module):
    """The IR walked with torch ops: what PyTorch eager does for the same network."""

    def __init__(self, net, weights):
        super().__init__()
        self.g = net.graph
        self.order = [n for n in self.g.nodes if self.g.nodes[n]["forward"]]
        self.w = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}

    def forward(self, x):
        out = {}
        for n in self.order:
            d = self.g.nodes[n]
            t, a = d["type"], d["attrs"]
            xs = [out[s] for s in d["inputs"]]
            p = lambda k: self.w[f"{n}.{k}"]  # noqa: E731
            if t in ("Input", "Data"):
                ys = [x] + [torch.zeros(s) for s in d["shapes"][1:]]
            elif t == "Convolution":
                ys = [F.conv2d(xs[0], p("weight"), p("bias") if a["bias_term"] else None, a["stride"], a["pad"],
                               a["dilation"], a["group"])]
            elif t == "InnerProduct":
                ys = [F.linear(xs[0].flatten(1), p("weight"), p("bias") if a["bias_term"] else None)]
            elif t == "Pooling":
                k, s, pd = (xs[0].shape[2:], 1, 0) if a["global_pooling"] else (a["kernel"], a["stride"], a["pad"])
                ceil = a["round_mode"] == "CEIL"
                ys = [F.max_pool2d(xs[0], k, s, pd, ceil_mode=ceil) if a["pool"] == "MAX"
                      else F.avg_pool2d(xs[0], k, s, pd, ceil_mode=ceil)]
            elif t == "LRN":
                ys = [F.local_response_norm(xs[0], a["local_size"], a["alpha"], a["beta"], a["k"])]
            elif t == "ReLU":
                ys = [F.relu(xs[0])]
            elif t == "Dropout":
                ys = [xs[0]]
            elif t == "BatchNorm":
                ys = [F.batch_norm(xs[0], p("mean"), p("var"), None, None, False, 0.0, a["eps"])]
            elif t == "Scale":
                c = xs[0].shape[1]
                ys = [xs[0] * p("weight").view(1, c, 1, 1) + (p("bias").view(1, c, 1, 1) if a["bias_term"] else 0)]
            elif t == "Eltwise":
                ys = [sum(xs)]
            elif t == "Concat":
                ys = [torch.cat(xs, a["axis"])]
            elif t == "Softmax":
                ys = [F.softmax(xs[0], a["axis"])]
            else:
                raise NotImplementedError(t)
            for port, y in enumerate(ys):
                out[(n, port)] = y
        return out[(self.order[-1], 0)]


def onnx_session(model, x):
    try:
        import onnxruntime as ort
        f = io.BytesIO()
        torch.onnx.export(model, (torch.from_numpy(x),), f, dynamo=False, input_names=["x"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning starves the others
        return ort.InferenceSession(f.getvalue(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # optional comparison: any missing piece just drops the column
        print(f"  (onnxruntime skipped: {type(e).__name__}: {str(e)[:120]})")
        return None


def bench_model(name: str, iters: int, clock=time.perf_counter) -> dict:
    net = netc.load(REFS / f"{name}.prototxt")
    t0 = time.perf_counter()
    ex = net.compile(batch=1)
    compile_s = time.perf_counter() - t0
    feed = ex.required_inputs[0]
    x = np.random.default_rng(0).standard_normal(ex.input_shape(feed)).astype(np.float32)
    tnet = TorchNet(net, ex.weights).eval()
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ref = tnet(xt).numpy()
    y = ex(x)
    err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    sess = onnx_session(tnet, x)
    runs = {"netc": lambda: ex.run({feed: x}), "torch": lambda: tnet(xt)}
    if sess is not None:
        runs["onnxruntime"] = lambda: sess.run(None, {"x": x})
    times = {k: [] for k in runs}
    rounds = 4  # blocks of iters / 4, rotated, so drift in the machine's load hits all
    with torch.inference_mode():
        for fn in runs.values():
            fn(), fn()
        for _ in range(rounds):
            for k, fn in runs.items():
                fn()
                for _ in range(-(-iters // rounds)):
                    t = clock()
                    fn()
                    times[k].append(clock() - t)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    spread = {k: (float(np.percentile(v, 10)) * 1e3, float(np.percentile(v, 90)) * 1e3) for k, v in times.items()}
    flops = ex.analysis.totals["flops"]
    return {"model": name, "compile_s": compile_s, "rel_err": err, "median_ms": med, "spread": spread,
            "gflops": flops / med["netc"] / 1e6, "arena": ex.arena_bytes, "peak": ex.peak_bytes}


def busy_processes(count: int) -> list:
    """`count` processes spinning on a core each, as other programs on a shared machine do."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def side_by_side(name: str, batch: int, iters: int, busy: int = 0) -> dict:
    """netc and ONNX Runtime on one network at `batch` (same weights and input), rotated in
    blocks, with `busy` spinning processes beside them: ms per run and images/s."""
    net = netc.load(REFS / f"{name}.prototxt")
    ex = net.compile(batch=batch)
    feed = ex.required_inputs[0]
    x = np.random.default_rng(0).standard_normal(ex.input_shape(feed)).astype(np.float32)
    sess = onnx_session(TorchNet(net, ex.weights).eval(), x)
    y, ref = ex(x), sess.run(None, {"x": x})[0]
    err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    runs = {"netc": lambda: ex.run({feed: x}), "onnxruntime": lambda: sess.run(None, {"x": x})}
    times = {k: [] for k in runs}
    spinners = busy_processes(busy)
    try:
        load = os.getloadavg()[0]
        for fn in runs.values():   # with busy processes, 3 s of each first: a machine loaded for a while
            until = time.perf_counter() + (3.0 if busy else 0.0)
            fn()
            while time.perf_counter() < until:
                fn()
        for _ in range(4):
            for k, fn in runs.items():
                for _ in range(-(-iters // 4)):
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
    finally:
        for sp in spinners:
            sp.kill()
            sp.wait()
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    return {"model": name, "batch": batch, "busy": busy, "median_ms": med, "rel_err": err, "load": load,
            "images_per_s": {k: batch * 1e3 / m for k, m in med.items()}}


def side_by_side_alone(name: str, batch: int, iters: int, busy: int = 0) -> dict:
    """side_by_side in a fresh process holding only netc and ONNX Runtime. In this one, torch's
    OpenMP pool (from the batch-1 table) and every earlier model's runtimes are still around:
    beside two busy processes netc's SqueezeNet passes took 33-253 ms here on one sgemm thread,
    18-37 ms in a fresh process (ORT 27 vs 15-25 ms); the cause was not pinned down."""
    out = subprocess.run([sys.executable, __file__, "--threads", str(THREADS), "--side-by-side",
                          json.dumps([name, batch, iters, busy])], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"side-by-side run of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loaded_table(quiet: list, loaded: list) -> str:
    """Batch-1 latency with and without busy processes, and the goal: netc/ORT under load at
    most 1.2x its quiet value."""
    lines = ["| model | netc quiet ms | netc loaded ms | ORT quiet ms | ORT loaded ms | netc slowdown | "
             "ORT slowdown | netc/ORT quiet | netc/ORT loaded | loaded / quiet ratio |", "|---|" + "--:|" * 9]
    for q, b in zip(quiet, loaded):
        qn, qo, bn, bo = q["median_ms"]["netc"], q["median_ms"]["onnxruntime"], b["median_ms"]["netc"], \
            b["median_ms"]["onnxruntime"]
        lines.append(f"| {q['model']} | {qn:.1f} | {bn:.1f} | {qo:.1f} | {bo:.1f} | {bn / qn:.2f}x | {bo / qo:.2f}x | "
                     f"{qn / qo:.2f} | {bn / bo:.2f} | **{(bn / bo) / (qn / qo):.2f}** |")
    return "\n".join(lines)


def batch_table(rows: list) -> str:
    lines = ["| model | batch | netc ms | ORT ms | netc images/s | ORT images/s | **netc / ORT throughput** | "
             "rel err vs ORT |", "|---|" + "--:|" * 7]
    for r in rows:
        m, ips = r["median_ms"], r["images_per_s"]
        lines.append(f"| {r['model']} | {r['batch']} | {m['netc']:.1f} | {m['onnxruntime']:.1f} | "
                     f"{ips['netc']:.1f} | {ips['onnxruntime']:.1f} | "
                     f"**{ips['netc'] / ips['onnxruntime']:.2f}** | {r['rel_err']:.1e} |")
    return "\n".join(lines)


def ratio(r, other: str) -> float | None:
    m = r["median_ms"]
    return m["netc"] / m[other] if other in m else None


def geomean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.exp(np.mean(np.log(xs)))) if xs else None


def table(results, peak) -> str:
    cols = ["netc", "onnxruntime", "torch"]
    head = "| model | " + " | ".join(f"{c} ms (p10-p90)" for c in cols) + " | **netc / ORT** | netc / torch | " \
        "netc GFLOP/s (% sgemm) | rel err vs torch | arena = plan peak (MiB) | first compile (s) |"
    lines = [head, "|---|" + "--:|" * (len(cols) + 6)]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    for r in results:
        m, s = r["median_ms"], r["spread"]
        cells = [f"{m[c]:.1f} ({s[c][0]:.0f}-{s[c][1]:.0f})" if c in m else "-" for c in cols]
        same = "yes" if r["arena"] == r["peak"] else f"{r['arena'] / r['peak']:.2f}x"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | **{fmt(ratio(r, 'onnxruntime'))}** | "
                     f"{fmt(ratio(r, 'torch'))} | {r['gflops']:.0f} ({r['gflops'] / peak:.0%}) | {r['rel_err']:.1e} | "
                     f"{r['peak'] / 2**20:.1f} ({same}) | {r['compile_s']:.1f} |")
    if len(results) > 1:
        lines.append(f"| **geometric mean** | | | | **{fmt(geomean(ratio(r, 'onnxruntime') for r in results))}** | "
                     f"{fmt(geomean(ratio(r, 'torch') for r in results))} | | | | |")
    return "\n".join(lines)


def start_times(model: str = "vgg16") -> dict:
    """Wall seconds of `netc run MODEL` as a fresh process: with an empty compile cache (cold:
    numba compiles every kernel) and again with the cache that run left (warm)."""
    cmd = [sys.executable, "-m", "netc.cli", "run", model]
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NETC_CACHE=cache)
        for kind in ("cold", "warm"):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            out[kind] = time.perf_counter() - t
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--models", default="alexnet,vgg-16,resnet-50,googlenet,squeezenet_v11")
    ap.add_argument("--no-start", action="store_true", help="skip the cold/warm start runs")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for every runtime; with 1, times are the process's CPU seconds, "
                         "which other jobs on a shared machine barely disturb")
    ap.add_argument("--busy", type=int, default=0,
                    help="also time batch 1 with this many spinning processes beside netc and ORT")
    ap.add_argument("--batches", default="", help="also batch throughput at these sizes, e.g. 8,32")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--side-by-side", help=argparse.SUPPRESS)   # [model, batch, iters, busy]: one child run
    args = ap.parse_args()
    if args.side_by_side:
        print(json.dumps(side_by_side(*json.loads(args.side_by_side))))
        return
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    peak_before = measure_sgemm()
    results = []
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        results.append(bench_model(name, args.iters, clock))
        print(table(results[-1:], peak_before))
    peak = max(peak_before, measure_sgemm())
    body = table(results, peak)
    names = args.models.split(",")
    if args.busy:
        quiet = [side_by_side_alone(name, 1, args.iters) for name in names]
        loaded = [side_by_side_alone(name, 1, args.iters, args.busy) for name in names]
        body += (f"\n\nEach model in a fresh process holding netc and ONNX Runtime only. With {args.busy} busy processes (`python -c \"while True: pass\"`) beside them, "
                 f"batch 1, netc and ONNX Runtime only, quiet and loaded runs back to back (load average "
                 f"{loaded[0]['load']:.1f}-{max(r['load'] for r in loaded):.1f} while loaded):\n\n"
                 + loaded_table(quiet, loaded))
        print(loaded_table(quiet, loaded), flush=True)
    if args.batches:
        rows = [side_by_side_alone(name, int(b), max(4, args.iters // int(b) * 2))
                for name in names for b in args.batches.split(",")]
        body += "\n\nBatch throughput, netc and ONNX Runtime only:\n\n" + batch_table(rows)
        print(batch_table(rows), flush=True)
    if not args.no_start:
        st = start_times()
        print(f"start: cold {st['cold']:.1f} s, warm {st['warm']:.1f} s", flush=True)
        body += (f"\n\n`netc run vgg16` as a fresh process (wall clock, random input): cold start (empty "
                 f"NETC_CACHE) {st['cold']:.1f} s, warm start (second run, same cache) {st['warm']:.1f} s.")
    import onnxruntime
    what = "CPU seconds per run (`time.process_time`)" if args.threads == 1 else "wall-clock ms per run"
    text = (f"{datetime.date.today()}, `python bench/cpu.py --iters {args.iters} --threads {args.threads}`: "
            f"batch 1, fp32, {platform.machine()} with {os.cpu_count()} cores, {args.threads} thread(s) for "
            f"each runtime; {what}. ONNX Runtime {onnxruntime.__version__} (spinning off; the torch model "
            f"exported to ONNX) and torch {torch.__version__} eager (the IR walked with torch.nn.functional "
            f"ops, no BatchNorm folding) vs netc's generated numba kernels + numpy OpenBLAS sgemm, same random "
            f"weights and input, timed in rotating blocks in one process. numpy sgemm 2048^3 measured in the "
            f"same run: {peak:.0f} GFLOP/s.\n\n{body}\n")
    print(text)
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        old = path.read_text() if path.exists() else "# Benchmarks\n"
        pattern = re.compile(r"## CPU execution\n.*?(?=\n## |\Z)", re.S)
        text = "## CPU execution\n\n" + text
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n", old) if pattern.search(old) \
            else old.rstrip("\n") + "\n\n" + text
        path.write_text(new)


if __name__ == "__main__":
    main()
