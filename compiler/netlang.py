"""Native .net files -> ModelSpec (elaboration), and the canonical printer behind `netc fmt`.

Elaboration walks the parse tree once, expanding block calls and repeats into plain layers.
Scoping: a block call opens a scope named after its label or `<block><k>`; layers inside are
named `<scope>/<label>` or `<scope>/<short><k>` (conv1, relu2, ...), so generated names are
stable and readable. A reference looks up labels in the current scope, then outward; `in` is
the current block's input; `a.b` is label b inside block instance a; `x[1]` is x's second top.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from .errors import Loc, NetcError, did_you_mean
from .layers import REGISTRY
from .layers.base import Enum, Field, _ALIASES
from .prototxt import syntax_error
from .spec import LayerSpec, ModelSpec

MAX_NUMBER_CHARS = 40       # far past any size or constant; int("9" * 5000) raises

GRAMMAR = Path(__file__).resolve().parent.parent / "grammar" / "netc.lark"
MAX_DEPTH = 64            # nested block calls
# after expansion: analysis costs ~0.15 ms and ~11 kB per layer here (a 100,000-layer chain:
# 15 s, 1.1 GB), so 200,000 keeps `netc analyze` within its 60 s budget; real networks have
# at most a few thousand layers
MAX_LAYERS = 200_000
MAX_NESTING = 100         # parse-tree depth: elaboration and `fmt` recurse over the tree


@lru_cache(maxsize=1)
def parser() -> Lark:
    return Lark(GRAMMAR.read_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_tree(text: str, path: str) -> Tree:
    try:
        tree = parser().parse(text)
    except UnexpectedInput as e:
        raise syntax_error(e, text, path) from None
    except RecursionError:
        raise NetcError("the file nests too deeply to read", Loc(path, 1, 1), source=text) from None
    _check_nesting(tree, text, path)
    return tree


def _check_nesting(tree: Tree, text: str, path: str) -> None:
    """LALR parsing is iterative but everything after it recurses over the tree, so a file of
    `[[[[...` or `1+1+...+1` would end in RecursionError: refuse it here, at the deep spot."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            pos = node if isinstance(node, Token) else node.meta
            loc = Loc(path, getattr(pos, "line", None) or 1, getattr(pos, "column", None) or 1)
            raise NetcError(f"brackets, blocks or operators nest more than {MAX_NESTING} levels deep",
                            loc, source=text)
        if isinstance(node, Tree):
            stack.extend((c, depth + 1) for c in node.children if c is not None)


@dataclass
class Scope:
    path: str
    parent: "Scope | None"
    input: str | None
    env: dict
    names: dict = field(default_factory=dict)      # label -> list of top blob names
    children: dict = field(default_factory=dict)   # instance label -> Scope
    counters: dict = field(default_factory=dict)
    block_type: str = ""
    depth: int = 0
    labels: frozenset = frozenset()  # every label written in this scope's statements
    local: str = ""                  # this block call's own name in its parent
    single: bool = False             # the block's body is one unlabelled layer

    def full(self, local: str) -> str:
        return f"{self.path}/{local}" if self.path else local

    def fresh(self, prefix: str) -> str:
        """An automatic name that no label of this scope takes, written before it or after."""
        while True:
            k = self.counters.get(prefix, 0) + 1
            self.counters[prefix] = k
            name = f"{prefix}{k}"
            if name not in self.labels and name not in self.names and name not in self.children:
                return name

    def own_name(self, local: str, labelled: bool) -> str:
        """The full name of a layer made here. An unlabelled layer that is a block's whole body,
        or whose automatic name repeats the call's (`norm1/norm1`), takes the call's name."""
        if not labelled and self.path and (self.single or local == self.local):
            return self.path
        return self.full(local)


def _written_labels(items, label) -> frozenset:
    """The labels a statement list writes (repeat bodies included; block bodies are their own
    scopes), so automatic names can avoid labels that come later in the file."""
    found, stack = set(), list(items)
    while stack:
        st = stack.pop()
        if not isinstance(st, Tree):
            continue
        if st.data == "repeat_stmt":
            stack.extend(st.children[2].children)
        elif st.data in ("layer_stmt", "input_stmt") and st.children[0] is not None:
            found.add(label(st.children[0]))
            if st.data == "layer_stmt" and st.children[4] is not None:
                found.update(label(t) for t in st.children[4].children)
    return frozenset(found)


def _single_layer(body: Tree, blocks) -> bool:
    stmts = [st for st in body.children if isinstance(st, Tree)]
    return (len(stmts) == 1 and stmts[0].data == "layer_stmt" and stmts[0].children[0] is None
            and str(stmts[0].children[1]) not in blocks and stmts[0].children[4] is None)


class _TooBig(NetcError):
    """The layer count found by the counting pass: the one error that pass reports."""


class Elaborator:
    def __init__(self, text: str, path: str, counting: bool = False):
        self.text, self.path = text, path
        self.counting = counting  # count layers only (see `precount`)
        self.call_counts: dict = {}  # counting: (block, arguments) -> layers one call makes
        self.count = 0
        self.layers: list[LayerSpec] = []
        self.blocks: dict[str, Tree] = {}
        self.name = Path(path).stem
        self.used: set[str] = set()
        self.idle = 0  # repeat passes that made no layer
        self.block_types: dict[str, str] = {}
        self.loops: list[_Loop] = []       # the repeats being walked, outermost first
        self.invariants: dict[int, bool] = {}
        self.body_facts: dict[int, tuple] = {}  # id(block body) -> (its labels, whether one layer)

    def loc(self, item) -> Loc:
        if isinstance(item, Token):
            return Loc(self.path, item.line or 1, item.column or 1)
        meta = getattr(item, "meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return Loc(self.path, meta.line, meta.column)
        return Loc(self.path, 1, 1)

    def error(self, msg, item, hint=None):
        return NetcError(msg, self.loc(item), source=self.text, hint=hint)

    # ---- statements ---------------------------------------------------------------------
    def run(self, tree: Tree) -> ModelSpec:
        for st in tree.children:
            if isinstance(st, Tree) and st.data == "block_def":
                name = st.children[0]
                if str(name) in self.blocks:
                    raise self.error(f'block "{name}" is defined twice', name)
                if str(name) in _ALIASES:
                    raise self.error(f'block "{name}" has the name of a layer type', name)
                self.blocks[str(name)] = st
        self.precount(tree)
        top = Scope("", None, None, {}, labels=_written_labels(tree.children, self.label))
        self.stmts(tree.children, top, None, allow_defs=True)
        return ModelSpec(self.name, self.layers, self.path, self.text, "net", self.block_types)

    def precount(self, tree: Tree) -> None:
        """Count the layers before making any: a repeat whose passes are all alike counts one
        pass times its count, so `repeat i in 100000 { repeat j in 100000 { ... } }` is refused
        in milliseconds instead of after elaborating millions of layers. Any other error is left
        to elaboration, which reports it where it meets it."""
        counter = Elaborator(self.text, self.path, counting=True)
        counter.blocks = self.blocks
        try:
            counter.stmts(tree.children, Scope("", None, None, {}), None, allow_defs=True)
        except _TooBig:
            raise
        except Exception:  # noqa: BLE001 - the same code path raises it again while elaborating
            pass

    def size(self) -> int:
        return self.count if self.counting else len(self.layers)

    def check_count(self, where=None) -> None:
        if self.count <= MAX_LAYERS:
            return
        if self.loops:
            outer = self.loops[0]
            raise _TooBig(f"repeat {outer.count} would expand to more than {MAX_LAYERS} layers "
                          f"(at least {self.count:,})", self.loc(outer.expr), source=self.text)
        raise _TooBig(f"the network expands to more than {MAX_LAYERS:,} layers (at least {self.count:,})",
                      self.loc(where), source=self.text)

    def stmts(self, items, scope: Scope, current: str | None, allow_defs=False) -> str | None:
        for st in items:
            if not isinstance(st, Tree):
                continue
            kind = st.data
            if kind == "network_stmt":
                self.name = self.label(st.children[0])
            elif kind == "input_stmt":
                current = self.input_stmt(st, scope)
            elif kind == "block_def":
                if not allow_defs:
                    raise self.error("blocks are defined at the top level of a file", st)
            elif kind == "repeat_stmt":
                current = self.repeat(st, scope, current)
            elif kind == "layer_stmt":
                current = self.layer_stmt(st, scope, current)
        return current

    def label(self, tok) -> str:
        tok = tok.children[0] if isinstance(tok, Tree) else tok
        return _unquote(tok) if tok.type == "STRING" else str(tok)

    def input_stmt(self, st, scope):
        if self.counting:
            self.count += 1
            return None
        label_tree, shape_expr, *args = st.children
        name = scope.full(self.label(label_tree))
        shape = self.eval(shape_expr, scope)
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise self.error("an input shape is a list of integers such as [1, 3, 224, 224]", shape_expr)
        fields = [Field("shape", shape, self.loc(shape_expr))]
        for a in args:
            if a is None:
                continue
            if a.data != "kwarg":
                raise self.error("input options are named, e.g. (mean_value=[104, 117, 123])", a)
            fields.append(Field(str(a.children[0]), self.eval(a.children[1], scope), self.loc(a.children[0])))
        from .layers.data import TRANSFORM
        preparing = {p.name for p in TRANSFORM}
        type_name = "Input" if all(f.key in preparing for f in fields[1:]) else "Data"
        self.add(LayerSpec(name, type_name, [], [name], fields, self.loc(st), self.loc(st)), scope,
                 self.label(label_tree))
        return name

    def repeat(self, st, scope, current):
        var, count_expr, body = st.children
        count = self.eval(count_expr, scope)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise self.error(f"repeat needs a non-negative integer count, got {_show(count)}", count_expr)
        if count > MAX_LAYERS:
            raise self.error(f"repeat count {count} is more than netc's limit of {MAX_LAYERS}", count_expr)
        frame = _Loop(count, count_expr, self.counting and self.invariant(st))
        self.loops.append(frame)
        saved = scope.env.get(str(var)) if var is not None else None
        passes = min(count, 1) if self.counting and frame.invariant else count
        try:
            for i in range(passes):
                if var is not None:
                    scope.env[str(var)] = i
                start = self.size()
                current = self.stmts(body.children, scope, current)
                made = self.size() - start
                if self.counting:
                    self.count += made * (count - passes)  # the passes alike the first, uncounted
                    self.check_count()
                if not made:
                    self.idle += 1  # passes that make no layers cost time too: bound them
                    if self.idle > MAX_LAYERS:
                        raise self.error(f"repeat loops run more than {MAX_LAYERS} times without making a layer",
                                         count_expr)
        finally:
            self.loops.pop()
        if var is not None:
            if saved is None:
                scope.env.pop(str(var), None)
            else:
                scope.env[str(var)] = saved
        return current

    def invariant(self, st) -> bool:
        """Whether every pass of this repeat makes as many layers as the first: true unless its
        variable reaches a repeat count or a block argument inside it (layer arguments such as
        num_output=i change sizes, not the number of layers)."""
        var = st.children[0]
        if var is None:
            return True
        key = id(st)
        if key not in self.invariants:
            self.invariants[key] = not any(_mentions(e, str(var)) for e in _structural_exprs(st.children[2], self.blocks))
        return self.invariants[key]

    def layer_stmt(self, st, scope: Scope, current):
        label_tree, callee, call_args, inputs, outputs = st.children
        label = self.label(label_tree) if label_tree is not None else None
        args = call_args.children if call_args is not None else []
        args = [a for a in args if a is not None]
        if self.counting:  # no names to resolve: nothing is made
            if str(callee) in self.blocks:
                return self.call_block(self.blocks[str(callee)], args, label, scope, [], st)
            self.count += 1
            self.check_count(st)
            return current
        bottoms, bottom_locs = [], []
        if inputs is not None:
            for ref in inputs.children:
                bottoms.append(self.resolve(ref, scope))
                bottom_locs.append(self.loc(ref))
        elif current is not None:
            bottoms, bottom_locs = [current], [self.loc(callee)]
        name = str(callee)
        if name in self.blocks:
            if outputs is not None:
                raise self.error("a block call names no outputs; label layers inside the block", outputs)
            return self.call_block(self.blocks[name], args, label, scope, bottoms, st)
        layer = _ALIASES.get(name)
        if layer is None:
            raise self.error(f'unknown layer type or block "{name}"'
                             + did_you_mean(name, [*REGISTRY, *self.blocks]), callee)
        fields, declared = [], None
        for a in args:
            if a.data == "posarg":
                raise self.error(f"{layer.type} takes named parameters (e.g. num_output=64)", a)
            key = str(a.children[0])
            value = self.eval(a.children[1], scope)
            if key == "output_shape":
                declared = _declared_shapes(value)
                if declared is None:
                    raise self.error("output_shape is a list of sizes, e.g. [1, 300, 5], or a list of those", a)
                continue
            fields.append(Field(key, value, self.loc(a.children[0])))
        local = label or scope.fresh(layer.short)
        full = scope.own_name(local, label is not None)
        tops = [scope.full(self.label(t)) for t in outputs.children] if outputs is not None else (
            [] if layer.outputs == 0 else [full])
        if not layer.min_inputs and not layer.max_inputs:
            bottoms, bottom_locs = ([], []) if inputs is None else (bottoms, bottom_locs)
        spec = LayerSpec(full, layer.type, bottoms, tops, fields, self.loc(label_tree if label_tree is not None else callee),
                         self.loc(callee), bottom_locs, declared, scope.path, scope.block_type)
        self.add(spec, scope, local)
        if outputs is not None:
            for t in outputs.children:
                scope.names[self.label(t)] = [scope.full(self.label(t))]
        return tops[0] if tops else current

    def add(self, spec: LayerSpec, scope: Scope, local: str):
        if spec.name in self.used:
            raise NetcError(f'duplicate layer name "{spec.name}"', spec.loc, source=self.text,
                            hint="labels must be unique within a block; give this layer another label")
        if len(self.layers) >= MAX_LAYERS:
            raise NetcError(f"the network expands to more than {MAX_LAYERS} layers", spec.loc, source=self.text)
        self.used.add(spec.name)
        self.layers.append(spec)
        scope.names[local] = spec.tops or [spec.name]

    def call_block(self, block: Tree, args, label, scope: Scope, bottoms, st):
        bname, *rest = block.children
        body = rest[-1]
        params = [p for p in rest[:-1] if p is not None]
        if scope.depth >= MAX_DEPTH:
            raise self.error(f'blocks nest more than {MAX_DEPTH} deep (does "{bname}" call itself?)', st)
        env: dict = {}
        names = [str(p.children[0]) for p in params]
        positional = [a for a in args if a.data == "posarg"]
        if len(positional) > len(params):
            raise self.error(f'block "{bname}" takes {len(params)} parameter(s), got {len(positional)}', st)
        for p, a in zip(params, positional):
            env[str(p.children[0])] = self.eval(a.children[0], scope)
        for a in args:
            if a.data == "kwarg":
                key = str(a.children[0])
                if key not in names:
                    raise self.error(f'block "{bname}" has no parameter "{key}"' + did_you_mean(key, names), a.children[0])
                if key in env:
                    raise self.error(f'parameter "{key}" given twice', a.children[0])
                env[key] = self.eval(a.children[1], scope)
        for p in params:
            key, default = str(p.children[0]), p.children[1]
            if key not in env:
                if default is None:
                    raise self.error(f'block "{bname}" needs parameter "{key}"', st)
                env[key] = self.eval(default, Scope("", None, None, dict(env)))
        if len(bottoms) > 1:
            raise self.error("a block takes one input (use `in` inside it, and labels for others)", st)
        if self.counting:
            # a block called again with the same arguments makes as many layers: count it once
            # (blocks that each call the previous one twice would otherwise take 2^depth calls)
            key = (str(bname), repr(sorted(env.items())))
            if key in self.call_counts:
                self.count += self.call_counts[key]
                self.check_count(st)
                return None
            start = self.count
        local = label or scope.fresh(str(bname))
        if id(body) not in self.body_facts:
            self.body_facts[id(body)] = (_written_labels(body.children, self.label),
                                         _single_layer(body, self.blocks))
        labels, single = self.body_facts[id(body)]
        child = Scope(scope.full(local), scope, bottoms[0] if bottoms else None, env,
                      block_type=str(bname), depth=scope.depth + 1, labels=labels, local=local, single=single)
        self.block_types[child.path] = str(bname)
        result = self.stmts(body.children, child, child.input)
        if self.counting:
            self.call_counts[key] = self.count - start
        scope.children[local] = child
        scope.names[local] = [result] if result else []
        return result

    # ---- references and expressions ------------------------------------------------------
    def resolve(self, ref: Tree, scope: Scope) -> str:
        parts = [t for t in ref.children if t is not None]
        index = 0
        if parts and isinstance(parts[-1], Token) and parts[-1].type == "INT":
            index = int(parts[-1])
            parts = parts[:-1]
        first = parts[0]
        if first.type == "IN":
            s = scope
            if s.input is None:
                raise self.error("`in` is used outside a block, or the block has no input", first)
            if len(parts) > 1 or index:
                raise self.error("`in` is a single tensor", ref)
            return s.input
        key = _unquote(first) if first.type == "STRING" else str(first)
        s = scope
        while s is not None and key not in s.names and key not in s.children:
            s = s.parent
        if s is None:
            visible = [n for sc in _chain(scope) for n in sc.names]
            raise self.error(f'unknown name "{key}"' + did_you_mean(key, visible), first)
        for part in parts[1:]:
            if key not in s.children:
                raise self.error(f'"{key}" is not a block instance', part)
            s = s.children[key]
            key = _unquote(part) if part.type == "STRING" else str(part)
            if key not in s.names:
                raise self.error(f'block instance has no "{key}"' + did_you_mean(key, list(s.names)), part)
        tops = s.names.get(key)
        if not tops:
            raise self.error(f'"{key}" has no output to read', first)
        if index >= len(tops):
            raise self.error(f'"{key}" has {len(tops)} output(s); [{index}] is out of range', ref)
        return tops[index]

    def eval(self, node, scope: Scope):
        if isinstance(node, Token):
            node = Tree("name", [node])
        kind = node.data
        ch = node.children
        if kind == "number":
            text = str(ch[0])
            if len(text) > MAX_NUMBER_CHARS:
                raise self.error(f"number with {len(text)} characters is too large", ch[0])
            return int(text) if re.fullmatch(r"\d+", text) else float(text)
        if kind == "string":
            return _unquote(ch[0])
        if kind == "name":
            word = str(ch[0])
            for s in _chain(scope):
                if word in s.env:
                    return s.env[word]
                if s.block_type:
                    break  # a block body sees its parameters, not its caller's
            return {"true": True, "false": False}.get(word, Enum(word))
        if kind == "list":
            return [self.eval(c, scope) for c in ch if c is not None]
        if kind == "message":
            return [Field(str(kv.children[0]), self.eval(kv.children[1], scope), self.loc(kv.children[0]))
                    for kv in ch if kv is not None]
        if kind == "neg":
            v = self.eval(ch[0], scope)
            self.number(v, ch[0])
            return -v
        a, b = self.eval(ch[0], scope), self.eval(ch[1], scope)
        self.number(a, ch[0])
        self.number(b, ch[1])
        if kind == "add":
            return a + b
        if kind == "sub":
            return a - b
        if kind == "mul":
            return a * b
        if b == 0 and kind in ("div", "floordiv", "mod"):
            raise self.error("division by zero", node)
        if kind == "div":
            return a // b if isinstance(a, int) and isinstance(b, int) and a % b == 0 else a / b
        if kind == "floordiv":
            return a // b
        return a % b

    def number(self, v, node):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(f"arithmetic needs numbers, got {_show(v)}", node)


@dataclass
class _Loop:
    count: int
    expr: Tree
    invariant: bool


def _structural_exprs(body: Tree, blocks: dict):
    """Expressions in a repeat body that decide how many layers it makes: nested repeat counts
    and block-call arguments."""
    for node in body.iter_subtrees():
        if node.data == "repeat_stmt":
            yield node.children[1]
        elif node.data == "layer_stmt" and str(node.children[1]) in blocks and node.children[2] is not None:
            yield node.children[2]


def _mentions(expr, name: str) -> bool:
    if isinstance(expr, Token):
        return expr.type == "NAME" and str(expr) == name
    return any(isinstance(t, Token) and t.type == "NAME" and str(t) == name for t in expr.scan_values(lambda v: True))


def _chain(scope):
    while scope is not None:
        yield scope
        scope = scope.parent


def _show(v) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def _unquote(tok) -> str:
    """\\n, \\t and \\xHH (a code point below 256, as `netc convert` writes control
    characters); any other escaped character stands for itself."""
    raw = str(tok)[1:-1]

    def one(m):
        e = m.group(1)
        if e[0] == "x" and len(e) == 3:
            return chr(int(e[1:], 16))
        return {"n": "\n", "t": "\t"}.get(e[0], e[0]) + e[1:]
    return re.sub(r"\\(x[0-9A-Fa-f]{2}|.)", one, raw)


def _declared_shapes(v):
    if isinstance(v, list) and v and all(isinstance(d, int) and d > 0 for d in v):
        return [tuple(v)]
    if isinstance(v, list) and v and all(isinstance(s, list) for s in v):
        shapes = [_declared_shapes(s) for s in v]
        return None if None in shapes else [s[0] for s in shapes]
    return None


def load(text: str, path: str) -> ModelSpec:
    return Elaborator(text, path).run(parse_tree(text, path))


# ---- canonical printer (`netc fmt`) ------------------------------------------------------
def format_source(text: str, path: str) -> str:
    """Canonical layout: two-space indentation per nesting level, one space between chained
    layers, `a=b` arguments, comments kept. Statements that shared a source line still share
    one, so concise files stay concise; `fmt` is idempotent."""
    tree = parse_tree(text, path)
    comments = _comments(text)
    out: list[str] = []
    _fmt_body(tree.children, 0, out, comments, text)
    for line in sorted(comments):  # comments after the last statement
        out.append(comments[line][1])
    return "\n".join(out).rstrip("\n") + "\n"


def _comments(text: str) -> dict[int, tuple[bool, str]]:
    """line -> (whole_line, comment text) for every # comment outside strings."""
    found = {}
    for tok in re.finditer(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|#[^\n]*', text):
        if tok.group().startswith("#"):
            line = text.count("\n", 0, tok.start()) + 1
            start = text.rfind("\n", 0, tok.start()) + 1
            found[line] = (text[start:tok.start()].strip() == "", tok.group().rstrip())
    return found


def _fmt_body(stmts, depth, out, comments, text):
    pad = "  " * depth
    groups: list[tuple[int, list]] = []
    for st in stmts:
        if not isinstance(st, Tree):
            continue
        line = st.meta.line
        if groups and groups[-1][0] == line and st.data == "layer_stmt" and groups[-1][1][-1].data == "layer_stmt":
            groups[-1][1].append(st)
        else:
            groups.append((line, [st]))
    for line, group in groups:
        for cl in sorted(l for l in comments if l < line and comments[l][0]):
            out.append(pad + comments.pop(cl)[1])
        first = group[0]
        if first.data in ("block_def", "repeat_stmt") and first.meta.end_line != first.meta.line:
            head = _fmt_head(first)
            out.append(f"{pad}{head} {{" + _trailing(comments, line))
            body = first.children[-1]
            _fmt_body(body.children, depth + 1, out, comments, text)
            for cl in sorted(l for l in comments if l < first.meta.end_line and comments[l][0]):
                out.append("  " * (depth + 1) + comments.pop(cl)[1])
            out.append(pad + "}" + _trailing(comments, first.meta.end_line))
            continue
        out.append(pad + " ".join(_fmt_stmt(s) for s in group) + _trailing(comments, line))


def _trailing(comments, line) -> str:
    if line in comments and not comments[line][0]:
        return "  " + comments.pop(line)[1]
    return ""


def _fmt_head(st) -> str:
    if st.data == "block_def":
        name, *params = st.children[:-1]
        ps = [f"{p.children[0]}" + (f"={_fmt_expr(p.children[1])}" if p.children[1] is not None else "")
              for p in params if p is not None]
        return f"block {name}({', '.join(ps)})"
    var, count, _ = st.children
    return f"repeat {var} in {_fmt_expr(count)}" if var is not None else f"repeat {_fmt_expr(count)}"


def _fmt_stmt(st) -> str:
    kind = st.data
    if kind == "network_stmt":
        return f"network {_fmt_label(st.children[0])}"
    if kind == "input_stmt":
        label, shape, *args = st.children
        args = [a for a in args if a is not None]
        return f"input {_fmt_label(label)}: {_fmt_expr(shape)}" + (f" ({', '.join(_fmt_arg(a) for a in args)})" if args else "")
    if kind in ("block_def", "repeat_stmt"):
        return f"{_fmt_head(st)} {{ " + " ".join(_fmt_stmt(s) for s in st.children[-1].children if isinstance(s, Tree)) + " }"
    label, callee, call_args, inputs, outputs = st.children
    s = (f"{_fmt_label(label)}: " if label is not None else "") + str(callee)
    if call_args is not None:
        s += "(" + ", ".join(_fmt_arg(a) for a in call_args.children if a is not None) + ")"
    if inputs is not None:
        s += " <- " + ", ".join(_fmt_ref(r) for r in inputs.children)
    if outputs is not None:
        s += " -> " + ", ".join(_fmt_label(t) for t in outputs.children)
    return s


def _fmt_label(t) -> str:
    tok = t.children[0] if isinstance(t, Tree) else t
    return str(tok)


def _fmt_ref(r) -> str:
    parts = [p for p in r.children if p is not None]
    if parts and parts[-1].type == "INT":
        return ".".join(map(str, parts[:-1])) + f"[{parts[-1]}]"
    return ".".join(map(str, parts))


def _fmt_arg(a) -> str:
    if a.data == "kwarg":
        return f"{a.children[0]}={_fmt_expr(a.children[1])}"
    return _fmt_expr(a.children[0])


PRECEDENCE = {"add": 1, "sub": 1, "mul": 2, "div": 2, "floordiv": 2, "mod": 2, "neg": 3}
OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%"}


def _fmt_expr(e, parent=0) -> str:
    if isinstance(e, Token):
        return str(e)
    k = e.data
    if k in ("number", "string", "name"):
        return str(e.children[0])
    if k == "list":
        return "[" + ", ".join(_fmt_expr(c) for c in e.children if c is not None) + "]"
    if k == "message":
        return "{" + ", ".join(f"{kv.children[0]}={_fmt_expr(kv.children[1])}" for kv in e.children if kv is not None) + "}"
    if k == "neg":
        s = "-" + _fmt_expr(e.children[0], 3)
    else:
        p = PRECEDENCE[k]
        s = f"{_fmt_expr(e.children[0], p)} {OPS[k]} {_fmt_expr(e.children[1], p + 1)}"
    return f"({s})" if PRECEDENCE[k] < parent else s
