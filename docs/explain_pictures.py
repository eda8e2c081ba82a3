"""The README's explain pictures, from real photographs and learned weights, made by the netc
command itself.

    python docs/explain_pictures.py        # writes docs/explain_*.png (about a minute on 2 cores)

No ImageNet-trained weights can be fetched here, so a small ConvNet is trained on the spot
(torch, a few hundred steps) to tell crops of scikit-learn's two bundled photographs apart:
china.jpg (a temple; class "temple") and flower.jpg (class "flower"). The image explained is a
real one made of both: the temple photo's left half beside the flower photo's right half. A
network that learned the task should put "flower" on the right: Grad-CAM and occlusion say
where it looks.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

DOCS = Path(__file__).resolve().parent
NET = """name: "photos"
input: "data"
input_shape { dim: 1 dim: 3 dim: %d dim: %d }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 5 pad: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "gap" type: "Pooling" bottom: "conv3" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc" inner_product_param { num_output: 2 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
CROP = 48


def train(photos, steps=400, seed=0):
    """conv/fc weights (netc keys) of the net above, trained on random CROPxCROP crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    c1, c2, c3 = (torch.nn.Conv2d(3, 16, 5, padding=2), torch.nn.Conv2d(16, 32, 3, padding=1),
                  torch.nn.Conv2d(32, 32, 3, padding=1))
    fc = torch.nn.Linear(32, 2)
    params = [p for m in (c1, c2, c3, fc) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    F = torch.nn.functional
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(32):
            k = int(rng.integers(2))
            img = photos[k]
            top, left = rng.integers(0, img.shape[0] - CROP), rng.integers(0, img.shape[1] // 2 - CROP) + \
                (img.shape[1] // 2 if k == 0 else 0)        # the halves the composite does not show
            crop = img[top:top + CROP, left:left + CROP] / 255.0
            xs.append(crop[:, ::-1] if rng.integers(2) else crop)
            ys.append(k)
        x = torch.tensor(np.stack(xs).transpose(0, 3, 1, 2).copy(), dtype=torch.float32)
        h = F.max_pool2d(F.relu(c1(x)), 2)
        h = F.max_pool2d(F.relu(c2(h)), 2)
        h = F.relu(c3(h)).mean(dim=(2, 3))
        loss = F.cross_entropy(fc(h), torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"trained: last loss {loss.item():.3f}")
    return {f"{n}.{k}": getattr(m, k).detach().numpy() for n, m in (("conv1", c1), ("conv2", c2), ("conv3", c3),
                                                                     ("fc", fc)) for k in ("weight", "bias")}


def main() -> None:
    photos = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    w = train(photos)
    h, half = 160, 100
    temple = photos[0][140:140 + h, 100:100 + half]          # from the temple photo's left half
    flower = photos[1][140:140 + h, 360:360 + half]          # from the flower photo's right half
    composite = np.concatenate([temple, flower], axis=1)
    Image.fromarray(composite).save(DOCS / "explain_input.png")
    with tempfile.TemporaryDirectory() as tmp:
        model, weights, labels = Path(tmp) / "photos.prototxt", Path(tmp) / "w.npz", Path(tmp) / "labels.txt"
        model.write_text(NET % composite.shape[:2], encoding="utf-8")
        np.savez(weights, **w)
        labels.write_text("temple\nflower\n", encoding="utf-8")
        common = [sys.executable, "-m", "netc", "explain", str(model), "--weights", str(weights), "--labels",
                  str(labels), "--input", str(DOCS / "explain_input.png"), "--pixels", "0-1", "--channels", "rgb"]
        for method, extra in (("gradcam", ["--layer", "conv3"]), ("occlusion", ["--window", "32", "--stride", "8"])):
            for target in ("flower", "temple"):
                out = DOCS / f"explain_{method}_{target}.png"
                subprocess.run(common + ["--method", method, "--target", target, "-o", str(out), *extra], check=True)


if __name__ == "__main__":
    main()
