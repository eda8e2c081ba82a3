"""netc's CPU target vs PyTorch eager (and ONNX Runtime when installed), batch 1, same weights.

    python bench/cpu.py [--iters 20] [--models alexnet,resnet-50,vgg-16,googlenet] [--write]

Both sides run in one process with 2 threads, in blocks (A B C A B C: interleaving single iterations
lets one runtime's spinning thread pool starve the next); medians are reported. --write puts the table under
"## CPU execution" in BENCHMARKS.md (replacing that section, leaving the others).
"""
from __future__ import annotations

import argparse
import io
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import netc
from netc.runtime.commands import measure_sgemm

REFS = Path("/work/shared/refs/caffe")
ROOT = Path(__file__).resolve().parent.parent


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
        opts.intra_op_num_threads = 2
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning starves the others
        return ort.InferenceSession(f.getvalue(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # optional comparison: any missing piece just drops the column
        print(f"  (onnxruntime skipped: {type(e).__name__}: {str(e)[:120]})")
        return None


def bench_model(name: str, iters: int) -> dict:
    net = netc.load(REFS / f"{name}.prototxt")
    t0 = time.perf_counter()
    ex = net.compile(batch=1)
    compile_s = time.perf_counter() - t0
    feed = ex.required_inputs[0]
    x = np.random.default_rng(0).standard_normal(ex._view(ex.inputs[feed]).shape).astype(np.float32)
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
    with torch.inference_mode():
        for _ in range(2):  # two rounds of blocks: A B C A B C, so drift in load hits all
            for k, fn in runs.items():
                fn(), fn()
                for _ in range((iters + 1) // 2):
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    spread = {k: (float(np.percentile(v, 10)) * 1e3, float(np.percentile(v, 90)) * 1e3) for k, v in times.items()}
    flops = ex.analysis.totals["flops"]
    return {"model": name, "compile_s": compile_s, "rel_err": err, "median_ms": med, "spread": spread,
            "gflops": flops / med["netc"] / 1e6, "arena": ex.arena_bytes, "peak": ex.peak_bytes}


def table(results, peak) -> str:
    cols = ["netc", "torch"] + (["onnxruntime"] if any("onnxruntime" in r["median_ms"] for r in results) else [])
    head = "| model | " + " | ".join(f"{c} ms (p10-p90)" for c in cols) + \
        " | torch / netc | netc GFLOP/s (% sgemm) | rel err vs torch | arena = plan peak (MiB) | first compile (s) |"
    lines = [head, "|---|" + "--:|" * (len(cols) + 5)]
    for r in results:
        m, s = r["median_ms"], r["spread"]
        cells = [f"{m[c]:.1f} ({s[c][0]:.0f}-{s[c][1]:.0f})" if c in m else "-" for c in cols]
        same = "yes" if r["arena"] == r["peak"] else f"{r['arena'] / r['peak']:.2f}x"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {m['torch'] / m['netc']:.2f} | "
                     f"{r['gflops']:.0f} ({r['gflops'] / peak:.0%}) | {r['rel_err']:.1e} | "
                     f"{r['peak'] / 2**20:.1f} ({same}) | {r['compile_s']:.1f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--models", default="alexnet,resnet-50,vgg-16,googlenet")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    peak_before = measure_sgemm()
    results = []
    for name in args.models.split(","):
        print(f"{name} ...", flush=True)
        results.append(bench_model(name, args.iters))
        print(table(results[-1:], peak_before))
    peak = max(peak_before, measure_sgemm())
    body = table(results, peak)
    text = (f"## CPU execution\n\n`python bench/cpu.py --iters {args.iters}`: batch 1, fp32, {platform.machine()} "
            f"with 2 cores, torch {torch.__version__} eager (`torch.set_num_threads(2)`, the IR walked with "
            f"torch.nn.functional ops, no BatchNorm folding) vs netc's generated numba kernels + numpy "
            f"OpenBLAS sgemm, same random weights and input, timed in alternating blocks. numpy sgemm 2048^3 "
            f"measured in the same run: {peak:.0f} GFLOP/s. The machine was shared with other jobs, "
            f"so p10-p90 spreads are wide; compare ratios, not absolute times.\n\n{body}\n")
    print(text)
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        old = path.read_text() if path.exists() else "# Benchmarks\n"
        pattern = re.compile(r"## CPU execution\n.*?(?=\n## |\Z)", re.S)
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n", old) if pattern.search(old) \
            else old.rstrip("\n") + "\n\n" + text
        path.write_text(new)


if __name__ == "__main__":
    main()
