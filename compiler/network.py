"""The Python API: netc.load(...) -> Network; Network.analyze(...) -> Analysis."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil
from pathlib import Path

import networkx as nx

from . import passes
from .build import build_graph
from .errors import Loc, NetcError, did_you_mean
from .layers import REGISTRY

ZOO = Path(__file__).resolve().parent.parent / "zoo"
MAX_FILE_BYTES = 8 * 1024 * 1024  # real models are < 1 MB; parsing costs ~5 s and ~400 MB per MB


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO.glob("*.net"))


def resolve(model: str) -> Path:
    """A path, or the name of a zoo model (`vgg16`)."""
    p = Path(model)
    if p.is_file():
        return p
    z = ZOO / (model if model.endswith(".net") else f"{model}.net")
    if "/" not in model and z.is_file():   # `vgg16`, or `vgg16.net` as the README writes it
        return z
    from .errors import did_you_mean
    hint = did_you_mean(model.removesuffix(".net"), zoo_names()) if "/" not in model else ""
    raise NetcError(f'no such file or zoo model: "{model}"{hint}')


def read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            with path.open("rb") as f:
                head = f.read(4096).decode("utf-8", "replace")
            raise NetcError(f"file is {size} bytes; netc reads model files up to {MAX_FILE_BYTES}",
                            Loc(str(path), 1, 1), source=head)
        data = path.read_bytes()
    except OSError as e:
        raise NetcError(f"cannot read {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise NetcError(f"file is not UTF-8 text (byte 0x{data[e.start]:02x})", Loc(str(path), line, col),
                        source=data.decode("utf-8", "replace")) from None


def parse_spec(text: str, path: str, phase: str = "test"):
    if is_native(text, path):
        from .netlang import load as load_net
        return load_net(text, path)
    from .prototxt import load as load_prototxt
    return load_prototxt(text, path, phase)


def is_native(text: str, path: str) -> bool:
    if path.endswith(".net"):
        return True
    if path.endswith((".prototxt", ".pt", ".pbtxt")):
        return False
    head = "\n".join(l for l in text.splitlines()[:20] if not l.lstrip().startswith("#"))
    return head.lstrip().startswith(("network ", "input ", "block "))


def load(model: str | Path, *, phase: str = "test", input_shapes: dict | None = None) -> "Network":
    """Read a model file (.prototxt, .net or .onnx) or a zoo model by name. An ONNX file's
    weights come with it (`compile` uses them unless given others); `input_shapes` sizes its
    symbolic input dimensions."""
    if phase not in ("test", "train"):
        raise NetcError(f'phase must be "test" or "train", got "{phase}"')
    path = resolve(str(model))
    if path.suffix.lower() == ".onnx":
        from .onnx_import import load_onnx
        spec, weights = load_onnx(path, input_shapes)
        net = Network(build_graph(spec))
        net.graph.graph["weights"] = weights
        return net
    return loads(read_text(path), path=str(path), phase=phase)


def loads(text: str, *, path: str = "<string>", phase: str = "test") -> "Network":
    with quoting(text, path):
        return Network(build_graph(parse_spec(text, path, phase)), text)


class quoting:
    """Attach the model text to errors about it, so the caret line works for in-memory text."""

    def __init__(self, text: str, path: str):
        self.text, self.path = text, path

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, NetcError) and err.source is None and err.loc and err.loc.file == self.path:
            err.source = self.text
        return False


class Network:
    def __init__(self, graph: nx.DiGraph, source: str = ""):
        self.graph = graph
        self.source = source

    @property
    def name(self) -> str:
        return self.graph.graph["name"]

    def set_input_shapes(self, shapes: dict) -> None:
        """Replace inputs' shapes (blob name -> shape; its batch is replaced by analyze's and
        compile's `batch` as the file's is) for every later analysis and compile: placeholder
        inputs sized at run time (OpenPose: 1x3x1x1)."""
        checked = {}
        for name, shape in shapes.items():
            shape = tuple(shape)
            if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= passes.MAX_DIM
                                    for d in shape):
                raise NetcError(f'input shape for "{name}" must be positive whole numbers, got {list(shape)}')
            checked[str(name)] = shape
        g = self.graph
        inputs = [t for n in g.nodes if REGISTRY[g.nodes[n]["type"]].source for t in g.nodes[n]["tops"]]
        for name in checked:
            if name not in inputs:
                raise NetcError(f'"{name}" is not an input of this network (inputs: {", ".join(inputs) or "none"})'
                                + did_you_mean(name, inputs))
        g.graph["input_shapes"] = checked

    def analyze(self, batch: int = 1, dtype: str = "float32") -> "Analysis":
        if dtype not in passes.DTYPE_BYTES:
            raise NetcError(f'unknown dtype "{dtype}" (use {", ".join(passes.DTYPE_BYTES)})')
        if not isinstance(batch, int) or batch < 1:
            raise NetcError(f"batch must be a positive integer, got {batch}")
        g = self.graph
        with quoting(self.source, g.graph["path"]):
            results = passes.run(g, passes.Options(batch, dtype))
        return Analysis(self, batch, dtype, results["plan_memory"])

    def to_net(self) -> str:
        from .emit import to_net
        return to_net(self.graph)

    def to_prototxt(self) -> str:
        from .emit import to_prototxt
        return to_prototxt(self.graph)

    def compile(self, target: str = "cpu", weights=None, batch: int | None = None, seed: int = 0,
                blobs=(), tune: bool = False, keep_every: bool = False) -> "Executable":
        """Generated kernels for `target` ("cpu" or "cuda"); weights: .npz path, {key: array} or
        None (seeded random). `blobs` names intermediate blobs to keep readable through fusion.
        `tune` (cuda): GEMM tiles timed on this GPU and cached per GPU model (runtime/autotune.py).
        `keep_every`: every layer's output kept unfused and readable (the backward pass's needs)."""
        if target not in ("cpu", "cuda"):
            raise NetcError(f'unknown target "{target}" (use cpu or cuda)')
        if tune and target != "cuda":
            raise NetcError("tile autotuning is for the CUDA target (target=\"cuda\", --gpu)")
        from ..runtime.executor import Executable
        if target == "cuda":
            from ..runtime.cuda_executor import CudaTarget
            return Executable(self, weights=weights, batch=batch, seed=seed, blobs=blobs,
                              target=CudaTarget(tune=tune))
        return Executable(self, weights=weights, batch=batch, seed=seed, blobs=blobs, keep_every=keep_every)

    def export_onnx(self, path, weights=None, *, seed: int = 0, opset: int = 17, batch: int = 1,
                    dynamic_batch: bool = False, blobs=()):
        """Write an ONNX model of this network with `weights` (.npz/.caffemodel path or dict;
        None: the seeded random weights `compile` would use), `blobs` as extra outputs;
        returns the path."""
        from ..runtime import weights as wmod
        from .onnx_export import export
        self.analyze(batch=batch)
        weights = self.graph.graph.get("weights") if weights is None else weights
        w = wmod.load(self.graph, weights) if weights is not None else wmod.random(self.graph, seed)
        export(self, w, path, opset=opset, dynamic_batch=dynamic_batch, batch=batch, blobs=blobs)
        return path

    def draw(self, path=None, *, rankdir="TB", collapse=None, detail="shapes", format=None):
        """Graphviz diagram: writes `path` (format from its suffix) or returns a graphviz.Source."""
        from .diagram import draw
        return draw(self, path, rankdir=rankdir, collapse=collapse, detail=detail, format=format)

    def _repr_svg_(self):
        """Jupyter shows the diagram; None (plain repr) when Graphviz is not installed."""
        from .diagram import svg_text
        try:
            return svg_text(self)
        except NetcError:
            return None

    def __repr__(self) -> str:
        return f"<Network {self.name}: {len(self.graph)} layers>"


def _jsonable(x):
    if isinstance(x, Fraction):
        return int(x) if x.denominator == 1 else float(x)
    return x


@dataclass
class LayerRow:
    name: str
    type: str
    inputs: list
    outputs: list
    input_shapes: list
    output_shapes: list
    params: int
    buffers: int
    macc: int
    flops: int
    ops: dict
    activation_bytes: int
    output_bytes: int
    param_bytes: int
    receptive_field: list
    jump: list
    forward: bool
    inplace: bool
    block: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Analysis:
    def __init__(self, net: Network, batch: int, dtype: str, plan: dict):
        self.network, self.batch, self.dtype = net, batch, dtype
        size = passes.DTYPE_BYTES[dtype]
        g = net.graph
        self.layers: list[LayerRow] = []
        for n in g.nodes:
            d = g.nodes[n]
            ops = d["ops"] if d["forward"] else type(d["ops"])()
            out_bytes = sum(passes.numel(s) for s in d["shapes"]) * size
            (r0, j0), (r1, j1) = d["rf"]
            self.layers.append(LayerRow(
                name=n, type=d["type"], inputs=list(d["bottoms"]), outputs=list(d["tops"]),
                input_shapes=[list(s) for s in d["in_shapes"]], output_shapes=[list(s) for s in d["shapes"]],
                params=d["params"], buffers=d["buffers"], macc=ops.macc, flops=ops.flops,
                ops={"macc": ops.macc, "comp": ops.comp, "add": ops.add, "mul": ops.mul, "div": ops.div,
                     "exp": ops.exp},
                activation_bytes=d["new_bytes"], output_bytes=out_bytes if d["forward"] else 0,
                param_bytes=d["params"] * size, receptive_field=[ceil(r0), ceil(r1)],
                jump=[_jsonable(j0), _jsonable(j1)], forward=d["forward"],
                inplace=bool(d["forward"] and d["inputs"] and d["new_bytes"] == 0),
                block=d["block"]))
        fwd = [r for r in self.layers if r.forward]
        self.totals = {
            "layers": len(self.layers),
            "params": sum(r.params for r in self.layers),
            "buffers": sum(r.buffers for r in self.layers),
            "macc": sum(r.macc for r in fwd),
            "flops": sum(r.flops for r in fwd),
            "activation_bytes": sum(r.activation_bytes for r in fwd),
            "param_bytes": sum(r.param_bytes for r in self.layers),
            "buffer_bytes": sum(r.buffers for r in self.layers) * size,
            "peak_activation_bytes": plan["peak"],
        }

    def training_memory(self, optimizer: str = "sgd") -> dict:
        """Bytes for one training step: weights, their gradients, optimizer state, every
        activation kept for backward (no buffer reuse), and the largest activation gradient pair."""
        t, size = self.totals, passes.DTYPE_BYTES[self.dtype]
        outs = [r.output_bytes for r in self.layers if r.forward]
        state = {"sgd": 0, "momentum": 1, "sgd-momentum": 1, "adam": 2}
        if optimizer not in state:
            raise NetcError(f'unknown optimizer "{optimizer}" (use sgd, momentum or adam)')
        mem = {
            "weights": t["param_bytes"] + t["buffer_bytes"],
            "gradients": t["param_bytes"],
            "optimizer_state": t["param_bytes"] * state[optimizer],
            "activations_kept": sum(outs),
            "activation_gradients": 2 * max(outs, default=0),
        }
        mem["total"] = sum(mem.values())
        mem["optimizer"] = optimizer
        del size
        return mem

    def to_dict(self) -> dict:
        return {"network": self.network.name, "batch": self.batch, "dtype": self.dtype,
                "layers": [r.to_dict() for r in self.layers], "totals": dict(self.totals)}
