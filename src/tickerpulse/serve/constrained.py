"""JSON and JSON-schema constrained decoding: a char-level automaton over a schema subset, and a token masker.

`compile_schema(schema)` turns a JSON schema into nodes; `JsonConstraint` walks the text a model writes one
character at a time and says which vocabulary tokens may come next, so every finished output parses and
validates. Supported: objects with known properties (emitted in declared order; optional ones may be skipped;
`required`, `additionalProperties`), free objects (`{"type": "object"}` / `response_format: json_object`),
arrays (`items`, `minItems`, `maxItems`), strings (`minLength`, `maxLength`, `pattern`), numbers and integers
(`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`), booleans, null, `enum`, `const`, `anyOf` /
`oneOf` / type lists whose branches start differently, local `$ref` (non-recursive). Anything else raises
`UnsupportedSchema` (the server answers 400) instead of being ignored.

The text is canonical compact JSON: `", "` and `": "` separators, no other whitespace, so the fixed parts
(keys, punctuation) are forced without asking the model. A token budget keeps room to close the JSON: a
token is allowed only if the shortest completion after it still fits, so `max_tokens` never cuts an object.

Limitations: strings cannot contain characters whose tokens are partial UTF-8 sequences (most emoji);
bounded numbers have at most 8 decimals and no exponent; a string with a `pattern` has no budget guarantee.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import regex

MAX_DEPTH = 24
MAX_FRAC = 8
MAX_NUM_LEN = 24
ANNOTATIONS = {"description", "title", "examples", "default", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "$defs", "definitions"}
_NUM_RE = {"free": r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
           "bounded": r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?", "int": r"-?(?:0|[1-9][0-9]*)"}


class UnsupportedSchema(ValueError):
    """A schema uses a feature the constrained decoder does not implement (HTTP 400)."""


# ------------------------------------------------------------------------------------------------ nodes


@dataclass(frozen=True, eq=False)
class Str:
    min_len: int = 0
    max_len: int | None = None
    pattern: str | None = None


@dataclass(frozen=True, eq=False)
class Num:
    integer: bool = False
    lo: Fraction | None = None
    hi: Fraction | None = None
    lo_excl: bool = False
    hi_excl: bool = False

    @property
    def kind(self) -> str:
        return "int" if self.integer else "bounded" if self.lo is not None or self.hi is not None else "free"


@dataclass(frozen=True, eq=False)
class Lit:
    texts: tuple[str, ...]  # compact JSON texts (enum / const / true / false / null)


@dataclass(frozen=True, eq=False)
class Obj:
    props: tuple[tuple[str, Any], ...] = ()
    required: frozenset[str] = frozenset()
    free: Any = None  # value node of arbitrary keys (only when there are no declared properties)


@dataclass(frozen=True, eq=False)
class Arr:
    items: Any
    min_items: int = 0
    max_items: int | None = None


@dataclass(frozen=True, eq=False)
class Union:
    options: tuple[Any, ...]


@dataclass(frozen=True, eq=False)
class AnyV:
    """Any JSON value."""


ANY = AnyV()
ANY_STR = Str()
ANY_NUM = Num()
KEY = Str(max_len=256)
FREE_OBJ = Obj(free=ANY)
FREE_ARR = Arr(items=ANY)
BOOL = Lit(("true", "false"))
NULL = Lit(("null",))


def _dump(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))


def first_chars(node: Any) -> set[str]:
    if isinstance(node, Str):
        return {'"'}
    if isinstance(node, Num):
        return set("-0123456789")
    if isinstance(node, Lit):
        return {t[0] for t in node.texts}
    if isinstance(node, Obj):
        return {"{"}
    if isinstance(node, Arr):
        return {"["}
    if isinstance(node, Union):
        return set().union(*(first_chars(o) for o in node.options))
    return set('"-0123456789tfn{[')


# ---------------------------------------------------------------------------------------------- compile


def compile_schema(schema: Any) -> Any:
    """JSON schema (dict) -> node tree. Raises UnsupportedSchema naming the keyword and where it is."""
    if not isinstance(schema, dict):
        raise UnsupportedSchema("the schema must be a JSON object")
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _compile(schema, defs, "#", ())


def _compile(s: Any, defs: dict, path: str, refs: tuple[str, ...]) -> Any:
    if s is True or s == {}:
        return ANY
    if not isinstance(s, dict):
        raise UnsupportedSchema(f"{path}: a schema must be an object or true")
    keys = set(s) - ANNOTATIONS
    if "$ref" in s:
        ref = s["$ref"]
        name = ref.split("/")[-1]
        if not (ref.startswith("#/$defs/") or ref.startswith("#/definitions/")) or name not in defs:
            raise UnsupportedSchema(f"{path}: $ref {ref!r} is not a local #/$defs reference")
        if ref in refs:
            raise UnsupportedSchema(f"{path}: recursive $ref {ref!r} is not supported")
        if keys - {"$ref"}:
            raise UnsupportedSchema(f"{path}: keywords next to $ref are not supported: {sorted(keys - {'$ref'})}")
        return _compile(defs[name], defs, ref, (*refs, ref))
    for comb in ("anyOf", "oneOf"):
        if comb in s:
            if keys - {comb}:
                raise UnsupportedSchema(f"{path}: keywords next to {comb} are not supported: {sorted(keys - {comb})}")
            opts = tuple(_compile(o, defs, f"{path}/{comb}/{i}", refs) for i, o in enumerate(s[comb]))
            return _union(opts, path)
    if "allOf" in s:
        if len(s["allOf"]) == 1 and keys == {"allOf"}:
            return _compile(s["allOf"][0], defs, f"{path}/allOf/0", refs)
        raise UnsupportedSchema(f"{path}: allOf with more than one schema is not supported")
    if "const" in s or "enum" in s:
        values = [s["const"]] if "const" in s else list(s["enum"])
        if not values:
            raise UnsupportedSchema(f"{path}: empty enum")
        _check_keys(keys - {"const", "enum"}, {"type"}, path)
        return Lit(tuple(dict.fromkeys(_dump(v) for v in values)))
    t = s.get("type")
    if isinstance(t, list):
        opts = tuple(_compile({**s, "type": one}, defs, path, refs) for one in t)
        return _union(opts, path)
    if t is None:
        if "properties" in s or "additionalProperties" in s or "required" in s:
            t = "object"
        elif "items" in s:
            t = "array"
        elif keys:
            raise UnsupportedSchema(f"{path}: keywords without a type are not supported: {sorted(keys)}")
        else:
            return ANY
    if t == "object":
        _check_keys(keys, {"type", "properties", "required", "additionalProperties"}, path)
        props = s.get("properties") or {}
        req = frozenset(s.get("required") or [])
        if missing := req - set(props):
            if props:
                raise UnsupportedSchema(f"{path}: required names unknown properties {sorted(missing)}")
        compiled = tuple((k, _compile(v, defs, f"{path}/properties/{k}", refs)) for k, v in props.items())
        extra = s.get("additionalProperties", True)
        if not compiled:
            return Obj(free=None if extra is False else _compile(extra, defs, f"{path}/additionalProperties", refs))
        return Obj(props=compiled, required=req)
    if t == "array":
        _check_keys(keys, {"type", "items", "minItems", "maxItems"}, path)
        items = _compile(s.get("items", True), defs, f"{path}/items", refs)
        return Arr(items, int(s.get("minItems", 0)), None if s.get("maxItems") is None else int(s["maxItems"]))
    if t == "string":
        _check_keys(keys, {"type", "minLength", "maxLength", "pattern"}, path)
        pat = s.get("pattern")
        if pat is not None:
            pat = pat[1:] if pat.startswith("^") else ".*" + pat
            pat = pat[:-1] if pat.endswith("$") and not pat.endswith("\\$") else pat + ".*"
            try:
                regex.compile(pat)
            except regex.error as exc:
                raise UnsupportedSchema(f"{path}: bad pattern: {exc}") from None
        mx = s.get("maxLength")
        return Str(int(s.get("minLength", 0)), None if mx is None else int(mx), pat)
    if t in ("number", "integer"):
        _check_keys(keys, {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}, path)
        lo, hi, lo_x, hi_x = s.get("minimum"), s.get("maximum"), False, False
        for key, is_lo in (("exclusiveMinimum", True), ("exclusiveMaximum", False)):
            v = s.get(key)
            if isinstance(v, bool):  # draft-4 style flag
                lo_x, hi_x = (v, hi_x) if is_lo else (lo_x, v)
            elif v is not None:
                if is_lo:
                    lo, lo_x = v, True
                else:
                    hi, hi_x = v, True
        f = lambda v: None if v is None else Fraction(str(v))  # noqa: E731
        return Num(t == "integer", f(lo), f(hi), lo_x, hi_x)
    if t == "boolean":
        _check_keys(keys, {"type"}, path)
        return BOOL
    if t == "null":
        _check_keys(keys, {"type"}, path)
        return NULL
    raise UnsupportedSchema(f"{path}: type {t!r} is not supported")


def _check_keys(keys: set[str], allowed: set[str], path: str) -> None:
    if bad := sorted(keys - allowed):
        raise UnsupportedSchema(f"{path}: schema keyword(s) {bad} not supported by constrained decoding")


def _union(opts: tuple[Any, ...], path: str) -> Any:
    if len(opts) == 1:
        return opts[0]
    seen: set[str] = set()
    for o in opts:
        fc = first_chars(o)
        if fc & seen:
            raise UnsupportedSchema(f"{path}: anyOf/oneOf branches that start alike (e.g. two objects) are not supported")
        seen |= fc
    return Union(opts)


# ---------------------------------------------------------------------------------------------- numbers


def _num_ok_prefix(buf: str, node: Num) -> bool:
    if len(buf) > MAX_NUM_LEN or not regex.fullmatch(_NUM_RE[node.kind], buf, partial=True):
        return False
    if node.lo is None and node.hi is None:
        return True
    if "." in buf and len(buf.split(".")[1]) > MAX_FRAC:
        return False
    return any(_overlaps(a, b, node) for a, b in _reachable(buf, node))


def _num_complete(buf: str, node: Num) -> bool:
    if not regex.fullmatch(_NUM_RE[node.kind], buf):
        return False
    v = Fraction(buf)
    return _overlaps(v, v, node)


def _overlaps(a: Fraction, b: Fraction, n: Num) -> bool:
    if a > b:
        return False
    if n.lo is not None and (b < n.lo or (b == n.lo and n.lo_excl)):
        return False
    return not (n.hi is not None and (a > n.hi or (a == n.hi and n.hi_excl)))


def _reachable(buf: str, node: Num) -> list[tuple[Fraction, Fraction]]:
    """Closed value intervals covering every number that extends `buf` (bounded, no exponent)."""
    neg = buf.startswith("-")
    body = buf[1:] if neg else buf
    eps = Fraction(1) if node.integer else Fraction(1, 10**MAX_FRAC)
    if body == "":
        mags = [(Fraction(0), Fraction(10) ** 15)]
    elif "." not in body:
        d = int(body)
        if body == "0":
            mags = [(Fraction(0), Fraction(0) if node.integer else 1 - eps)]
        else:
            mags = [(Fraction(d * 10**k), Fraction((d + 1) * 10**k) - eps) for k in range(0, 16 - len(body))]
    else:
        ip, fp = body.split(".")
        room = MAX_FRAC - len(fp)
        if fp == "":
            mags = [(Fraction(int(ip)), Fraction(int(ip) + 1) - eps)]
        else:
            base = Fraction(f"{ip}.{fp}")
            mags = [(base, base + Fraction(1, 10 ** len(fp)) - eps if room > 0 else base)]
    return [(-b, -a) if neg else (a, b) for a, b in mags]


def _num_completion(buf: str, node: Num) -> str | None:
    """Shortest suffix that makes `buf` a complete in-range number (breadth first over digits and '.')."""
    frontier = [buf]
    for _ in range(12):
        nxt = []
        for b in frontier:
            if b and b != "-" and _num_complete(b, node):
                return b[len(buf):]
        for b in frontier:
            for ch in "0123456789.-" if not b else "0123456789.":
                c = b + ch
                if _num_ok_prefix(c, node):
                    nxt.append(c)
        frontier = nxt[:400]
        if not frontier:
            return None
    return None


# --------------------------------------------------------------------------------------------- automaton
# A state is a tuple of frames, bottom first; frames are tuples so states can be shared, hashed and cached.
#   ("R", done)                      root       ("V", node)               a value not started yet
#   ("S", node, n, esc, val)         string     ("N", node, buf)          number
#   ("L", texts, pos)                literal / key / enum
#   ("O", node, phase, idx, key)     object: 0 after '{', 1 in key, 2 ':', 3 ' ' after ':', 4 in value,
#                                    5 after value, 6 ' ' after ',', 7 '"' expected
#   ("A", node, phase, count)        array: 0 after '[', 4 in value, 5 after value, 6 ' ' after ','


def initial_state(node: Any) -> tuple:
    return (("R", False), ("V", node))


def _key_choices(node: Obj, idx: int) -> list[int]:
    out = []
    for j in range(idx, len(node.props)):
        out.append(j)
        if node.props[j][0] in node.required:
            break
    return out


def _closable(node: Obj, idx: int) -> bool:
    return node.free is not None or not any(k in node.required for k, _ in node.props[idx:])


def _more_keys(node: Obj, idx: int) -> bool:
    return node.free is not None or idx < len(node.props)


def _push_value(st: tuple, node: Any, ch: str) -> tuple | None:
    """Start a value of `node` with `ch` on top of `st`."""
    if isinstance(node, Union):
        for o in node.options:
            if ch in first_chars(o):
                return _push_value(st, o, ch)
        return None
    if isinstance(node, AnyV):
        node = {'"': ANY_STR, "{": FREE_OBJ, "[": FREE_ARR, "t": BOOL, "f": BOOL, "n": NULL}.get(ch, ANY_NUM)
    if isinstance(node, Str):
        return st + (("S", node, 0, 0, "" if node.pattern else None),) if ch == '"' else None
    if isinstance(node, Num):
        return st + (("N", node, ch),) if ch in "-0123456789" and _num_ok_prefix(ch, node) else None
    if isinstance(node, Lit):
        return _lit_step(st, tuple(t for t in node.texts), 0, ch)
    if len(st) > MAX_DEPTH:
        return None
    if isinstance(node, Obj):
        return st + (("O", node, 0, 0, -1),) if ch == "{" else None
    if isinstance(node, Arr):
        return st + (("A", node, 0, 0),) if ch == "[" else None
    return None


def _lit_step(st: tuple, texts: tuple[str, ...], pos: int, ch: str) -> tuple | None:
    left = tuple(t for t in texts if len(t) > pos and t[pos] == ch)
    if not left:
        return None
    pos += 1
    if any(len(t) == pos for t in left) and all(len(t) == pos for t in left):
        return _finish(st, ("L", left, pos))
    return st + (("L", left, pos),)


def _finish(st: tuple, child: tuple) -> tuple:
    """`child` (no longer on st) is complete: update the parent on top of st."""
    parent = st[-1]
    kind = parent[0]
    if kind == "R":
        return st[:-1] + (("R", True),)
    if kind == "O":
        _, node, phase, idx, key = parent
        if phase == 1:
            if child[0] == "L":
                text = next(t for t in child[1] if len(t) == child[2])
                key = next(j for j in range(idx, len(node.props)) if _dump(node.props[j][0]) == text)
            return st[:-1] + (("O", node, 2, idx, key),)
        return st[:-1] + (("O", node, 5, key + 1 if node.free is None else idx, -1),)
    if kind == "A":
        return st[:-1] + (("A", parent[1], 5, parent[3] + 1),)
    raise AssertionError(f"frame {kind} cannot hold a child")


def step(st: tuple | None, ch: str) -> tuple | None:
    """The state after character `ch`, or None if `ch` cannot come next."""
    if st is None:
        return None
    top = st[-1]
    kind = top[0]
    rest = st[:-1]
    if kind == "R":
        return None
    if kind == "V":
        return _push_value(rest, top[1], ch)
    if kind == "S":
        return _str_step(rest, top, ch)
    if kind == "N":
        node, buf = top[1], top[2]
        if ch in "0123456789-+.eE" and _num_ok_prefix(buf + ch, node):
            return rest + (("N", node, buf + ch),)
        return step(_finish(rest, top), ch) if _num_complete(buf, node) else None
    if kind == "L":
        texts, pos = top[1], top[2]
        nxt = _lit_step(rest, texts, pos, ch)
        if nxt is None and any(len(t) == pos for t in texts):
            return step(_finish(rest, ("L", tuple(t for t in texts if len(t) == pos), pos)), ch)
        return nxt
    if kind == "O":
        return _obj_step(rest, top, ch)
    if kind == "A":
        return _arr_step(rest, top, ch)
    return None


def _str_step(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, node, n, esc, val = top
    if esc == 1:
        if ch == "u" and node.pattern is None:
            return rest + (("S", node, n, 2, val),)
        if ch not in '"\\/bfnrt':
            return None
        v = None if val is None else val + {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}.get(ch, ch)
        if v is not None and not regex.fullmatch(node.pattern, v, partial=True):
            return None
        return rest + (("S", node, n + 1, 0, v),)
    if esc >= 2:  # \uXXXX: esc 2..5 = digit to read; 6 = second digit after a 'd' (no lone surrogates)
        if ch not in "0123456789abcdefABCDEF" or (esc == 6 and ch not in "01234567"):
            return None
        if esc == 2 and ch in "dD":
            return rest + (("S", node, n, 6, val),)
        esc = 3 if esc == 6 else esc
        return rest + (("S", node, n + 1 if esc == 5 else n, 0 if esc == 5 else esc + 1, val),)
    if ch == '"':
        if n < node.min_len or (node.pattern is not None and not regex.fullmatch(node.pattern, val)):
            return None
        return _finish(rest, top)
    if ord(ch) < 0x20 or ch == "\ufffd" or (node.max_len is not None and n + 1 > node.max_len):
        return None
    if ch == "\\":
        return rest + (("S", node, n, 1, val),)
    if val is not None:
        if not regex.fullmatch(node.pattern, val + ch, partial=True):
            return None
        return rest + (("S", node, n + 1, 0, val + ch),)
    return rest + (("S", node, n + 1, 0, None),)


def _obj_step(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, node, phase, idx, key = top
    if phase in (0, 7) and ch == '"':
        me = ("O", node, 1, idx, key)
        if node.free is not None:
            return rest + (me, ("S", KEY, 0, 0, None))
        texts = tuple(_dump(node.props[j][0]) for j in _key_choices(node, idx))
        return _lit_step(rest + (me,), texts, 0, ch) if texts else None
    if ch == "}" and phase in (0, 5) and _closable(node, idx):
        return _finish(rest, top)
    if phase == 2 and ch == ":":
        return rest + (("O", node, 3, idx, key),)
    if phase == 3 and ch == " ":
        value = node.free if node.free is not None else node.props[key][1]
        return rest + (("O", node, 4, idx, key), ("V", value))
    if phase == 5 and ch == "," and _more_keys(node, idx):
        return rest + (("O", node, 6, idx, key),)
    if phase == 6 and ch == " ":
        return rest + (("O", node, 7, idx, key),)
    return None


def _arr_step(rest: tuple, top: tuple, ch: str) -> tuple | None:
    _, node, phase, count = top
    if ch == "]" and phase in (0, 5) and count >= node.min_items:
        return _finish(rest, top)
    if phase == 0 and (node.max_items is None or node.max_items > 0):
        return step(rest + (("A", node, 4, count), ("V", node.items)), ch)
    if phase == 5 and ch == "," and (node.max_items is None or count < node.max_items):
        return rest + (("A", node, 6, count),)
    if phase == 6 and ch == " ":
        return rest + (("A", node, 4, count), ("V", node.items))
    return None


def feed(st: tuple | None, text: str) -> tuple | None:
    for ch in text:
        st = step(st, ch)
        if st is None:
            return None
    return st


def is_complete(st: tuple) -> bool:
    """The text so far is a whole valid value (a number at the end may still grow)."""
    while st and st[-1][0] in ("N", "L"):
        top = st[-1]
        if top[0] == "N" and not _num_complete(top[2], top[1]):
            return False
        if top[0] == "L":
            if not any(len(t) == top[2] for t in top[1]):
                return False
            top = ("L", tuple(t for t in top[1] if len(t) == top[2]), top[2])
        st = _finish(st[:-1], top)
    return bool(st) and st[-1] == ("R", True)




# -------------------------------------------------------------------------------- completion and forcing

_COMPLETIONS: OrderedDict[tuple, str | None] = OrderedDict()


def min_value(node: Any) -> str | None:
    """The shortest valid JSON text for `node` (None when unknown: a string with a pattern)."""
    if isinstance(node, Str):
        if node.pattern:
            tail = _pattern_completion("", node)
            return None if tail is None else '"' + tail
        return '"' + "a" * node.min_len + '"'
    if isinstance(node, Num):
        return _num_completion("", node)
    if isinstance(node, Lit):
        return min(node.texts, key=len)
    if isinstance(node, Obj):
        parts = [(_dump(k), min_value(v)) for k, v in node.props if k in node.required]
        if any(v is None for _, v in parts):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in parts) + "}"
    if isinstance(node, Arr):
        item = min_value(node.items) if node.min_items else ""
        return None if item is None else "[" + ", ".join([item] * node.min_items) + "]"
    if isinstance(node, Union):
        opts = [v for v in (min_value(o) for o in node.options) if v is not None]
        return min(opts, key=len) if opts else None
    return "0"


def _close_top(st: tuple) -> tuple:
    top = st[-1]
    if top[0] == "L":
        top = ("L", tuple(t for t in top[1] if len(t) == top[2]), top[2])
    return _finish(st[:-1], top)


def _top_completion(st: tuple) -> str | None:
    top = st[-1]
    kind = top[0]
    if kind == "V":
        return min_value(top[1])
    if kind == "S":
        node, n, esc = top[1], top[2], top[3]
        if node.pattern is not None:
            return _pattern_completion(top[4], node) if esc == 0 else None
        head = "n" if esc == 1 else "000" if esc == 6 else "0" * (6 - esc) if esc >= 2 else ""
        return head + "a" * max(0, node.min_len - n - (1 if head else 0)) + '"'
    if kind == "N":
        return "" if _num_complete(top[2], top[1]) else _num_completion(top[2], top[1])
    if kind == "L":
        texts, pos = top[1], top[2]
        return "" if any(len(t) == pos for t in texts) else min((t[pos:] for t in texts), key=len)
    if kind == "O":
        _, node, phase, idx, _ = top
        if phase in (0, 5) and _closable(node, idx):
            return "}"
        if phase in (0, 7):
            return '""' if node.free is not None else _dump(node.props[_key_choices(node, idx)[-1]][0])
        return {2: ":", 3: " ", 5: ",", 6: " "}.get(phase)
    if kind == "A":
        _, node, phase, count = top
        if phase in (0, 5) and count >= node.min_items:
            return "]"
        if phase == 0:
            return min_value(node.items)
        return {5: ",", 6: " "}.get(phase)
    return None


def _pattern_completion(val: str, node: Str) -> str | None:
    """Shortest suffix (ASCII letters/digits/space/.-_) closing a pattern string, breadth first."""
    frontier = [val]
    for _ in range(8):
        for v in frontier:
            if len(v) >= node.min_len and regex.fullmatch(node.pattern, v):
                return v[len(val):] + '"'
        nxt = []
        for v in frontier:
            if node.max_len is not None and len(v) >= node.max_len:
                continue
            nxt += [v + c for c in "aA0 .-_" if regex.fullmatch(node.pattern, v + c, partial=True)]
        frontier = nxt[:500]
        if not frontier:
            return None
    return None


def completion(st: tuple) -> str | None:
    """The shortest text that finishes the JSON from state `st` (None if unknown). Cached."""
    hit = _COMPLETIONS.get(st, 0)
    if hit != 0:
        _COMPLETIONS.move_to_end(st)
        return hit
    out: list[str] = []
    s = st
    result: str | None = None
    for _ in range(4096):
        if s[-1] == ("R", True):
            result = "".join(out)
            break
        piece = _top_completion(s)
        if piece is None:
            break
        if piece == "":
            s = _close_top(s)
            continue
        nxt = feed(s, piece)
        if nxt is None:
            break
        out.append(piece)
        s = nxt
    _COMPLETIONS[st] = result
    if len(_COMPLETIONS) > 50000:
        _COMPLETIONS.popitem(last=False)
    return result


def _single_next(st: tuple) -> str | None:
    """The only character that can come next, when the grammar leaves no choice."""
    top = st[-1]
    kind = top[0]
    if kind == "O":
        _, node, phase, idx, _ = top
        if phase in (2, 3, 6, 7):
            return {2: ":", 3: " ", 6: " ", 7: '"'}[phase]
        if phase == 0 and not _closable(node, idx):
            return '"'
        if phase == 5:
            more, close = _more_keys(node, idx), _closable(node, idx)
            return "," if more and not close else "}" if close and not more else None
        return None
    if kind == "A":
        _, node, phase, count = top
        if phase == 6:
            return " "
        if phase == 5:
            more = node.max_items is None or count < node.max_items
            return "," if more and count < node.min_items else "]" if not more else None
        return None
    if kind == "V":
        if isinstance(top[1], Num):
            fc = {c for c in "-0123456789" if _num_ok_prefix(c, top[1])}
        else:
            fc = first_chars(top[1])
        return next(iter(fc)) if len(fc) == 1 else None
    if kind == "L":
        texts, pos = top[1], top[2]
        nxt = {t[pos] for t in texts if len(t) > pos}
        return next(iter(nxt)) if len(nxt) == 1 and not any(len(t) == pos for t in texts) else None
    return None


def forced_text(st: tuple, limit: int = 512) -> tuple[str, tuple]:
    """(text, new state): the characters the grammar forces from `st` (possibly none)."""
    out = []
    for _ in range(limit):
        ch = _single_next(st)
        if ch is None:
            break
        nxt = step(st, ch)
        if nxt is None:
            break
        out.append(ch)
        st = nxt
    return "".join(out), st
