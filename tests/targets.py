"""Run a model text on the CPU target here and on the CUDA target in the simulator (a
subprocess: NUMBA_ENABLE_CUDASIM must be set before numba.cuda is imported), same weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from netc.compiler.network import loads

_SIM = r"""
import json, sys
import numpy as np
from netc.compiler.network import loads
job = json.load(open(sys.argv[1]))
net = loads(job["text"], path=job["path"])
w = dict(np.load(job["weights"]))
feeds = dict(np.load(job["feeds"]))
ex = net.compile(target="cuda", batch=job["batch"], weights=w)
out = ex.run(feeds)
np.savez(job["out"], **out)
print(json.dumps({"source": ex.program.source}))
"""


def run_cpu(text: str, feeds: dict, batch: int, path: str = "model.net", seed: int = 0):
    """(outputs, executable) of the CPU target with seeded random weights."""
    ex = loads(text, path=path).compile(target="cpu", batch=batch, seed=seed)
    return ex.run(feeds), ex


def run_cuda_sim(text: str, feeds: dict, batch: int, weights: dict, path: str = "model.net"):
    """(outputs, generated CUDA source) from the CUDA target in the simulator."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        np.savez(d / "w.npz", **weights)
        np.savez(d / "feeds.npz", **feeds)
        job = {"text": text, "path": path, "batch": batch, "weights": str(d / "w.npz"),
               "feeds": str(d / "feeds.npz"), "out": str(d / "out.npz")}
        (d / "job.json").write_text(json.dumps(job))
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        r = subprocess.run([sys.executable, "-c", _SIM, str(d / "job.json")], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        source = json.loads(r.stdout.strip().splitlines()[-1])["source"]
        return dict(np.load(d / "out.npz")), source
