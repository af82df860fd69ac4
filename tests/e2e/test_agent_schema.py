"""The agent programs' enums and limits are the schemas' (issue 11).

carehub-report's form and carehub-school's columns take their values and
limits from schemas/*.json (a header generated at build time). These tests
read the schema files themselves and compare them with what the built
programs accept, so that a list or a limit restated by hand, or a schema
changed without the programs being rebuilt, fails here:

  * carehub-report: every enum and list field refuses a value not in the
    schema with exactly the schema's values; --help shows them and the
    schema's maxLength and required fields; every schema value is accepted;
    a text of maxLength characters (not bytes) is accepted, one more refused;
  * carehub-school (--check, no broker): the same for the enum columns and the
    text columns of an absent row;
  * carehub-director: the roster's enum and list columns and text columns
    (enrol --check, no broker), the visit options (--kind, --method, --needs,
    --findings), and --help's lists.

No broker is needed: fields are checked before anything connects.
Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import carehub_harness as h

SCHEMAS = h.REPO / "schemas"


def bin_dir():
    return Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin")


def run(name, *args, input=None):
    p = bin_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} not found: build it (make, or make san-build) or set CAREHUB_BIN_DIR",
                    pytrace=False)
    e = dict(os.environ, CAREHUB_AGENT="schema-test", CAREHUB_ENDPOINT="tcp://127.0.0.1:1")
    r = subprocess.run([str(p)] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=60, input=input, env=e)
    for m in h.SANITIZER_MARKERS:
        assert m not in r.stderr, f"{name}: sanitizer report:\n{r.stderr[-6000:]}"
    return r


def load(name):
    return json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))


def node(schema, path):
    """The schema of a property path ("child.guardian.name"; "[]" for array items),
    following "#/$defs/NAME" references, with `required` (every step required)."""
    def deref(n):
        merged, req = {}, set()
        while True:
            req |= set(n.get("required", []))
            for k, v in n.items():
                if k == "properties" and "properties" in merged:
                    # properties beside a $ref merge with the target's by name
                    props = dict(v)
                    for pk, pv in merged["properties"].items():
                        props[pk] = {**props.get(pk, {}), **pv} if pk in props else pv
                    merged["properties"] = props
                else:
                    merged.setdefault(k, v)
            ref = n.get("$ref")
            if not ref:
                break
            assert ref.startswith("#/$defs/"), ref
            n = schema["$defs"][ref[len("#/$defs/"):]]
        merged["required"] = sorted(req)
        return merged

    n, required = deref(schema), True
    for step in path.split("."):
        if step == "[]":
            n, required = deref(n["items"]), False
            continue
        required = required and step in n["required"]
        n = deref(n["properties"][step])
    n["_required"] = required
    return n


def refused_values(stderr):
    """The values an "is not one of a|b|c" (or "a, b, c") refusal lists."""
    m = re.search(r"is not one of (.+?)(?:;|$)", stderr, re.M)
    assert m, stderr
    return re.split(r"\|| ?, ", m.group(1).strip())


# --------------------------------------------------------------------------
# carehub-report: mandatory_report.json

REPORT_TEXT = {  # flag: the property it fills
    "organisation": "reporter.organisation", "reporter-name": "reporter.name",
    "role": "reporter.role", "phone": "reporter.phone", "description": "description",
    "location": "location", "child-name": "child.name", "child-id": "child.id",
    "jurisdiction": "child.jurisdiction", "guardian-name": "child.guardian.name",
    "guardian-relation": "child.guardian.relation", "guardian-phone": "child.guardian.phone",
    "note": "note",
}
REPORT_ENUM = {"harm": "harm", "gender": "child.gender", "severity": "severity",
               "category": "child.category.[]"}
REPORT_OTHER = {"suspected": "suspected", "immediate-danger": "immediate_danger",
                "occurred-at": "occurred_at", "birth-date": "child.birth_date"}


def report_help_fields():
    """--help's field list: flag -> (required, values or None, max or None)."""
    p = run("carehub-report", "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout.split("Fields (* required):\n", 1)[1].split("\n\n", 1)[0]
    fields, last = {}, None
    for line in text.splitlines():
        m = re.match(r"^  ([* ]) --([a-z-]+)(?:\[=yes\|no\])?\s+(.*)$", line)
        if m:
            mx = re.search(r"\(max (\d+)\)$", m.group(3))
            last = m.group(2)
            fields[last] = [m.group(1) == "*", None, int(mx.group(1)) if mx else None]
        else:
            fields[last][1] = line.strip().removesuffix(" (repeatable)").split("|")
    return fields


def test_report_help_is_the_schema():
    schema = load("mandatory_report")
    fields = report_help_fields()
    assert set(fields) == set(REPORT_TEXT) | set(REPORT_ENUM) | set(REPORT_OTHER)
    for flag, path in {**REPORT_TEXT, **REPORT_ENUM, **REPORT_OTHER}.items():
        n = node(schema, path.removesuffix(".[]"))
        required, values, mx = fields[flag]
        assert required == n["_required"], flag
        assert mx == n.get("maxLength"), flag
        want = node(schema, path)["enum"] if flag in REPORT_ENUM else None
        assert values == want, flag


@pytest.mark.parametrize("flag", sorted(REPORT_ENUM))
def test_report_enum_is_the_schema(flag):
    want = node(load("mandatory_report"), REPORT_ENUM[flag])["enum"]
    p = run("carehub-report", f"--{flag}", "no_such_value")
    assert p.returncode == 64, p.stderr
    assert refused_values(p.stderr) == want, p.stderr
    # every value of the schema passes the field's check (the next option fails)
    for v in want:
        p = run("carehub-report", f"--{flag}", v, "--harm", "no_such_value")
        assert p.returncode == 64 and "--harm:" in p.stderr, (v, p.stderr)
    if flag == "category":
        p = run("carehub-report", "--category", ",".join(want), "--harm", "no_such_value")
        assert "--harm:" in p.stderr, p.stderr


@pytest.mark.parametrize("flag", sorted(REPORT_TEXT))
def test_report_max_length_is_the_schema(flag):
    mx = node(load("mandatory_report"), REPORT_TEXT[flag])["maxLength"]
    p = run("carehub-report", f"--{flag}", "童" * mx, "--harm", "no_such_value")
    assert p.returncode == 64 and "--harm:" in p.stderr, p.stderr
    p = run("carehub-report", f"--{flag}", "童" * (mx + 1), "--harm", "no_such_value")
    assert p.returncode == 64 and f"--{flag}: at most {mx} characters" in p.stderr, p.stderr


# --------------------------------------------------------------------------
# carehub-school: absence.json

SCHOOL = "滨海新区第一小学"
COLUMNS = ["student_id", "name", "date", "status", "reason", "consecutive_days", "gender",
           "period", "category", "severity", "note", "jurisdiction", "guardian_name",
           "guardian_relation", "guardian_phone"]
SCHOOL_ENUM = {"reason": "reason", "gender": "child.gender", "period": "period",
               "severity": "severity", "category": "child.category.[]"}
SCHOOL_TEXT = {"student_id": "child.id", "name": "child.name", "note": "note",
               "jurisdiction": "child.jurisdiction", "guardian_name": "child.guardian.name",
               "guardian_relation": "child.guardian.relation",
               "guardian_phone": "child.guardian.phone"}


def school_check(tmp_path, rows):
    """carehub-school --check over rows (dicts of cells): {line: message} of the bad ones."""
    base = {"student_id": "S-1", "name": "王芳", "date": "2025-03-03", "status": "absent",
            "reason": "sick", "consecutive_days": "1"}
    lines = [",".join(COLUMNS)]
    for i, r in enumerate(rows):
        cells = {**base, "student_id": f"S-{i}", **r}
        lines.append(",".join('"%s"' % cells.get(c, "").replace('"', '""') for c in COLUMNS))
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = run("carehub-school", "--check", "--school", SCHOOL, path)
    bad = {}
    for ln in p.stderr.splitlines():
        m = re.match(re.escape(str(path)) + r":(\d+): (.*)$", ln)
        if m:
            bad[int(m.group(1))] = m.group(2)
    return bad


@pytest.mark.parametrize("column", sorted(SCHOOL_ENUM))
def test_school_enum_is_the_schema(tmp_path, column):
    want = node(load("absence"), SCHOOL_ENUM[column])["enum"]
    rows = [{column: v} for v in want] + [{column: "no_such_value"}]
    bad = school_check(tmp_path, rows)
    line = len(want) + 2   # the last row's line: line 1 is the header
    assert list(bad) == [line], bad
    assert refused_values(bad[line]) == want, bad


@pytest.mark.parametrize("column", sorted(SCHOOL_TEXT))
def test_school_max_length_is_the_schema(tmp_path, column):
    mx = node(load("absence"), SCHOOL_TEXT[column])["maxLength"]
    bad = school_check(tmp_path, [{column: "童" * mx}, {column: "童" * (mx + 1)}])
    assert list(bad) == [3], bad
    assert f"{column} is longer than {mx} characters" in bad[3], bad


def test_school_help_is_the_schema():
    p = run("carehub-school", "--help")
    assert p.returncode == 0, p.stderr
    schema = load("absence")
    for path in SCHOOL_ENUM.values():
        assert "|".join(node(schema, path)["enum"]) in p.stdout, path


# --------------------------------------------------------------------------
# carehub-director: enrolment.json (the roster) and visit.json (visit options)

ROSTER_COLUMNS = ["child_id", "name", "category", "village", "gender", "birth_date",
                  "jurisdiction", "guardian_name", "guardian_relation", "guardian_phone",
                  "risk", "risk_reasons", "active", "note"]
ROSTER_ENUM = {"gender": "child.gender", "risk": "risk", "category": "child.category.[]",
               "risk_reasons": "risk_reasons.[]"}
ROSTER_TEXT = {"child_id": "child.id", "name": "child.name", "village": "village",
               "jurisdiction": "child.jurisdiction", "guardian_name": "child.guardian.name",
               "guardian_relation": "child.guardian.relation",
               "guardian_phone": "child.guardian.phone", "note": "note"}
VISIT_ENUM = {"kind": "kind", "method": "method", "needs": "needs.[]"}


def roster_check(tmp_path, rows):
    """carehub-director enrol --check over rows (dicts of cells): {line: message}."""
    base = {"child_id": "C-1", "name": "王芳", "category": "left_behind", "village": "新河村"}
    lines = [",".join(ROSTER_COLUMNS)]
    for i, r in enumerate(rows):
        cells = {**base, "child_id": f"C-{i}", **r}
        lines.append(",".join('"%s"' % cells.get(c, "").replace('"', '""') for c in ROSTER_COLUMNS))
    path = tmp_path / "roster.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    p = run("carehub-director", "enrol", "--check", path)
    bad = {}
    for ln in p.stderr.splitlines():
        m = re.match(re.escape(str(path)) + r":(\d+): (.*)$", ln)
        if m:
            bad[int(m.group(1))] = m.group(2)
    return bad


def test_director_schema_paths_exist():
    """The tables below name properties the schemas have (a renamed one fails here)."""
    for path in list(ROSTER_ENUM.values()) + list(ROSTER_TEXT.values()):
        node(load("enrolment"), path)
    for path in VISIT_ENUM.values():
        node(load("visit"), path)
    assert node(load("enrolment"), "child.category")["minItems"] == 1
    assert node(load("enrolment"), "child.id")["_required"] is True


@pytest.mark.parametrize("column", sorted(ROSTER_ENUM))
def test_director_roster_enum_is_the_schema(tmp_path, column):
    want = node(load("enrolment"), ROSTER_ENUM[column])["enum"]
    rows = [{column: v} for v in want] + [{column: "no_such_value"}]
    bad = roster_check(tmp_path, rows)
    line = len(want) + 2
    assert list(bad) == [line], bad
    assert refused_values(bad[line].split(" (several")[0]) == want, bad
    if column in ("category", "risk_reasons"):   # lists: every value at once
        assert roster_check(tmp_path, [{column: ";".join(want)}]) == {}


@pytest.mark.parametrize("column", sorted(ROSTER_TEXT))
def test_director_roster_max_length_is_the_schema(tmp_path, column):
    n = node(load("enrolment"), ROSTER_TEXT[column])
    mx = n["maxLength"]
    ch = "a" if column == "child_id" else "童"
    bad = roster_check(tmp_path, [{column: ch * mx}, {column: ch * (mx + 1)}])
    assert list(bad) == [3], bad
    assert f"{column} is longer than {mx} characters" in bad[3], bad


@pytest.mark.parametrize("flag", sorted(VISIT_ENUM))
def test_director_visit_enum_is_the_schema(tmp_path, flag):
    want = node(load("visit"), VISIT_ENUM[flag])["enum"]
    args = ["--spool", tmp_path / "s", "visit", "C-1"]
    p = run("carehub-director", *args, f"--{flag}", "no_such_value")
    assert p.returncode == 64, p.stderr
    assert refused_values(p.stderr) == want, p.stderr
    for v in want:   # accepted: the next option fails
        p = run("carehub-director", *args, f"--{flag}", v, "--date", "no-date")
        assert p.returncode == 64 and "--date:" in p.stderr, (v, p.stderr)


def test_director_visit_findings_max_length_is_the_schema(tmp_path):
    mx = node(load("visit"), "findings")["maxLength"]
    args = ["--spool", tmp_path / "s", "visit", "C-1"]
    p = run("carehub-director", *args, "--findings", "童" * mx, "--date", "no-date")
    assert p.returncode == 64 and "--date:" in p.stderr, p.stderr
    p = run("carehub-director", *args, "--findings", "童" * (mx + 1))
    assert p.returncode == 64 and f"--findings: at most {mx} characters" in p.stderr, p.stderr


def test_director_help_is_the_schema():
    p = run("carehub-director", "--help")
    assert p.returncode == 0, p.stderr
    for path in ROSTER_ENUM.values():
        assert "|".join(node(load("enrolment"), path)["enum"]) in p.stdout, path
    for path in VISIT_ENUM.values():
        assert "|".join(node(load("visit"), path)["enum"]) in p.stdout, path
    assert ", ".join(ROSTER_COLUMNS) in p.stdout
