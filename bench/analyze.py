"""Static analysis speed: parse+analyze of ResNet-152 and of generated chains (1k/10k/100k
layers, to show linear growth), end-to-end `netc analyze` wall time, and torchinfo's summary()
on an equivalent hand-built PyTorch ResNet-152 in the same run. Run: python bench/analyze.py"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import netc
from netc.compiler.network import loads

HERE = Path(__file__).resolve().parent
REFS = Path(os.environ.get("NETC_REFS", HERE.parents[1] / "shared" / "refs" / "caffe"))


def median_time(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def chain(n: int) -> str:
    body = "\n".join("Convolution(num_output=8, kernel_size=3, pad=1)" if i % 2 == 0 else "ReLU"
                     for i in range(n - 1))
    return f"network chain{n}\ninput data: [1, 8, 32, 32]\n{body}\n"


def torch_resnet152():
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, mid, stride):
            super().__init__()
            out = mid * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                nn.Conv2d(mid, out, 1, bias=False), nn.BatchNorm2d(out))
            self.short = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                          if stride != 1 or cin != out else nn.Identity())
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.body(x) + self.short(x))

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for mid, reps, stride in ((64, 3, 1), (128, 8, 2), (256, 36, 2), (512, 3, 2)):
        for i in range(reps):
            layers.append(Bottleneck(cin, mid, stride if i == 0 else 1))
            cin = mid * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def main():
    results = {}
    resnet = REFS / "resnet-152.prototxt"
    results["resnet152_parse_analyze_s"] = median_time(lambda: netc.load(resnet).analyze())
    per_layer = {}
    for n in (1_000, 10_000, 100_000):
        text = chain(n)
        t = median_time(lambda: loads(text, path=f"chain{n}.net").analyze(), repeat=3 if n < 100_000 else 1)
        per_layer[n] = t / n
        results[f"chain{n}_s"] = t
    results["us_per_layer"] = {n: round(v * 1e6, 1) for n, v in per_layer.items()}
    cli = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "netc", "analyze", str(resnet), "--format", "json"],
                       check=True, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t)
    results["cli_resnet152_wall_s"] = statistics.median(cli)
    try:
        import torch
        from torchinfo import summary
        torch.set_num_threads(2)
        model = torch_resnet152()
        assert sum(p.numel() for p in model.parameters()) == 60_192_808
        results["torchinfo_resnet152_s"] = median_time(
            lambda: summary(model, (1, 3, 224, 224), verbose=0), repeat=3)
        results["torchinfo_over_netc"] = results["torchinfo_resnet152_s"] / results["resnet152_parse_analyze_s"]
    except ImportError as e:
        results["torchinfo"] = f"not installed ({e})"
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
