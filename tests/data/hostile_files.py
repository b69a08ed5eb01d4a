"""Hypothesis strategies for hostile dataset files (JSONL and CSV), shared by the data and distill tests.

Lines mix valid rows of every reader with broken ones: the right field names holding any JSON (wrong types,
NaN, lone surrogates), arbitrary JSON, random bytes, deep nesting, huge integers, other encodings, BOMs and
blank lines; CSV files add quoting, embedded newlines, fields around the csv module's 131,072 limit.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

GOOD = {"id": "g-1", "text": "$AAPL beats on revenue", "label": "positive"}
CHAT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_FIELDS = ("id", "text", "label", "score", "tickers", "targets", "entities", "messages", "sentence", "original_label",
           "prompt", "completion", "source", "meta")
_ROWS = st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6)
_VALID = st.sampled_from([
    json.dumps(GOOD), json.dumps(CHAT), json.dumps({"text": "Oil slumps", "label": "negative", "score": -0.5}),
    json.dumps({"id": "f", "text": "$TSLA up", "targets": [{"target": "TSLA", "score": 0.4}], "kind": "post"}),
    json.dumps({"text": "Markets drift", "label": 2, "original_label": 2}),
    json.dumps({"id": "fe", "text": "Tesla Inc <TSLA.O> rose, Ford fell",
                "entities": [{"name": "Tesla Inc", "start": 0, "end": 9, "label": "positive"},
                             {"name": "Ford", "label": "negative"}]}),
])


@st.composite
def _json_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "valid", "row", "json", "bytes", "deep", "bigint", "encoding", "bom", "blank"]))
    if kind == "valid":
        return draw(_VALID).encode()
    if kind == "row":  # the right field names with any JSON in them: wrong types, NaN, surrogates
        return json.dumps(draw(_ROWS), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(_JSON)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=120))
    if kind == "deep":
        n = draw(st.sampled_from([5, 900, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return f'{{"text": "x", "label": "positive", "n": {opener * n}1{closer * n}}}'.encode()
    if kind == "bigint":
        digits = draw(st.sampled_from([20, 400, 4300, 4301, 6000]))
        return b'{"text": "x", "label": "positive", "score": ' + b"7" * digits + b"}"
    if kind == "encoding":
        return draw(_VALID).replace("Oil", "Öl café").encode(draw(st.sampled_from(["latin-1", "utf-16", "cp1252"])))
    if kind == "bom":
        return b"\xef\xbb\xbf" + draw(_VALID).encode()
    return b"   "


JSONL_FILES = st.lists(_json_line(), min_size=0, max_size=8).map(lambda lines: b"\n".join(lines))

_CELLS = st.one_of(
    st.sampled_from(["positive", "negative", "neutral", "bullish", "0", "1", "-1", "2", "", "NaN", "inf", "1e999",
                     "0.5", "-0.3", "$AAPL", '"', '""', "a,b", "x\ny"]),
    st.text(max_size=12),
    st.sampled_from([131_071, 131_073]).map(lambda n: "y" * n),
)


CSV_FLAGS = {"text,label": [], "text,label,score": ["--score-col", "score"], "label,text": [], "a,b": [], "": [],
              "text,score": ["--label-col", "", "--score-col", "score"], "text": []}


@st.composite
def csv_file(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """(file bytes, the column flags its header calls for)."""
    header = draw(st.sampled_from(sorted(CSV_FLAGS)))
    lines = [header.encode()]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["cells", "cells", "bytes", "latin1"]))
        if kind == "cells":
            cells = draw(st.lists(_CELLS, min_size=0, max_size=4))
            quote = draw(st.booleans())
            lines.append(",".join(('"' + c.replace('"', '""') + '"') if quote else c for c in cells)
                         .encode("utf-8", "surrogatepass"))
        elif kind == "bytes":
            lines.append(draw(st.binary(max_size=80)))
        else:
            lines.append("Öl fällt,negative".encode("latin-1"))
    data = b"\n".join(lines)
    return ((b"\xef\xbb\xbf" + data) if draw(st.booleans()) else data), CSV_FLAGS[header]
