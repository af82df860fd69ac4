"""The standard validator as an oracle for carehub's event schemas.

Every case of tests/data/schema_cases.json is validated here with python-jsonschema's
Draft202012Validator (Debian's python3-jsonschema) and must get the verdict the corpus
states; tests/unit/test_schema.c runs the same corpus through the broker's C validator.
So the C validator and a standard validator agree on the same documents, and the
error location the corpus names is one the standard validator reports too.

Format "date": JSON Schema 2020-12 defines it as RFC 3339 full-date (YYYY-MM-DD).
jsonschema 4.10 checks it with datetime.date.fromisoformat(), which since Python 3.11
also accepts ISO 8601 forms such as "20240101" and "2024-W01-1"
(python-jsonschema/jsonschema#1056, fixed upstream by #1076 after 4.10). The oracle
therefore registers a strict RFC 3339 full-date check; test_stock_date_checker_*
prove the stock checker is active (not silently skipped) and that the override only
changes the verdict on those ISO 8601 forms.

Run: /usr/bin/python3 -m pytest -q tests/e2e/test_schema_oracle.py
"""

import datetime
import json
import pathlib
import re

import pytest
from jsonschema import Draft202012Validator, FormatChecker

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
CASES_FILE = ROOT / "tests" / "data" / "schema_cases.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TYPES = ["absence", "enrolment", "mandatory_report", "online_risk", "visit", "visit_overdue"]

# Keywords the broker's loader understands (broker/schema.h, docs/schemas.md).
SUPPORTED_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "enum", "const",
    "minimum", "maximum", "minLength", "maxLength", "format", "items", "minItems",
    "maxItems", "uniqueItems", "$ref", "$defs", "default",
    "$schema", "$id", "title", "description", "examples", "$comment",
}
# Definitions every event schema carries, which must stay identical across files.
SHARED_DEFS = ["severity", "date", "guardian", "child", "note"]

_FULL_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def rfc3339_full_date(instance):
    """RFC 3339 section 5.6 full-date: exactly YYYY-MM-DD and a day that exists."""
    if not isinstance(instance, str):
        return True
    if not _FULL_DATE.fullmatch(instance):
        return False
    datetime.date.fromisoformat(instance)  # raises ValueError for 2023-02-29 etc.
    return True


def strict_format_checker():
    checker = FormatChecker()  # a copy of the defaults; the class is not modified
    checker.checks("date", raises=ValueError)(rfc3339_full_date)
    return checker


def load_schema(type_name):
    with open(SCHEMA_DIR / f"{type_name}.json", encoding="utf-8") as f:
        return json.load(f)


def load_cases():
    with open(CASES_FILE, encoding="utf-8") as f:
        return json.load(f)


CASES = load_cases()


def validator(type_name, format_checker):
    return Draft202012Validator(load_schema(type_name), format_checker=format_checker)


def pointer(parts):
    """RFC 6901 JSON Pointer of a path given as a sequence of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def error_pointers(error):
    """Locations an error names, in the corpus's convention: a missing property and an
    unknown property are pointed at themselves, not at the object holding them."""
    base = list(error.absolute_path)
    if error.validator == "required":
        return {pointer(base + [p]) for p in error.validator_value if p not in error.instance}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        return {pointer(base + [k]) for k in error.instance if k not in known}
    if error.validator == "uniqueItems":
        # the C validator points at the repeating item; accept any item of the array
        return {pointer(base + [i]) for i in range(len(error.instance))}
    return {pointer(base)}


# ---- the schemas themselves -------------------------------------------------


def test_schema_files_are_the_event_types():
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.json")) == TYPES


@pytest.mark.parametrize("type_name", TYPES)
def test_schema_is_valid_2020_12(type_name):
    schema = load_schema(type_name)
    assert schema.get("$schema") == DRAFT
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("type_name", TYPES)
def test_schema_uses_only_the_supported_subset(type_name):
    """Mirrors the C loader, so an edit that the broker would refuse fails here too."""
    problems = []

    def walk(node, where, in_annotation=False):
        if isinstance(node, bool):
            return
        assert isinstance(node, dict), where
        for key, value in node.items():
            if key not in SUPPORTED_KEYWORDS:
                problems.append(f"{where}: unknown keyword {key}")
            if key == "format" and value != "date":
                problems.append(f"{where}: format {value} is not supported")
            if key == "$ref" and not re.fullmatch(r"#/\$defs/[^/]+", value):
                problems.append(f"{where}: $ref {value} is not #/$defs/NAME")
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        for key in ("items", "additionalProperties"):
            if key in node:
                walk(node[key], f"{where}/{key}")

    walk(load_schema(type_name), "#")
    assert problems == []


@pytest.mark.parametrize("type_name", TYPES)
def test_every_property_is_documented(type_name):
    schema = load_schema(type_name)
    defs = schema.get("$defs", {})
    undocumented = []

    def described(node):
        while isinstance(node, dict):
            if node.get("description"):
                return True
            ref = node.get("$ref")
            node = defs.get(ref.rsplit("/", 1)[1]) if ref else None
        return False

    def walk(node, where):
        if not isinstance(node, dict):
            return
        for name, sub in node.get("properties", {}).items():
            if not described(sub):
                undocumented.append(f"{where}/properties/{name}")
            walk(sub, f"{where}/properties/{name}")
        for name, sub in node.get("$defs", {}).items():
            walk(sub, f"{where}/$defs/{name}")

    walk(schema, "#")
    assert undocumented == []


@pytest.mark.parametrize("type_name", TYPES)
def test_every_object_refuses_unknown_fields(type_name):
    """PROTOCOL §8: a misspelt field must not be silently dropped."""
    open_objects = []

    def walk(node, where):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            open_objects.append(where)
        for key in ("properties", "$defs"):
            for name, sub in node.get(key, {}).items():
                walk(sub, f"{where}/{key}/{name}")
        if "items" in node:
            walk(node["items"], f"{where}/items")

    walk(load_schema(type_name), "#")
    assert open_objects == []


def test_shared_definitions_are_identical():
    """Each file is self-contained; the child and friends must not drift apart."""
    schemas = {t: load_schema(t) for t in TYPES}
    for name in SHARED_DEFS:
        first = schemas[TYPES[0]]["$defs"][name]
        for t in TYPES[1:]:
            assert schemas[t]["$defs"][name] == first, f"$defs/{name} differs in {t}.json"


@pytest.mark.parametrize("type_name", TYPES)
def test_examples_are_valid(type_name):
    schema = load_schema(type_name)
    v = Draft202012Validator(schema, format_checker=strict_format_checker())
    assert schema.get("examples"), "each schema documents at least one full example"
    for example in schema["examples"]:
        assert list(v.iter_errors(example)) == []


# ---- the format checker: active, and what the override changes ---------------


def test_stock_date_checker_is_active():
    """Fail loudly if "date" were not checked at all (a missing optional dependency
    makes jsonschema skip a format silently)."""
    stock = FormatChecker()
    assert "date" in stock.checkers, "jsonschema's FormatChecker does not check 'date'"
    v = Draft202012Validator({"type": "string", "format": "date"}, format_checker=stock)
    assert v.is_valid("2024-02-29")
    for bad in ["2024-02-30", "2023-02-29", "2024-2-1", "2024-13-01", "not a date"]:
        assert not v.is_valid(bad), f"stock date check accepted {bad!r}: is it active?"
    strict = Draft202012Validator({"format": "date"}, format_checker=strict_format_checker())
    for bad in ["2024-02-30", "20240101", "2024-W01-1", "2024-02-29T00:00:00Z"]:
        assert not strict.is_valid(bad)
    assert strict.is_valid("2024-02-29") and strict.is_valid("2000-02-29")


def test_stock_date_checker_differs_only_on_iso8601_forms():
    """Run the corpus with the stock checker: any disagreement must be a date string
    the stock checker accepts but RFC 3339 does not (e.g. "20240101")."""
    stock = FormatChecker()
    for case in CASES:
        v = validator(case["type"], stock)
        errors = list(v.iter_errors(case["body"]))
        if (not errors) == case["valid"]:
            continue
        # The stock checker accepted an invalid case: it must be exactly the date
        # leniency, i.e. the strict checker's only errors are date format errors.
        assert not case["valid"], case["name"]
        strict_errors = list(validator(case["type"], strict_format_checker()).iter_errors(case["body"]))
        assert strict_errors and all(
            e.validator == "format" and e.validator_value == "date" for e in strict_errors
        ), case["name"]
        for e in strict_errors:
            assert not _FULL_DATE.fullmatch(e.instance), (case["name"], e.instance)


# ---- the corpus -------------------------------------------------------------


def test_corpus_is_well_formed():
    names = [c["name"] for c in CASES]
    assert len(CASES) >= 60
    assert len(names) == len(set(names)), "case names must be unique"
    for c in CASES:
        assert set(c) <= {"name", "type", "body", "valid", "path", "message"}, c["name"]
        assert c["type"] in TYPES, c["name"]
        assert isinstance(c["valid"], bool), c["name"]
        if not c["valid"]:
            assert isinstance(c.get("path"), str), c["name"]
    for t in TYPES:
        assert any(c["valid"] for c in CASES if c["type"] == t)
        assert any(not c["valid"] for c in CASES if c["type"] == t)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_corpus_case_agrees_with_standard_validator(case):
    v = validator(case["type"], strict_format_checker())
    errors = list(v.iter_errors(case["body"]))
    if case["valid"]:
        assert errors == [], [e.message for e in errors]
        return
    assert errors, "the standard validator accepts a body the corpus calls invalid"
    named = set().union(*(error_pointers(e) for e in errors))
    assert case["path"] in named, f"expected {case['path']!r} among {sorted(named)}"
