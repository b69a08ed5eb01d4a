"""The shipped Kibana saved objects and index template are consistent with the documents we write: every
line parses, every reference resolves, every field a visualization or search uses exists in the mapping."""

from __future__ import annotations

import json

from tickerpulse.stream.kibana import saved_objects_path, template_path
from tickerpulse.stream.schema import DOC_FIELDS, SentimentDoc

DL_FIELDS = {"dl_id", "stage", "code", "reason", "payload", "payload_bytes", "attempts", "topic", "partition",
             "offset", "post_id", "ticker", "created_at"}


def _objects() -> dict[str, dict]:
    objs = {}
    for n, line in enumerate(saved_objects_path().read_text(encoding="utf-8").splitlines(), 1):
        o = json.loads(line)
        assert {"id", "type", "attributes", "references"} <= set(o), f"line {n}"
        assert o["id"] not in objs, f"duplicate id {o['id']}"
        objs[o["id"]] = o
    return objs


def test_index_template_matches_the_document_schema() -> None:
    tpl = json.loads(template_path().read_text(encoding="utf-8"))
    props = tpl["template"]["mappings"]["properties"]
    assert {k: v["type"].replace("double", "float") for k, v in props.items()} == DOC_FIELDS
    assert set(DOC_FIELDS) == set(SentimentDoc.model_fields) - {"timestamp"} | {"@timestamp"}
    assert tpl["index_patterns"] == ["tickerpulse-sentiment"]


def test_saved_objects_reference_real_objects_and_fields() -> None:
    objs = _objects()
    types = [o["type"] for o in objs.values()]
    assert types.count("index-pattern") == 2 and types.count("dashboard") == 1
    assert types.count("visualization") >= 4 and types.count("search") >= 1
    fields_of = {}
    for o in objs.values():
        if o["type"] == "index-pattern":
            title = o["attributes"]["title"]
            fields_of[o["id"]] = set(DOC_FIELDS) if title == "tickerpulse-sentiment" else DL_FIELDS
            assert o["attributes"]["timeFieldName"] in fields_of[o["id"]]
    for o in objs.values():
        for ref in o["references"]:
            assert ref["id"] in objs and objs[ref["id"]]["type"] == ref["type"], (o["id"], ref)
        attrs = o["attributes"]
        if o["type"] in {"visualization", "search"}:
            (ref,) = o["references"]
            source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert source["indexRefName"] == ref["name"]
            fields = fields_of[ref["id"]]
            if o["type"] == "visualization":
                vis = json.loads(attrs["visState"])
                used = {a["params"]["field"] for a in vis["aggs"] if "field" in a["params"]}
            else:
                used = set(attrs["columns"]) | {attrs["sort"][0][0]}
            assert used and used <= fields, (o["id"], used - fields)
        if o["type"] == "dashboard":
            panels = json.loads(attrs["panelsJSON"])
            names = {r["name"] for r in o["references"]}
            assert len(panels) >= 5 and all(p["panelRefName"] in names for p in panels)
