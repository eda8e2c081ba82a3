"""A small ConvNet trained here by torch on scikit-learn's bundled 8x8 digits (a few seconds), so
explain's tests see learned filters: its prototxt, weights and the data. A helper module, not a
test module."""
from __future__ import annotations

from functools import lru_cache

import torch

PROTOTXT = """input: "data"
input_shape { dim: 1 dim: 1 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
"""


@lru_cache(maxsize=1)
def trained():
    """(weights by netc key, images [N, 1, 8, 8] in [0, 1], labels [N], the torch modules)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    conv, fc = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Linear(8 * 4 * 4, 10)
    opt = torch.optim.Adam([*conv.parameters(), *fc.parameters()], lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        h = torch.nn.functional.max_pool2d(torch.relu(conv(x)), 2)
        loss = torch.nn.functional.cross_entropy(fc(h.flatten(1)), y)
        loss.backward()
        opt.step()
    w = {"conv.weight": conv.weight.detach().numpy(), "conv.bias": conv.bias.detach().numpy(),
         "fc.weight": fc.weight.detach().numpy(), "fc.bias": fc.bias.detach().numpy()}
    return w, x.numpy(), digits.target, (conv, fc)


def torch_score(modules, x: torch.Tensor) -> torch.Tensor:
    """The logits of the trained net for x [N, 1, 8, 8] (float64 copies of its modules)."""
    conv, fc = modules
    h = torch.nn.functional.conv2d(x, conv.weight.double(), conv.bias.double(), padding=1)
    h = torch.nn.functional.max_pool2d(torch.relu(h), 2)
    return torch.nn.functional.linear(h.flatten(1), fc.weight.double(), fc.bias.double())
