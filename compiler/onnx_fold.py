"""The shape arithmetic exporters write around Reshape, Slice and Resize (Shape, Gather, Cast,
Unsqueeze, Concat, Div, ConstantOfShape ...), computed with numpy when every input is known, so
the network netc imports holds only layers that touch activations.

A folded integer tensor carries a mask of the elements that came from a batch size (axis 0 of
an activation's Shape): a Reshape to [batch, ...] then copies axis 0 (`0`), so `--batch` still
works on the imported network.
"""
from __future__ import annotations

import numpy as np

MAX_FOLDED = 1 << 24        # elements: a folded tensor larger than this is a weight, not arithmetic

# ONNX TensorProto data types numpy can hold (onnx.TensorProto.DataType)
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
          9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


class Unfoldable(Exception):
    """This node's constant inputs do not make a value netc computes (the reason is the message)."""


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _axes(node_attrs: dict, inputs: list, k: int, opset_moved: int, opset: int):
    """Axes from the attribute (before `opset_moved`) or input k (from it)."""
    if opset < opset_moved:
        return node_attrs.get("axes")
    return _ints(inputs[k]) if len(inputs) > k and inputs[k] is not None else None


def _slice(x, starts, ends, axes, steps):
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[ax % x.ndim] = slice(s, e, st)        # numpy clamps out-of-range bounds as ONNX does
    return x[tuple(index)]


def _binary(f):
    def op(a, ins, opset):
        return f(ins[0], ins[1])
    return op


def _div(a, ins, opset):
    x, y = ins
    if np.issubdtype(x.dtype, np.integer):
        if np.any(y == 0):
            raise Unfoldable("an integer division by zero")
        return (np.trunc(x / y)).astype(x.dtype)    # ONNX integer Div truncates toward zero
    return x / y


def _cast(a, ins, opset):
    to = DTYPES.get(a["to"])
    if to is None:
        raise Unfoldable(f"Cast to data type {a['to']}")
    return ins[0].astype(to)


def _unsqueeze(a, ins, opset):
    axes = _axes(a, ins, 1, 13, opset)
    x = ins[0]
    rank = x.ndim + len(axes)
    for ax in sorted(v % rank for v in axes):
        x = np.expand_dims(x, ax)
    return x


def _squeeze(a, ins, opset):
    axes = _axes(a, ins, 1, 13, opset)
    x = ins[0]
    return np.squeeze(x) if axes is None else np.squeeze(x, tuple(v % x.ndim for v in axes))


def _slice_op(a, ins, opset):
    if opset < 10:
        return _slice(ins[0], a["starts"], a["ends"], a.get("axes"), None)
    get = lambda k: _ints(ins[k]) if len(ins) > k and ins[k] is not None else None  # noqa: E731
    return _slice(ins[0], get(1), get(2), get(3), get(4))


def _reshape(a, ins, opset):
    x, shape = ins[0], _ints(ins[1])
    shape = [x.shape[k] if d == 0 and not a.get("allowzero") else d for k, d in enumerate(shape)]
    return x.reshape(shape)


def _constant_of_shape(a, ins, opset):
    shape = _ints(ins[0])
    if int(np.prod(shape)) > MAX_FOLDED:
        raise Unfoldable(f"a constant of {int(np.prod(shape)):,} elements")
    value = a.get("value")
    fill = np.zeros(1, np.float32) if value is None else value
    return np.full(shape, fill.reshape(-1)[0], fill.dtype)


def _range(a, ins, opset):
    start, limit, delta = (v.reshape(()) for v in ins)
    n = int(np.ceil((limit - start) / delta)) if delta else 0
    if n > MAX_FOLDED:
        raise Unfoldable(f"a Range of {n:,} elements")
    return np.arange(start, limit, delta, dtype=ins[0].dtype)


def _expand(a, ins, opset):
    shape = np.broadcast_shapes(ins[0].shape, tuple(_ints(ins[1])))
    if int(np.prod(shape)) > MAX_FOLDED:
        raise Unfoldable(f"an Expand to {int(np.prod(shape)):,} elements")
    return np.broadcast_to(ins[0], shape).copy()


def _reduce(f, moved):
    def op(a, ins, opset):
        axes = _axes(a, ins, 1, moved, opset)
        axes = None if axes is None else tuple(v % ins[0].ndim for v in axes)
        return f(ins[0], axis=axes, keepdims=bool(a.get("keepdims", 1))).astype(ins[0].dtype)
    return op


def _gather(a, ins, opset):
    return np.take(ins[0], ins[1].astype(np.int64), axis=a.get("axis", 0))


def _concat(a, ins, opset):
    return np.concatenate([v for v in ins if v is not None], axis=a["axis"])


def _transpose(a, ins, opset):
    return np.transpose(ins[0], a.get("perm"))


def _where(a, ins, opset):
    return np.where(ins[0], ins[1], ins[2])


def _tile(a, ins, opset):
    return np.tile(ins[0], _ints(ins[1]))


def _shape_of_const(a, ins, opset):
    shape = np.array(ins[0].shape, np.int64)
    return shape[a.get("start", 0):a.get("end", len(shape))]


# op type -> numpy rule (attributes, inputs (None for an omitted optional one), opset)
FOLD = {
    "Identity": lambda a, ins, o: ins[0], "Cast": _cast, "Shape": _shape_of_const,
    "Size": lambda a, ins, o: np.array(ins[0].size, np.int64),
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Slice": _slice_op,
    "Reshape": _reshape, "Transpose": _transpose, "ConstantOfShape": _constant_of_shape, "Range": _range,
    "Expand": _expand, "Where": _where, "Tile": _tile, "Flatten": lambda a, ins, o: ins[0].reshape(
        int(np.prod(ins[0].shape[:a.get("axis", 1)])), -1),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _div,
    "Pow": _binary(np.power), "Min": lambda a, ins, o: np.minimum.reduce(ins),
    "Max": lambda a, ins, o: np.maximum.reduce(ins), "Equal": _binary(np.equal), "Less": _binary(np.less),
    "Greater": _binary(np.greater), "And": _binary(np.logical_and), "Or": _binary(np.logical_or),
    "Not": lambda a, ins, o: np.logical_not(ins[0]), "Neg": lambda a, ins, o: -ins[0],
    "Abs": lambda a, ins, o: np.abs(ins[0]), "Floor": lambda a, ins, o: np.floor(ins[0]),
    "Ceil": lambda a, ins, o: np.ceil(ins[0]), "Sqrt": lambda a, ins, o: np.sqrt(ins[0]),
    "Reciprocal": lambda a, ins, o: np.reciprocal(ins[0]),
    "ReduceProd": _reduce(np.prod, 18), "ReduceSum": _reduce(np.sum, 13), "ReduceMin": _reduce(np.min, 18),
    "ReduceMax": _reduce(np.max, 18), "ReduceMean": _reduce(np.mean, 18),
}

# ops that move elements without arithmetic: a batch mask follows its elements through them
_MOVES = {"Identity", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Reshape", "Transpose",
          "Expand", "Tile", "Flatten"}


def fold(op: str, attrs: dict, ins: list, masks: list, opset: int):
    """(value, batch mask or None) of `op` over constant inputs; Unfoldable if it cannot be."""
    rule = FOLD[op]
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(rule(attrs, ins, opset))
    except Unfoldable:
        raise
    except (ValueError, IndexError, TypeError, KeyError, OverflowError, MemoryError) as e:
        raise Unfoldable(f"its constant inputs do not fit: {str(e).splitlines()[0][:160]}") from None
    if value.size > MAX_FOLDED:
        raise Unfoldable(f"a folded value of {value.size:,} elements")
    if not any(m is not None and m.any() for m in masks) or not np.issubdtype(value.dtype, np.integer):
        return value, None
    if op in _MOVES:
        # the same rule over the masks moves each flag with its element
        mask_ins = [None if v is None else (m if m is not None else np.zeros(np.shape(v), bool)) if k == 0 or
                    op == "Concat" else v for k, (v, m) in enumerate(zip(ins, masks))]
        if op == "Cast":
            return value, mask_ins[0]
        mask = np.asarray(rule(attrs, mask_ins, opset)).astype(bool)
        return value, mask
    # arithmetic on a batch size: every element it touched depends on the batch
    return value, np.broadcast_to(np.logical_or.reduce(
        [np.broadcast_to(m if m is not None else False, value.shape) for m in masks]), value.shape).copy()
