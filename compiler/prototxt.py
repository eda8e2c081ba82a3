"""Caffe .prototxt -> ModelSpec: new (`layer`) and V1 (`layers`) syntax, phases, net-level inputs."""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lark import Lark, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import Loc, NetcError, did_you_mean
from .layers.base import Enum, Field, lookup
from .spec import LayerSpec, ModelSpec

GRAMMAR = Path(__file__).resolve().parent.parent / "grammar" / "prototxt.lark"

NET_FIELDS = {"name", "input", "input_dim", "input_shape", "layer", "layers", "force_backward",
              "state", "debug_info"}
LAYER_FIELDS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                "propagate_down", "include", "exclude", "blobs_lr", "weight_decay", "force_backward"}
DIRECTIVE = re.compile(r"#\s*netc:\s*output_shape\s+(.+?)\s*$")
# LayerParameter messages of BVLC Caffe (caffe.proto) and of the forks whose files circulate
# (SSD, PSPNet/DeepLab, SegNet/ENet, Faster R-CNN, R-FCN, YOLO ports, ShuffleNet, caffe-face,
# SphereFace, Intel Caffe): a layer may carry another type's message and Caffe ignores it
KNOWN_MESSAGES = frozenset("""
    accuracy_param argmax_param batch_norm_param bias_param clip_param concat_param contrastive_loss_param
    convolution_param crop_param data_param dropout_param dummy_data_param eltwise_param elu_param
    embed_param exp_param flatten_param hdf5_data_param hdf5_output_param hinge_loss_param
    image_data_param infogain_loss_param inner_product_param input_param log_param loss_param lrn_param
    memory_data_param mvn_param parameter_param pooling_param power_param prelu_param python_param
    recurrent_param reduction_param relu_param reshape_param scale_param sigmoid_param softmax_param
    spp_param slice_param swish_param tanh_param threshold_param tile_param transform_param
    window_data_param
    annotated_data_param detection_evaluate_param detection_output_param multibox_loss_param norm_param
    permute_param prior_box_param video_data_param
    interp_param bn_param upsample_param dense_image_data_param adaptive_bias_channel_param
    roi_pooling_param proposal_param smooth_l1_loss_param psroi_pooling_param roi_align_param
    region_param reorg_param yolo_param shuffle_channel_param center_loss_param
    margin_inner_product_param label_specific_add_param focal_loss_param lstm_param
    deformable_convolution_param convolution_depthwise_param axpy_param normalize_param
    """.split())


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}


def unescape(raw: str) -> str:
    """Protobuf text-format escapes (\\n, \\t, \\xNN, octal \\NNN, ...). They denote bytes, so the
    result is decoded as UTF-8; bytes that are not UTF-8 stay visible as \\xNN."""
    out, pos = bytearray(), 0
    for m in _ESCAPE.finditer(raw):
        out += raw[pos:m.start()].encode("utf-8")
        e = m.group(1)
        if e[0] == "x":
            out.append(int(e[1:], 16))
        elif e[0] in "01234567":
            out.append(int(e, 8) & 0xFF)
        elif e in _SIMPLE:
            out.append(_SIMPLE[e])
        else:
            out += e.encode("utf-8")
        pos = m.end()
    out += raw[pos:].encode("utf-8")
    return out.decode("utf-8", errors="backslashreplace")


class _ToFields(Transformer):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def _loc(self, meta_or_tok):
        return Loc(self.path, meta_or_tok.line, meta_or_tok.column)

    def start(self, items):
        return list(items)

    def scalar_field(self, items):
        name, value = items
        return Field(str(name), value, self._loc(name))

    def message_field(self, items):
        name, *fields, close = items
        f = Field(str(name), list(fields), self._loc(name))
        f.end_line = close.line
        return f

    def string(self, items):
        return unescape(str(items[0])[1:-1])

    def number(self, items):
        text = str(items[0]).rstrip("fF")
        if len(text) > 40:
            tok = items[0]
            raise NetcError(f"number with {len(text)} characters is too large",
                            Loc(self.path, tok.line, tok.column))
        try:
            return int(text)
        except ValueError:
            return float(text)

    def ident(self, items):
        word = str(items[0])
        return {"true": True, "false": False}.get(word, Enum(word))

    def list(self, items):
        return [x for x in items if x is not None]


@lru_cache(maxsize=1)
def parser() -> Lark:
    """Built once; the transformer runs inside the LALR parser, so no parse tree is ever built
    (this halves the time to read a 7,000-line ResNet-152)."""
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False,
                transformer=_ToFields("<string>"))


def parse_fields(text: str, path: str) -> list[Field]:
    p = parser()
    p.options.transformer.path = path
    try:
        fields = p.parse(text)
    except UnexpectedInput as e:
        raise syntax_error(e, text, path) from None
    _check_nesting(text, path)
    return fields


MAX_NESTING = 100
_NESTING_TOKENS = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|#[^\n]*|[{}\[\]]')


def _check_nesting(text: str, path: str) -> None:
    """Parsing is iterative, but converting and comparing nested messages recurse: refuse
    `a { a { a { ...` thousands deep with a located error instead of a RecursionError."""
    depth = 0
    for m in _NESTING_TOKENS.finditer(text):
        c = m.group()
        if c in "{[":
            depth += 1
            if depth > MAX_NESTING:
                line = text.count("\n", 0, m.start()) + 1
                col = m.start() - text.rfind("\n", 0, m.start())
                raise NetcError(f"messages nest more than {MAX_NESTING} levels deep", Loc(path, line, col),
                                source=text)
        elif c in "}]":
            depth -= 1


def syntax_error(e: UnexpectedInput, text: str, path: str) -> NetcError:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        msg = "unexpected end of file (a '}' is missing?)"
    elif isinstance(e, UnexpectedCharacters):
        msg = f"unexpected character {text[e.pos_in_stream]!r}"
        if text[e.pos_in_stream] in "\"'":
            msg = "unterminated string (the closing quote is missing on this line)"
    else:
        tok = e.token
        pretty = {"RBRACE": "'}'", "CLOSE": "'}'", "LBRACE": "'{'", "COLON": "':'", "NAME": "a field name",
                  "$END": "end of file"}
        kind = tok.type.lower() if tok.type.isupper() and tok.type not in pretty else ""
        msg = f"unexpected {kind} {str(tok)!r}".replace("  ", " ")
        expected = sorted(getattr(e, "expected", ()) or ())
        if expected:
            msg += f"; expected {', '.join(pretty.get(x, x) for x in expected[:4])}"
    return NetcError(msg, Loc(path, line, col), source=text)


def _scalar(f: Field, what: str):
    if isinstance(f.value, list):
        raise NetcError(f'"{f.key}" must be a single {what}, not a message', f.loc)
    return f.value


def _string(f: Field) -> str:
    v = _scalar(f, "name")
    if not isinstance(v, (str, Enum)):
        raise NetcError(f'"{f.key}" must be a quoted name, got {v}', f.loc)
    return str(v)


def _phase_ok(fields: list[Field], phase: str) -> bool:
    for f in fields:
        if f.key in ("include", "exclude") and isinstance(f.value, list):
            phases = [str(x.value).upper() for x in f.value if x.key == "phase"]
            if phases and (phase in phases) != (f.key == "include"):
                return False
        if f.key == "phase" and str(f.value).upper() != phase:
            return False
    return True


def load(text: str, path: str, phase: str = "test") -> ModelSpec:
    fields = parse_fields(text, path)
    phase = phase.upper()
    directives = _directives(text, path)
    name = "network"
    layers: list[LayerSpec] = []
    other_phase: list[LayerSpec] = []
    dropped: dict[str, list[str]] = {}
    warnings: list = []
    inputs, dims, shapes = [], [], []
    for f in fields:
        if f.key == "name":
            name = _string(f)
        elif f.key == "input":
            inputs.append(f)
        elif f.key == "input_dim":
            v = _scalar(f, "integer")
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise NetcError(f"input_dim must be a positive integer, got {v}", f.loc)
            dims.append(v)
        elif f.key == "input_shape":
            shapes.append(f)
        elif f.key in ("layer", "layers"):
            if not isinstance(f.value, list):
                raise NetcError(f'"{f.key}" must be a {{ ... }} block', f.loc)
            spec = _layer(f, path, directives, dropped, warnings)
            (layers if _phase_ok(f.value, phase) else other_phase).append(spec)
        elif f.key not in NET_FIELDS:
            raise NetcError(f'unknown network field "{f.key}"' + did_you_mean(f.key, NET_FIELDS), f.loc)
    layers = _borrow_sources(_net_inputs(inputs, dims, shapes, path) + layers, other_phase)
    kept = {id(ls) for ls in layers}
    left_out = [ls.name for ls in other_phase if id(ls) not in kept]
    if left_out:
        dropped = {f"layers of another phase than {phase}": left_out, **dropped}
    return ModelSpec(name, layers, path, text, "prototxt", dropped=dropped, warnings=warnings)


def _borrow_sources(layers: list[LayerSpec], other_phase: list[LayerSpec]) -> list[LayerSpec]:
    """Keep another phase's data layer when this phase reads its blobs and nothing else makes
    them (Inception v3 ships only a TRAIN data layer; its TEST net would have no input)."""
    made = {t for ls in layers for t in ls.tops}
    read = {b for ls in layers for b in ls.bottoms}
    borrowed = []
    for ls in other_phase:
        if not ls.bottoms and lookup(ls.type, ls.loc).family == "data" and read & set(ls.tops) - made:
            borrowed.append(ls)
            made |= set(ls.tops)
    return borrowed + layers


def _net_inputs(inputs, dims, shapes, path) -> list[LayerSpec]:
    if inputs and not dims and not shapes:
        return []   # Caffe's UpgradeNetInput strips a bare `input:` (an Input layer gives the blob)
    if not inputs:
        if dims or shapes:
            f = shapes[0] if shapes else None
            raise NetcError("input_dim/input_shape given without an input name",
                            f.loc if f else Loc(path, 1, 1))
        return []
    out = []
    if shapes:
        if len(shapes) != len(inputs):
            raise NetcError(f"{len(inputs)} input(s) but {len(shapes)} input_shape(s)", inputs[0].loc)
        per = [[Field("shape", s.value, s.loc)] for s in shapes]
    else:
        if len(dims) != 4 * len(inputs):
            raise NetcError(f"{len(inputs)} input(s) need {4 * len(inputs)} input_dim values, got {len(dims)}",
                            inputs[0].loc)
        per = [[Field("shape", dims[4 * i:4 * i + 4], inputs[i].loc)] for i in range(len(inputs))]
    for f, fields in zip(inputs, per):
        blob = _string(f)
        out.append(LayerSpec(blob, "Input", [], [blob], fields, f.loc, f.loc))
    return out


# layer fields an inference graph has no place for: `convert` says it leaves them out
_RATES, _RULES = "learning rates (param { }, blobs_lr, weight_decay)", "phase rules (include, exclude, phase)"
_LOSS, _FILLERS = "loss_weight and propagate_down", "initializers (weight_filler, bias_filler)"
DROPPED = {"param": _RATES, "blobs_lr": _RATES, "weight_decay": _RATES, "include": _RULES, "exclude": _RULES,
           "phase": _RULES, "loss_weight": _LOSS, "propagate_down": _LOSS,
           "weight_filler": _FILLERS, "bias_filler": _FILLERS, "filler": _FILLERS}


def _respell(layer, f: Field, warnings: list) -> Field:
    """A fork's spelling of a Caffe field (Pooling's ceil_mode) as Caffe's, with a warning."""
    if f.key not in layer.respelled:
        return f
    key, values = layer.respelled[f.key]
    value = values.get(str(f.value).lower())
    if value is None:
        raise NetcError(f'{layer.type} "{f.key}" is one of {", ".join(values)}, got {f.value}', f.loc)
    warnings.append((f.loc, f'"{f.key}: {str(f.value).lower()}" is a Caffe fork\'s spelling; read as "{key}: {value}" '
                            f"(BVLC Caffe rejects the field)"))
    return Field(key, Enum(value), f.loc)


def _layer(block: Field, path: str, directives, dropped: dict, warnings: list) -> LayerSpec:
    name = type_name = None
    type_loc = block.loc
    bottoms, tops, bottom_locs, raw = [], [], [], []
    for f in block.value:
        if f.key == "name":
            name = _string(f)
        elif f.key == "type":
            type_name, type_loc = _string(f), f.loc
        elif f.key == "bottom":
            bottoms.append(_string(f))
            bottom_locs.append(f.loc)
        elif f.key == "top":
            tops.append(_string(f))
        else:
            raw.append(f)
    if type_name is None:
        raise NetcError('layer has no "type"', block.loc)
    layer = lookup(type_name, type_loc)
    if name is None:
        name = tops[0] if tops else f"{layer.short}@{block.loc.line}"
    params = []
    left_out = set()
    for f in raw:
        if f.key in layer.messages:
            if not isinstance(f.value, list):
                raise NetcError(f'"{f.key}" must be a {{ ... }} block', f.loc)
            params.extend(_respell(layer, x, warnings) for x in f.value)
            left_out.update(DROPPED[x.key] for x in f.value if x.key in DROPPED)
        elif f.key.endswith("_param") and f.key not in KNOWN_MESSAGES:
            own = did_you_mean(f.key, layer.messages)
            if own:   # pooling_parm: a typo of the layer's own message would drop its settings
                raise NetcError(f'{layer.type} has no message "{f.key}"' + own, f.loc)
            warnings.append((f.loc, f'unknown parameter message "{f.key}" ignored (Caffe and the forks netc '
                                    f'knows have none)' + did_you_mean(f.key, KNOWN_MESSAGES)))
        elif f.key.endswith("_param") or f.key in LAYER_FIELDS:
            left_out.add(DROPPED.get(f.key) or (
                "other layer types' parameter messages" if f.key.endswith("_param") else f.key))
            continue  # Caffe ignores other layers' parameter messages too
        else:
            raise NetcError(f'unknown layer field "{f.key}"'
                            + did_you_mean(f.key, LAYER_FIELDS | set(layer.messages)), f.loc)
    for kind in sorted(left_out):
        dropped.setdefault(kind, []).append(name)
    end = getattr(block, "end_line", block.loc.line)
    shapes, preprocess = directives
    declared = [shape for line, shape in shapes.items() if block.loc.line <= line <= end]
    for line, extra in preprocess.items():
        if block.loc.line <= line <= end:
            params.extend(extra)
    return LayerSpec(name, layer.type, bottoms, tops, params, block.loc, type_loc, bottom_locs,
                     declared[0] if declared else None)


PREPROCESS = re.compile(r"#\s*netc:\s*(?:preprocess|param)\s+(.+?)\s*$")
_SETTING = re.compile(r"([a-z_]+)=(\[[^\]]*\]|[A-Za-z0-9_.+-]+)")


def _preprocess_fields(text: str, loc: Loc) -> list[Field]:
    fields = []
    for key, raw in _SETTING.findall(text):
        try:
            if raw.startswith("["):
                value = [float(v) for v in raw[1:-1].split(",") if v.strip()]
            elif re.fullmatch(r"[A-Za-z_]+", raw):
                value = Enum(raw)
            else:
                value = float(raw)
        except ValueError:
            raise NetcError(f'"# netc:" cannot read {key}={raw}', loc) from None
        fields.append(Field(key, value, loc))
    return fields


def _directives(text: str, path: str) -> tuple[dict[int, list[tuple]], dict[int, list[Field]]]:
    """netc's comments, by line: `# netc: output_shape 1x300x5, 1x4` (shapes for layers netc
    cannot infer) and `# netc: preprocess std_value=[0.229,0.224,0.225] color_order=RGB ...` (the
    preprocessing fields Caffe's transform_param lacks, as netc convert writes them; `# netc: param`
    for another layer's netc-only fields, e.g. Pooling's exclude_pad)."""
    found, preprocess = {}, {}
    for i, line in enumerate(text.splitlines(), 1):
        pre = PREPROCESS.search(line)
        if pre:
            preprocess[i] = _preprocess_fields(pre.group(1), Loc(path, i, pre.start(1) + 1))
            continue
        m = DIRECTIVE.search(line)
        if not m:
            continue
        try:
            shapes = [tuple(int(d) for d in part.strip().lower().split("x")) for part in m.group(1).split(",")]
        except ValueError:
            raise NetcError("output_shape directive wants sizes like 1x300x5 (comma between tops)",
                            Loc(path, i, m.start(1) + 1), source=text) from None
        if any(d <= 0 for s in shapes for d in s):
            raise NetcError("output_shape sizes must be positive", Loc(path, i, m.start(1) + 1), source=text)
        found[i] = shapes
    return found, preprocess
