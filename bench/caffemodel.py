""".caffemodel reading: netc's reader vs the protobuf package on the same file, VGG-16's size.

    python bench/caffemodel.py [--params 138357544] [--repeat 3]

Writes a V2 .caffemodel with VGG-16's parameter count (138,357,544 floats, 553 MB: one layer per
VGG-16 weight blob, random values) and reads every blob into float32 numpy arrays, each reader in
its own fresh process, alternating, `--repeat` times: netc (runtime/caffemodel.py: a structure
pass that seeks past the numbers, then each blob read into its array) and protobuf
(ParseFromString of the file's bytes with caffe.proto's message types as tests/caffe_proto.py
builds them, then np.array of each blob's data, as pycaffe-free converters do). Reports median
wall time and peak resident memory (VmHWM: ru_maxrss would carry the parent's peak across
fork and exec) of each, and the peak over the file size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# VGG-16's weight blobs (conv1_1 ... fc8): (out, in, kh, kw) and biases
VGG16 = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256),
         (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]

NETC = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
from netc.runtime import caffemodel
path = Path(sys.argv[1])
_, layers = caffemodel.read_layers(path)
arrays = [caffemodel.load_blob(path, ref) for layer in layers for ref in layer.blobs]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(time.perf_counter() - t0, int(hwm) * 1024, sum(a.size for a in arrays))
"""

PROTOBUF = """
import sys, time
sys.path.insert(0, sys.argv[2])
t0 = time.perf_counter()
import numpy as np
import caffe_proto
net = caffe_proto.messages(True)["NetParameter"]()
with open(sys.argv[1], "rb") as f:
    net.ParseFromString(f.read())
arrays = [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for layer in net.layer for b in layer.blobs]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(time.perf_counter() - t0, int(hwm) * 1024, sum(a.size for a in arrays))
"""


def write_model(path: Path) -> int:
    import numpy as np
    sys.path.insert(0, str(ROOT.parent))
    from netc.runtime import caffemodel
    rng = np.random.default_rng(0)
    layers = []
    for k, (co, ci) in enumerate(VGG16):
        layers.append((f"conv{k}", "Convolution", [rng.standard_normal((co, ci, 3, 3), np.float32),
                                                   rng.standard_normal(co, np.float32)]))
    for name, (o, i) in (("fc6", (4096, 25088)), ("fc7", (4096, 4096)), ("fc8", (1000, 4096))):
        layers.append((name, "InnerProduct", [rng.standard_normal((o, i), np.float32), rng.standard_normal(o, np.float32)]))
    caffemodel.write(path, "VGG_ILSVRC_16_layers", layers)
    return sum(b.size for _, _, bs in layers for b in bs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vgg16.caffemodel"
        values = write_model(path)
        size = path.stat().st_size
        runs = {"netc": [], "protobuf": []}
        for _ in range(args.repeat):
            for name, code in (("netc", NETC), ("protobuf", PROTOBUF)):
                out = subprocess.run([sys.executable, "-c", code, str(path), str(ROOT / "tests")],
                                     capture_output=True, text=True, check=True).stdout.split()
                seconds, rss, count = float(out[0]), int(out[1]), int(out[2])
                assert count == values, (name, count, values)
                runs[name].append((seconds, rss))
    print(f"file: {size / 1e6:.0f} MB, {values:,} floats (VGG-16's parameter count)")
    result = {}
    for name, rs in runs.items():
        t = statistics.median(s for s, _ in rs)
        peak = max(r for _, r in rs)
        result[name] = {"median_s": t, "peak_rss_bytes": peak}
        print(f"{name:<9} median {t:6.2f} s   peak RSS {peak / 1e6:7.0f} MB = {peak / size:.2f}x the file")
    print(f"netc / protobuf: time {result['netc']['median_s'] / result['protobuf']['median_s']:.2f}x, "
          f"peak memory {result['netc']['peak_rss_bytes'] / result['protobuf']['peak_rss_bytes']:.2f}x")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
