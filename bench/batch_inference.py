"""Throughput over a folder of images: what limits `netc run --input DIR/` (decoding, compute or
moving the data), side by side in one run.

    python bench/batch_inference.py [--images 300] [--model squeezenet1_1] [--batch 8] [--ray] [--write]

Generated JPEGs (smooth random pictures, 320x240, so decoding and resizing cost what photos of
that size cost) in a temporary folder. Measured, each as images/s:
  decode    the Decoder on the thread pool alone (runtime/folder.batches, no network);
  compute   the network on already-decoded batches (B / median batch latency);
  ort       ONNX Runtime on the same decoded batches (netc's own ONNX export of the same weights);
  folder    the whole one-machine job (predict_folder: decode overlapping compute, rows to CSV);
  ray       with --ray, the same job on a local Ray cluster (startup included, and without it).
--write puts the table under "## Batch inference over a folder" in BENCHMARKS.md.
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

import numpy as np
from PIL import Image

import netc
from netc.runtime.folder import batches, image_files
from netc.runtime.predict import Predictor, predict_folder
from netc.runtime.rows import open_rows

ROOT = Path(__file__).resolve().parent.parent


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:240, 0:320] / 40.0
    for k in range(n):
        a, b, c = rng.uniform(0.5, 2, 3)
        img = np.stack([np.sin(a * xx + k) + np.cos(b * yy), np.cos(c * xx * yy / 8), np.sin(b * xx - a * yy)], -1)
        img = ((img - img.min()) / (np.ptp(img) + 1e-9) * 255 + rng.normal(0, 8, img.shape)).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img{k:05d}.jpg", quality=90)


def agreement(a: Path, b: Path) -> str:
    """How two prediction CSVs agree: byte for byte, else the share of equal top-1 classes and
    the largest relative difference of a top-1 score."""
    import csv
    if a.read_bytes() == b.read_bytes():
        return "rows identical to the one-process CSV, byte for byte"
    ra, rb = (list(csv.DictReader(open(p, newline=""))) for p in (a, b))
    same = sum(x["top1_index"] == y["top1_index"] for x, y in zip(ra, rb)) / max(1, len(ra))
    diff = max(abs(float(x["top1_score"]) - float(y["top1_score"])) / max(abs(float(x["top1_score"])), 1e-30)
               for x, y in zip(ra, rb) if x["top1_score"] and y["top1_score"])
    return f"top-1 equal for {same:.1%} of rows, scores within {diff:.1e} relative (not byte for byte)"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--model", default="squeezenet1_1")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ray", action="store_true")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    model = str(ROOT / "zoo" / f"{args.model}.net")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.images)
        paths = image_files(str(folder))
        pred = Predictor(model, batch=args.batch, top=5)
        ex, decode = pred.executable, pred.decoder
        shape = ex.input_shape(ex.required_inputs[0])
        r = {}

        t = time.perf_counter()
        decoded = [b.x.copy() for b in batches(paths, decode, args.batch, shape[1:])]
        r["decode"] = rate(len(paths), time.perf_counter() - t)

        name = ex.required_inputs[0]
        ex.run({name: decoded[0]})
        lat = []
        for x in decoded:
            t = time.perf_counter()
            ex.run({name: x})
            lat.append(time.perf_counter() - t)
        r["compute"] = args.batch / statistics.median(lat)

        import onnxruntime as ort
        from netc.compiler.onnx_export import export
        onnx_path = Path(tmp) / "model.onnx"
        net = netc.load(model)
        net.analyze(batch=args.batch)
        export(net, ex.weights, onnx_path, batch=args.batch)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        sess.run(None, {feed: decoded[0]})
        lat = []
        for x in decoded:
            t = time.perf_counter()
            sess.run(None, {feed: x})
            lat.append(time.perf_counter() - t)
        r["ort"] = args.batch / statistics.median(lat)

        out = Path(tmp) / "preds.csv"
        rows = open_rows(str(out))
        t = time.perf_counter()
        predict_folder(pred, paths, rows)
        rows.close()
        r["folder"] = rate(len(paths), time.perf_counter() - t)

        if args.ray:
            from netc.runtime.cluster import predict_on_ray
            import ray
            for actors in (1, 2):
                ray_out = Path(tmp) / f"ray{actors}.csv"
                rows = open_rows(str(ray_out))
                t = time.perf_counter()
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                up = time.perf_counter() - t
                s = predict_on_ray(pred, paths, rows, actors=actors)
                rows.close()
                ray.shutdown()
                total = time.perf_counter() - t
                r[f"ray{actors}"] = rate(len(paths), total)
                r[f"ray{actors}_job"] = rate(len(paths), s["seconds"])
                r[f"ray{actors}_startup_s"] = up
                r[f"ray{actors}_same"] = agreement(out, ray_out)

    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} before the run; "
             f"{datetime.date.today()}. `python bench/batch_inference.py --images {args.images} --model {args.model} "
             f"--batch {args.batch}{' --ray' if args.ray else ''}`: {args.images} generated 320x240 JPEGs, "
             f"{args.model} at {shape[2]}x{shape[3]}, batch {args.batch}, random weights; images/s.", "",
             "| stage | images/s | what it is |", "|---|--:|---|",
             f"| decode | {r['decode']:.1f} | Pillow decode + resize + crop + mean on {min(4, os.cpu_count())} threads, no network |",
             f"| compute (netc) | {r['compute']:.1f} | the network on decoded batches (batch / median latency) |",
             f"| compute (ONNX Runtime) | {r['ort']:.1f} | ORT on the same decoded batches, netc's ONNX export |",
             f"| folder, one process | {r['folder']:.1f} | `netc run --input DIR/ --output preds.csv`: decode overlapping compute |"]
    for actors in (1, 2):
        if f"ray{actors}" in r:
            lines.append(f"| folder, local Ray, {actors} actor(s) | {r[f'ray{actors}']:.1f} "
                         f"({r[f'ray{actors}_job']:.1f} after the {r[f'ray{actors}_startup_s']:.1f} s cluster start) | "
                         f"{r[f'ray{actors}_same']} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(ROOT / "bench"))
        from benchmarks_md import write_section
        write_section("Batch inference over a folder", text + "\n\n" + NOTES)


NOTES = """The folder job runs at the slower of decode and compute when they overlap (both share the
same cores here, so they add up instead when both are busy). On a cluster each worker decodes its
own images, so on paper throughput grows with the workers until the driver, which writes the rows,
or the storage the images are read from, limits it: rows are ~100 bytes an image, so one driver
keeps up with thousands of images/s; the images themselves (~30 kB each here) travel from storage
to the worker that decodes them, never through the driver."""


if __name__ == "__main__":
    main()
