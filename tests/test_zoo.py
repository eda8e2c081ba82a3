"""The bundled zoo: every model's parameter count and MACs checked against a published figure
or against an independent count (equivalent torch.nn models built here, counted by a hook), so
the zoo is evidence that netc's shape and cost rules are right, not just a set of examples."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

import netc
from netc.compiler.build import ir_signature
from netc.compiler.netlang import format_source
from netc.compiler.network import ZOO, loads, zoo_names

import torch  # a pinned test dependency: a missing torch must fail, not skip
nn = torch.nn

# name -> (params, MACs at batch 1, relative tolerance on MACs). Params: Caffe / torchvision
# model summaries. MACs: exact where published exactly, else torchvision's "GFLOPS" (which are
# GMACs) to two decimals, hence 1%. None: derived below from an independent torch model.
PUBLISHED = {
    "lenet": (431_080, 2_293_000, 0),
    "alexnet": (60_965_224, 724_406_816, 0),
    "vgg11": (132_863_336, 7.61e9, 0.01),
    "vgg13": (133_047_848, 11.31e9, 0.01),
    "vgg16": (138_357_544, 15_470_264_320, 0),
    "vgg19": (143_667_240, 19.63e9, 0.01),
    "googlenet": (6_998_552, None, 0),
    "resnet18": (11_689_512, 1.81e9, 0.01),
    "resnet34": (21_797_672, 3.66e9, 0.01),
    "resnet50": (25_557_032, 4.09e9, 0.01),
    "resnet101": (44_549_160, 7.80e9, 0.01),
    "resnet152": (60_192_808, 11.51e9, 0.01),
    "squeezenet1_0": (1_248_424, 0.82e9, 0.01),
    "squeezenet1_1": (1_235_496, 0.35e9, 0.01),
    "mobilenet_v2": (3_504_872, 0.30e9, 0.01),
    "densenet121": (7_978_856, 2.83e9, 0.01),
    "zfnet": (None, None, 0),
    "mobilenet_v1": (None, None, 0),
    "nin": (None, None, 0),
}

# Figures derived by this file's torch models (test_derived_figures proves them); docs/zoo.md
# quotes them.
DERIVED = {
    "zfnet": (107_627_624, 2_476_704_896),
    "googlenet": (6_998_552, 1_582_671_872),
    "mobilenet_v1": (4_231_976, 568_740_352),
    "nin": (7_595_176, 1_100_188_800),
}


@pytest.fixture(scope="module")
def analyses():
    return {name: netc.load(name).analyze() for name in zoo_names()}


def test_zoo_holds_exactly_the_table():
    assert sorted(zoo_names()) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_params_and_macs(name, analyses):
    t = analyses[name].totals
    params, macs, tol = PUBLISHED[name]
    d_params, d_macs = DERIVED.get(name, (None, None))
    assert t["params"] == (params if params is not None else d_params)
    want = macs if macs is not None else d_macs
    assert abs(t["macc"] - want) <= tol * want, (t["macc"], want)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_source_line(name):
    text = (ZOO / f"{name}.net").read_text()
    assert any(line.startswith("# source: ") and len(line) > 20 for line in text.splitlines())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_canonical_layout(name):
    """Zoo files are what `netc fmt` prints, so they double as style examples."""
    path = ZOO / f"{name}.net"
    assert format_source(path.read_text(), str(path)) == path.read_text()


def model_lines(name: str) -> int:
    return sum(1 for line in (ZOO / f"{name}.net").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


def test_concise():
    assert model_lines("vgg16") <= 25
    assert model_lines("resnet50") <= 60


def test_zoo_list_names_every_model():
    out = subprocess.run([sys.executable, "-m", "netc", "zoo", "list"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    for name in PUBLISHED:
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_prototxt_round_trip(name):
    net = netc.load(name)
    back = loads(net.to_prototxt(), path="x.prototxt")
    assert ir_signature(back.graph) == ir_signature(net.graph)


# ---- independent torch models ---------------------------------------------------------------
# Built on the meta device: shapes and parameter counts without allocating weights.

def count(model, shape):
    """(params, MACs, [(kind, output shape)]) from forward hooks; MACs as netc counts them:
    convolutions and linear layers only."""
    rows, macs = [], [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            rows.append(("conv", tuple(out.shape)))
        elif isinstance(m, nn.Linear):
            macs[0] += out.numel() * m.in_features
            rows.append(("fc", tuple(out.shape)))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            rows.append(("pool", tuple(out.shape)))

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.empty(shape, device="meta"))
    return sum(p.numel() for p in model.parameters()), macs[0], rows


def netc_rows(analysis):
    kinds = {"Convolution": "conv", "InnerProduct": "fc", "Pooling": "pool"}
    return [(kinds[r.type], tuple(r.output_shapes[0])) for r in analysis.layers if r.type in kinds]


def meta(build):
    with torch.device("meta"):
        return build().eval()


def conv_relu(cin, cout, k=1, s=1, p=0, **kw):
    return [nn.Conv2d(cin, cout, k, s, p, **kw), nn.ReLU()]


def conv_bn(cin, cout, k=1, s=1, p=0, groups=1):
    return [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class Parallel(nn.Module):
    """Branches on one input, concatenated on channels (inception, fire, dense layers)."""

    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


class Residual(nn.Module):
    def __init__(self, body, shortcut=None, relu=True):
        super().__init__()
        self.body, self.shortcut, self.relu = body, shortcut or nn.Identity(), relu

    def forward(self, x):
        y = self.body(x) + self.shortcut(x)
        return torch.relu(y) if self.relu else y


def zfnet():
    lrn = lambda: nn.LocalResponseNorm(5, 1e-4, 0.75)  # noqa: E731
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(*conv_relu(3, 96, 7, 2, 1), pool(), lrn(), *conv_relu(96, 256, 5, 2), pool(), lrn(),
                         *conv_relu(256, 512, 3, 1, 1), *conv_relu(512, 1024, 3, 1, 1),
                         *conv_relu(1024, 512, 3, 1, 1), pool(), nn.Flatten(),
                         nn.Linear(512 * 36, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, 1000))


def googlenet():
    def inception(cin, a, b1, b2, c1, c2, d):
        return Parallel(nn.Sequential(*conv_relu(cin, a)),
                        nn.Sequential(*conv_relu(cin, b1), *conv_relu(b1, b2, 3, 1, 1)),
                        nn.Sequential(*conv_relu(cin, c1), *conv_relu(c1, c2, 5, 1, 2)),
                        nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), *conv_relu(cin, d)))
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        *conv_relu(3, 64, 7, 2, 3), pool(), nn.LocalResponseNorm(5), *conv_relu(64, 64),
        *conv_relu(64, 192, 3, 1, 1), nn.LocalResponseNorm(5), pool(),
        inception(192, 64, 96, 128, 16, 32, 32), inception(256, 128, 128, 192, 32, 96, 64), pool(),
        inception(480, 192, 96, 208, 16, 48, 64), inception(512, 160, 112, 224, 24, 64, 64),
        inception(512, 128, 128, 256, 24, 64, 64), inception(512, 112, 144, 288, 32, 64, 64),
        inception(528, 256, 160, 320, 32, 128, 128), pool(),
        inception(832, 256, 160, 320, 32, 128, 128), inception(832, 384, 192, 384, 48, 128, 128),
        nn.AvgPool2d(7, 1), nn.Flatten(), nn.Linear(1024, 1000))


def mobilenet_v1():
    layers = [*conv_bn(3, 32, 3, 2, 1), nn.ReLU()]
    cfg = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
           *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]
    for cin, cout, s in cfg:
        layers += [*conv_bn(cin, cin, 3, s, 1, groups=cin), nn.ReLU(), *conv_bn(cin, cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


def nin():
    def mlpconv(cin, n, k, s=1, p=0, out=None):
        return [*conv_relu(cin, n, k, s, p), *conv_relu(n, n), *conv_relu(n, out or n)]
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(*mlpconv(3, 96, 11, 4), pool(), *mlpconv(96, 256, 5, 1, 2), pool(),
                         *mlpconv(256, 384, 3, 1, 1), pool(), *mlpconv(384, 1024, 3, 1, 1, 1000),
                         nn.AvgPool2d(6, 1))


def resnet18():
    """torchvision.models.resnet18, written out."""
    def basic(cin, cout, s):
        body = nn.Sequential(*conv_bn(cin, cout, 3, s, 1), nn.ReLU(), *conv_bn(cout, cout, 3, 1, 1))
        return Residual(body, nn.Sequential(*conv_bn(cin, cout, 1, s)) if s != 1 or cin != cout else None)
    layers = [*conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [basic(cin, cout, s), basic(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


def mobilenet_v2():
    """torchvision.models.mobilenet_v2, written out."""
    def inverted(cin, cout, s, t):
        hid = cin * t
        body = [*conv_bn(cin, hid), nn.ReLU6()] if t != 1 else []
        body += [*conv_bn(hid, hid, 3, s, 1, groups=hid), nn.ReLU6(), *conv_bn(hid, cout)]
        body = nn.Sequential(*body)
        return Residual(body, relu=False) if s == 1 and cin == cout else body
    layers, cin = [*conv_bn(3, 32, 3, 2, 1), nn.ReLU6()], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            layers.append(inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers, *conv_bn(320, 1280), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(1280, 1000))


def densenet121():
    """torchvision.models.densenet121, written out (concatenating onto the input is the same
    tensor as torchvision's concatenation of all earlier features)."""
    def bn_relu_conv(cin, cout, k, p=0):
        return [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, k, 1, p, bias=False)]
    layers, c = [*conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(Parallel(nn.Identity(), nn.Sequential(*bn_relu_conv(c, 128, 1),
                                                                *bn_relu_conv(128, 32, 3, 1))))
            c += 32
        if i < 3:
            layers += [*bn_relu_conv(c, c // 2, 1), nn.AvgPool2d(2, 2)]
            c //= 2
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, 1000))


def squeezenet1_1():
    """torchvision.models.squeezenet1_1, written out."""
    def fire(cin, s, e):
        return nn.Sequential(*conv_relu(cin, s), Parallel(nn.Sequential(*conv_relu(s, e)),
                                                          nn.Sequential(*conv_relu(s, e, 3, 1, 1))))
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(*conv_relu(3, 64, 3, 2), pool(), fire(64, 16, 64), fire(128, 16, 64), pool(),
                         fire(128, 32, 128), fire(256, 32, 128), pool(), fire(256, 48, 192),
                         fire(384, 48, 192), fire(384, 64, 256), fire(512, 64, 256), nn.Dropout(),
                         *conv_relu(512, 1000), nn.AdaptiveAvgPool2d(1))


TORCH_MODELS = {"zfnet": zfnet, "googlenet": googlenet, "mobilenet_v1": mobilenet_v1, "nin": nin,
                "resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "densenet121": densenet121,
                "squeezenet1_1": squeezenet1_1}


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_matches_torch_model(name, analyses):
    """Same parameter count, MACs and the same output shape for every conv, FC and pooling layer
    (as multisets: branch order may differ between the two descriptions)."""
    a = analyses[name]
    params, macs, rows = count(meta(TORCH_MODELS[name]), tuple(a.layers[0].output_shapes[0]))
    assert a.totals["params"] == params
    assert a.totals["macc"] == macs
    assert Counter(netc_rows(a)) == Counter(rows)


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_derived_figures(name):
    params, macs, _ = count(meta(TORCH_MODELS[name]), (1, 3, 224, 224))
    assert (params, macs) == DERIVED[name]


def test_zfnet_by_hand():
    """ZFNet once more without torch: (cin*k*k + 1)*cout per layer, MACs = weights * output area."""
    convs = [(3, 96, 7, 110), (96, 256, 5, 26), (256, 512, 3, 13), (512, 1024, 3, 13), (1024, 512, 3, 13)]
    fcs = [(512 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    params = sum((ci * k * k + 1) * co for ci, co, k, _ in convs) + sum((i + 1) * o for i, o in fcs)
    macs = sum(ci * k * k * co * hw * hw for ci, co, k, hw in convs) + sum(i * o for i, o in fcs)
    assert (params, macs) == DERIVED["zfnet"]
