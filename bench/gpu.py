"""netc's CUDA target vs PyTorch on one GPU, FP32 (TF32 off on both sides), in one process.

    python bench/gpu.py [--iters 50] [--models vgg16,resnet50,googlenet] [--batches 32,1]
                        [--sgemm 4096] [--json out.json] [--deadline-s 0] [--tune]

On a lent GPU machine run it through bench/gpu_device.sh (one prepared command, see there).

1. SGEMM n^3: netc's tiled GEMM (fc_kernel, and a 1x1 convolution through conv_kernel) vs torch.mm.
2. Whole networks (zoo names) at each batch: netc (`compile(target="cuda")`) vs a torch module
   built from the same IR (bench/cpu.py's TorchNet) with the same weights; rel error vs torch.
3. Per netc step: median time with CUDA events vs its roofline floor,
   max(FLOPs / 66.9 TFLOP/s FP32 peak, bytes / measured HBM copy: 3.0 TB/s H100, 4.3 TB/s H200).
4. With --tune: each network again with GEMM tiles timed on this GPU (runtime/autotune.py;
   cached per GPU model, so a second run times nothing), and which layers moved off the default.

All times are medians of CUDA-event intervals on one stream. Prints tables and rewrites the JSON
after every network, so a run stopped at a time limit keeps what it measured. Networks in batch
order, then model order; --deadline-s starts no new network after that many seconds. Each network
records how its kernels were compiled (workers filling numba's cache, kernel_pool.warm_cache) and
how long its first run took (kernels loaded from the cache, or compiled there).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PEAK_FLOPS = 66.9e12     # H100 SXM FP32 without tensor cores (KERNELS.md); the H200 has the same SMs
PEAK_BYTES = 3.0e12      # H100 HBM3 copy bandwidth measured on the lent machine (KERNELS.md)
H200_BYTES = 4.3e12      # H200 HBM3e device-to-device copy seen on the lent machine (device KINDS.md)
NO_GPU = "bench/gpu.py needs an NVIDIA GPU visible to numba-cuda and a CUDA build of PyTorch; found none"


def roofline_s(flops: float, nbytes: float, peak_flops: float | None = None, peak_bytes: float | None = None) -> float:
    """The least time a kernel can take: compute-bound or memory-bound, whichever is slower
    (peaks default to the device's, use_device_peaks)."""
    return max(flops / (peak_flops or PEAK_FLOPS), nbytes / (peak_bytes or PEAK_BYTES))


def use_device_peaks(name: str) -> tuple[float, float]:
    """The rooflines follow the GPU the run got (a plain device call may get an H200)."""
    global PEAK_BYTES
    if "H200" in name:
        PEAK_BYTES = H200_BYTES
    return PEAK_FLOPS, PEAK_BYTES


def sgemm_cost(n: int) -> tuple[float, float]:
    """(flops, minimal bytes) of C[n, n] = A[n, n] @ B[n, n] in float32."""
    return 2.0 * n ** 3, 3 * 4.0 * n * n


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--models", default="vgg16,resnet50,googlenet")
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--sgemm", type=int, default=4096, help="n of the n^3 SGEMM (0: skip)")
    ap.add_argument("--json", default="bench_gpu.json")
    ap.add_argument("--deadline-s", type=float, default=0.0, help="start no network after this (0: no limit)")
    ap.add_argument("--tune", action="store_true",
                    help="also time each network with autotuned GEMM tiles (runtime/autotune.py)")
    a = ap.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    a.batches = [int(b) for b in a.batches.split(",") if b]
    if a.iters < 1 or any(b < 1 for b in a.batches) or a.sgemm < 0:
        ap.error("iters and batches must be positive, sgemm non-negative")
    return a


def gpu_or_exit():
    """(numba.cuda, torch) when both can use a GPU; otherwise a clear message and exit 2."""
    try:
        from numba import cuda
        import torch
        ok = cuda.is_available() and torch.cuda.is_available()
    except Exception:
        ok = False
    if not ok:
        print(NO_GPU, file=sys.stderr)
        sys.exit(2)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return cuda, torch


def event_median_ms(cuda, fn, iters: int, stream=None) -> float:
    """Median of `iters` CUDA-event intervals around fn() on `stream` (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        e0, e1 = cuda.event(), cuda.event()
        e0.record(stream)
        fn()
        e1.record(stream)
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return float(np.median(times))


def torch_median_ms(torch, fn, iters: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return float(np.median(times))


# ---- 1. SGEMM ------------------------------------------------------------------------------------

def bench_sgemm(cuda, torch, n: int, iters: int) -> list[dict]:
    from netc.compiler.codegen import cuda_gemm as cg
    from netc.compiler.codegen.ptx import load_kernel
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    w = rng.standard_normal((n, n), dtype=np.float32)
    ref = torch.from_numpy(x).double() @ torch.from_numpy(w).double().T
    flops, nbytes = sgemm_cost(n)
    floor_ms = roofline_s(flops, nbytes) * 1e3
    rows = []
    # fc: y[R=n, O=n] = x @ W.T; 1x1 conv: y[CO=n, HW=n] = W[n, C=n] @ x[C, HW] (x read as NCHW)
    side = int(round(n ** 0.5))
    cases = [("fc_kernel", cg.fc_kernel("k", n, n, n, 0, 0, n * n, n * n, []), x, cg.pack_fc_weights(w), ref)]
    if side * side == n:
        g = cg.ConvGeometry(1, n, side, side, n, side, side, 1, 1, 1, 1, 0, 0, 1, 1, 1)
        cases.append(("conv_kernel 1x1", cg.conv_kernel("k", g, 0, 0, n * n, n * n, []), x.T.copy(),
                      cg.pack_conv_weights(w.reshape(n, n, 1, 1), g), ref.T))
    for label, ks, xin, wp, want in cases:
        stream = cuda.stream()
        arena = cuda.to_device(np.concatenate([xin.reshape(-1), np.zeros(n * n, np.float32)]), stream=stream)
        params = cuda.to_device(np.concatenate([wp, np.zeros(n, np.float32)]), stream=stream)
        kern = load_kernel(ks.source, ks.name)[ks.grid, ks.block, stream]
        ms = event_median_ms(cuda, lambda: kern(arena, params), iters, stream)
        got = arena.copy_to_host(stream=stream)[n * n:].reshape(n, n)
        stream.synchronize()
        err = float(np.linalg.norm(got - want.numpy()) / np.linalg.norm(want.numpy()))
        rows.append({"what": f"netc {label}", "ms": ms, "tflops": flops / ms / 1e9, "floor_ms": floor_ms,
                     "rel_err": err})
    a, b = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
    ms = torch_median_ms(torch, lambda: torch.mm(a, b.T), iters)
    rows.append({"what": "torch.mm", "ms": ms, "tflops": flops / ms / 1e9, "floor_ms": floor_ms, "rel_err": 0.0})
    return rows


# ---- 2./3. networks --------------------------------------------------------------------------------

def step_bytes(ex, step) -> float:
    """Bytes a step must move at least: the first layer's inputs, the last layer's outputs, the
    parameters of all its layers."""
    g = ex.network.graph
    first, last = g.nodes[step.layers[0]], g.nodes[step.layers[-1]]
    n = sum(int(np.prod(s)) for s in first["in_shapes"]) + sum(int(np.prod(s)) for s in last["shapes"])
    n += sum(v.size for k, v in ex.weights.items() if k.rsplit(".", 1)[0] in step.layers)
    return 4.0 * n


def netc_device_ms(cuda, ex, iters: int) -> tuple[float, list[float]]:
    """Whole-network and per-step medians of CUDA-event intervals (launches only: no feed, no fetch)."""
    t = ex.target
    run_all = lambda: [launch(t.arena, t.params) for launches in t.steps for launch in launches]  # noqa: E731
    total = event_median_ms(cuda, run_all, iters, t.stream)
    per_step = []
    for launches in t.steps:
        per_step.append(event_median_ms(cuda, lambda: [l(t.arena, t.params) for l in launches], iters, t.stream))
    return total, per_step


def bench_network(cuda, torch, name: str, batch: int, iters: int, device: str = "cuda", tune: bool = False) -> dict:
    """`device`: where the torch reference runs ("cpu" only for the simulator smoke test).
    `tune`: the network again with autotuned GEMM tiles, its time and error beside the default's."""
    from netc.compiler.network import load
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cpu import TorchNet           # the IR walked with torch ops (bench/cpu.py)
    net = load(name)
    t0 = time.perf_counter()
    ex = net.compile(target="cuda", batch=batch)
    compile_s = time.perf_counter() - t0
    feed = ex.required_inputs[0]
    shape = ex.input_shape(feed)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tnet = TorchNet(net, ex.weights).eval()
    tnet.w = {k: v.to(device) for k, v in tnet.w.items()}
    xt = torch.from_numpy(x).to(device)
    with torch.inference_mode():
        ref = tnet(xt).double().cpu().numpy()
        torch_ms = torch_median_ms(torch, lambda: tnet(xt), iters)
    t0 = time.perf_counter()
    y = ex.run({feed: x})[ex.outputs[-1]]
    first_run_s = time.perf_counter() - t0
    rel_err = lambda y: float(np.linalg.norm(y - ref) / np.linalg.norm(ref))  # noqa: E731
    err = rel_err(y)
    total, per_step = netc_device_ms(cuda, ex, iters)
    steps = []
    for s, ms in zip(ex.program.steps, per_step):
        flops = sum(ex.flops[n] for n in s.layers)
        floor = roofline_s(flops, step_bytes(ex, s)) * 1e3
        steps.append({"step": s.layers[0], "type": s.type, "kernels": [l.kernel for l in s.launches],
                      "grids": [list(l.grid) for l in s.launches], "ms": ms, "floor_ms": floor,
                      "of_floor": floor / ms if ms > 0 else None})
    flops = ex.analysis.totals["flops"]
    out = {"model": name, "batch": batch, "netc_ms": total, "torch_ms": torch_ms, "rel_err": err,
           "compile_s": compile_s, "workers": ex.compile_report, "first_run_s": first_run_s,
           "cache": cache_counts(ex),
           "netc_tflops": flops / total / 1e9, "floor_ms": sum(s["floor_ms"] for s in steps), "steps": steps}
    if tune:
        del ex
        t0 = time.perf_counter()
        tuned = net.compile(target="cuda", batch=batch, tune=True)
        out["tune_s"] = time.perf_counter() - t0
        out["tuned_rel_err"] = rel_err(tuned.run({feed: x})[tuned.outputs[-1]])
        out["tuned_ms"] = netc_device_ms(cuda, tuned, iters)[0]
        out["tuned"] = tuned.tune_report
    return out


def cache_counts(ex) -> dict:
    """numba's disk-cache hits and misses over the network's kernels: after the workers filled
    the cache, the first run should only hit."""
    hits = misses = 0
    for name in ex.program.kernels:
        k = getattr(ex.target.module, name)
        hits += sum(getattr(k, "_cache_hits", {}).values())
        misses += sum(getattr(k, "_cache_misses", {}).values())
    return {"hits": hits, "misses": misses}


def fmt_table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    cuda, torch = gpu_or_exit()
    device = cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else device
    peak_flops, peak_bytes = use_device_peaks(device)
    out = {"device": device, "torch": torch.__version__, "tf32": False, "peak_flops": peak_flops,
           "peak_bytes": peak_bytes, "sgemm": [], "networks": []}
    if args.sgemm:
        out["sgemm"] = bench_sgemm(cuda, torch, args.sgemm, args.iters)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"SGEMM {args.sgemm}^3 on {device}, FP32, TF32 off\n" + fmt_table(
            ["kernel", "ms", "TFLOP/s", "roofline ms", "rel err"],
            [[r["what"], r["ms"], r["tflops"], r["floor_ms"], r["rel_err"]] for r in out["sgemm"]]), flush=True)
    start = time.perf_counter()
    for batch in args.batches:
        for name in args.models:
            if args.deadline_s and time.perf_counter() - start > args.deadline_s:
                print(f"\n{name} batch {batch}: skipped (past --deadline-s {args.deadline_s:g})", flush=True)
                out.setdefault("skipped", []).append([name, batch])
                continue
            r = bench_network(cuda, torch, name, batch, args.iters, tune=args.tune)
            out["networks"].append(r)
            Path(args.json).write_text(json.dumps(out, indent=1))
            print(f"\n{name} batch {batch}: netc {r['netc_ms']:.3f} ms, torch {r['torch_ms']:.3f} ms "
                  f"(torch/netc {r['torch_ms'] / r['netc_ms']:.2f}), roofline {r['floor_ms']:.3f} ms, "
                  f"rel err {r['rel_err']:.1e}; compile {r['compile_s']:.1f} s, first run "
                  f"{r['first_run_s']:.1f} s, cache {r['cache']}", flush=True)
            if args.tune:
                moved = [t for t in r["tuned"] if t["tile"] != t["default"]]
                print(f"autotuned tiles: netc {r['tuned_ms']:.3f} ms (default tiles {r['netc_ms']:.3f}), rel err "
                      f"{r['tuned_rel_err']:.1e}, tuning {r['tune_s']:.1f} s; {len(moved)} of {len(r['tuned'])} "
                      "GEMM problems off the default tile", flush=True)
                print(fmt_table(["layers", "default", "ms", "tuned", "ms"],
                                [[",".join(t["layers"][:2]), t["default"], t["default_ms"] or 0.0, t["tile"], t["ms"] or 0.0]
                                 for t in moved]), flush=True)
            worst = sorted(r["steps"], key=lambda s: s["ms"] - s["floor_ms"], reverse=True)[:12]
            print(fmt_table(["step", "type", "ms", "roofline ms", "floor/ms"],
                            [[s["step"], s["type"], s["ms"], s["floor_ms"], s["of_floor"] or 0.0] for s in worst]),
                  flush=True)
    print("\n" + fmt_table(["model", "batch", "netc ms", "torch ms", "torch / netc", "netc TFLOP/s", "rel err"],
                           [[r["model"], r["batch"], r["netc_ms"], r["torch_ms"], r["torch_ms"] / r["netc_ms"],
                             r["netc_tflops"], r["rel_err"]] for r in out["networks"]]))
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
