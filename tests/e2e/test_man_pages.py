"""The manual pages (man/) are kept in step with the programs' --help (issue 16).

For each program the options and subcommands its --help lists (and, when its help
says `PROG COMMAND --help` describes a command, those of each command's --help) are
compared with the ones its man page documents; either side having one the other
lacks fails, naming it. What counts:

  * --help: every `--long` and `-x` option in the text, except under an `Examples:`
    heading (other programs' command lines); subcommands are the bare lower-case words
    of the usage lines (from `usage:` to the first blank line) and of a `Commands:`
    block, after the program name, options and metavariables, e.g. `carehub-agency
    [-b ENDPOINT] -a DESK [run]` gives `run`, `silence add ...` gives `silence` and
    `silence add`; `(or: interactive)` gives `interactive`;
  * the man page: the tags of its `.TP` paragraphs (the line after `.TP`): every
    option in any tag is documented; the leading lower-case words of a tag in the
    COMMANDS section are its subcommands. An option its SYNOPSIS names must be in
    --help too (a synopsis alone does not document one).

An option or subcommand documented ahead of its branch is listed in man-pending.txt
(`PROGRAM OPTION`): the man -> help direction ignores exactly those, and an entry
that --help now lists, or that its page does not document, fails as stale.

carehub.yaml(5) documents every key the loader knows: a file with an unknown key in each
section makes `carehubd --check-config` list the keys known there, and each must be a
.TP tag of the page's section for it (assign keys as `assign[].KEY`, escalation steps'
as `assign[].escalate[].KEY`, the top level as the page's sections); a tag that names
no known key fails unless CONFIG_AHEAD lists it (keys of the contract not accepted yet).

Every page (man/*.[1-8]) renders without a warning:
`LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l PAGE` prints nothing on stderr.
Programs: $CAREHUB_BIN_DIR (make e2e: build/san/bin) or <repo>/bin; carehubd:
$CAREHUB_BIN. Rendering needs man-db and groff-base (Debian).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import carehub_harness as h

MAN_DIR = h.REPO / "man"
PENDING = Path(__file__).with_name("man-pending.txt")

# program -> its page
PROGRAMS = {
    "carehubd": "carehubd.8",
    "carehub": "carehub.1",
    "carehub-school": "carehub-school.1",
    "carehub-agency": "carehub-agency.1",
    "carehub-director": "carehub-director.1",
    "carehub-monitor": "carehub-monitor.1",
    "carehub-report": "carehub-report.1",
    "carehub-send": "carehub-send.1",
}
# pages that document no program's --help (rendering check only)
OTHER_PAGES = ["carehub.yaml.5"]

# carehub.yaml(5): keys the page documents that the loader does not accept yet (shared/
# CONFIG.md "Additions of 2026-12"; the page says so); the test fails once it does.
CONFIG_AHEAD = {}

LONG_RE = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SHORT_RE = re.compile(r"(?<![\w-])-[A-Za-z](?![\w-])")
WORD_RE = re.compile(r"^[a-z][a-z]*(?:-[a-z]+)*$")
METAVAR_RE = re.compile(r"^[A-Z]")


def program_path(name):
    if name == "carehubd":
        path = h.broker_bin()
    else:
        path = str(Path(os.environ.get("CAREHUB_BIN_DIR") or h.REPO / "bin") / name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"{name} not found at {path}: build it (make, or make san-build) or set "
                    f"CAREHUB_BIN_DIR / CAREHUB_BIN", pytrace=False)
    return path


def run_help(path, args):
    r = subprocess.run([path, *args, "--help"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    shown = " ".join([os.path.basename(path), *args, "--help"])
    for m in h.SANITIZER_MARKERS:
        assert m not in r.stderr, f"{shown}: sanitizer report:\n{r.stderr}"
    assert r.returncode == 0, f"{shown} exited {r.returncode}:\n{r.stderr}"
    assert r.stdout.strip(), f"{shown} printed nothing on standard output"
    return r.stdout


# ---------------------------------------------------------------------------
# --help

def without_examples(text):
    """The help text without an `Examples:` block (its lines up to the next heading)."""
    out, skipping = [], False
    for line in text.splitlines():
        if re.match(r"^Examples?:", line):
            skipping = True
            continue
        if skipping and line.strip() and not line[0].isspace():
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def help_lines(text):
    """(block, line) for each line of a help text without its examples: block is "usage"
    from a `usage:` line to the next blank line, "commands" in a `Commands:` block, else
    None (the heading lines themselves are not yielded)."""
    block = None
    for line in without_examples(text).splitlines():
        if line.startswith("usage:"):
            block = "usage"
        elif line.strip() == "Commands:":
            block = "commands"
            continue
        elif not line.strip():
            block = None
            continue
        yield block, line


def help_options(text):
    """Options of the usage lines and a `Commands:` block (all of them), and the ones that
    begin an indented line of an option list (`  -w, --wait S`, `  * --harm`) or follow a
    `;` in one (`this text;  -V, --version`); not the options of other programs a
    description mentions (`/bin/sh -c CMD`, `like tail -F`)."""
    opts = set()
    for block, line in help_lines(text):
        if block:
            heads = [line]
        else:
            heads = re.findall(r"^\s+(?:\*\s+)?((?:-[A-Za-z], )?--?[A-Za-z][\w-]*)", line)
            heads += re.findall(r";\s+((?:-[A-Za-z], )?--[a-z][\w-]*)", line)
        for head in heads:
            opts |= set(LONG_RE.findall(head)) | set(SHORT_RE.findall(head))
    return opts


def _strip_groups(line):
    """Remove [...] groups (innermost first) except `[word]`, an optional subcommand,
    and (...) groups; `(or: WORD)` ends the line and names an alias."""
    alias = None
    m = re.search(r"\(or: ([a-z][a-z-]*)\)", line)
    if m:
        alias = m.group(1)
        line = line[:m.start()]
    while True:
        new = re.sub(r"\[(?![a-z][a-z-]*\])[^\[\]]*\]", " ", line)
        if new == line:
            break
        line = new
    line = re.sub(r"\([^()]*\)", " ", line)
    return line, alias


def _line_commands(line, program):
    """Subcommands named on one usage or command line: [] or [cmd] or [cmd, 'cmd sub']."""
    line, alias = _strip_groups(line)
    found, words = [], []
    for tok in line.split():
        if tok in ("usage:", program):
            continue
        bare = tok[1:-1] if tok.startswith("[") and tok.endswith("]") else tok
        if tok.startswith("-") or METAVAR_RE.match(tok) or tok == "...":
            if words:
                break
            continue
        if tok == "[options]":          # a placeholder, not a subcommand
            continue
        if WORD_RE.match(bare):
            words.append(bare)
            if len(words) == 2:
                break
            continue
        break
    for i in range(len(words)):
        found.append(" ".join(words[:i + 1]))
    if alias:
        found.append(alias)
    return found


def help_commands(text, program):
    cmds = set()
    for block, line in help_lines(text):
        if block == "usage" or (block == "commands" and re.match(r"^  \S", line)):
            cmds.update(_line_commands(line, program))
    return cmds


def help_of(program):
    """(options, subcommands) of a program's --help, and of each command's --help when
    its help says `PROG COMMAND --help` describes one."""
    path = program_path(program)
    text = run_help(path, [])
    opts, cmds = help_options(text), help_commands(text, program)
    if re.search(rf"{re.escape(program)} COMMAND --help", text):
        for cmd in sorted(cmds):
            opts |= help_options(run_help(path, cmd.split()))
    return opts, cmds


# ---------------------------------------------------------------------------
# man pages

def roff_text(s):
    """A roff line's text: escapes of fonts and specials resolved enough to find options."""
    s = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", s)
    s = s.replace("\\-", "-").replace("\\(em", "-").replace("\\e", "\\").replace("\\&", "")
    s = s.replace("\\%", "").replace("\\ ", " ")
    s = re.sub(r"^\.(B|I|BR|RB|BI|IB|IR|RI|SM|SB)\s+", "", s)
    return s.replace('"', "")


def man_tags(page):
    """[(section, tag text)] of the page's .TP paragraphs."""
    lines = (MAN_DIR / page).read_text(encoding="utf-8").splitlines()
    out, section = [], ""
    for i, line in enumerate(lines):
        if line.startswith(".SH"):
            section = line[3:].strip().strip('"')
        elif line.startswith(".TP") and i + 1 < len(lines):
            out.append((section, roff_text(lines[i + 1])))
    return out


def synopsis_options(page):
    """The options the page's SYNOPSIS names (checked against --help too, one way)."""
    out, section = set(), ""
    for line in (MAN_DIR / page).read_text(encoding="utf-8").splitlines():
        if line.startswith(".SH"):
            section = line[3:].strip().strip('"')
        elif section == "SYNOPSIS" and not line.startswith(".\\\""):
            text = roff_text(re.sub(r"^\.(OP|SY)\s+", "", line))
            out |= set(LONG_RE.findall(text)) | set(SHORT_RE.findall(text))
    return out


def man_of(page):
    """(options, subcommands) a page documents."""
    opts, cmds = set(), set()
    for section, tag in man_tags(page):
        opts |= set(LONG_RE.findall(tag)) | set(SHORT_RE.findall(tag))
        if section == "COMMANDS":
            words = []
            for tok in tag.replace("[", " [").split():
                if not WORD_RE.match(tok) or len(words) == 2:
                    break
                words.append(tok)
            for i in range(len(words)):
                cmds.add(" ".join(words[:i + 1]))
    return opts, cmds


def pending():
    """{program: {option or subcommand}} from man-pending.txt."""
    out = {}
    for n, line in enumerate(PENDING.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        assert len(parts) == 2 and parts[0] in PROGRAMS, \
            f"{PENDING.name}:{n}: {line!r}: write one `PROGRAM OPTION` per line, PROGRAM one of " \
            f"{', '.join(PROGRAMS)}"
        out.setdefault(parts[0], set()).add(parts[1])
    return out


# ---------------------------------------------------------------------------
# the tests

def test_extraction_reads_what_it_should():
    """The extractors on fixed texts, so that a change that makes them see nothing (and
    every comparison pass) shows here."""
    usage = ("usage: carehub-agency [-b ENDPOINT] -a DESK [run] [--json] [--exec CMD] [options]\n"
             "       carehub-agency -a DESK update ASSIGNMENT STATUS [--note TEXT]\n"
             "       carehub-agency [options] --interactive   (or: interactive) a visit\n"
             "\n"
             "Commands:\n"
             "  silence add --type T[,T...] [--match KEY=V[,V...] ...] [--starts TIME]\n"
             "             (--ends TIME | --for DURATION) --reason TEXT [--json]\n"
             "  verify [--json] | verify --data DIR\n"
             "\n"
             "  -w, --wait SECONDS     how long (also 500ms, 2m); YYYY-MM-DD, self-contained\n"
             "      --exec CMD         run `/bin/sh -c CMD` (like tail -F); -h, --help this\n"
             "  -h, --help             this text;  -V, --version  the version\n"
             "Examples:\n"
             "  jq -c '.[]' x | carehub-send --other\n")
    assert help_commands(usage, "carehub-agency") == {
        "run", "update", "interactive", "silence", "silence add", "verify"}
    assert help_options(usage) == {
        "-b", "-a", "--json", "--exec", "--note", "--interactive", "--type", "--match",
        "--starts", "--ends", "--for", "--reason", "--data", "-w", "--wait", "--exec",
        "-h", "--help", "-V", "--version"}
    assert roff_text(r'.BR \-b ", " \-\-broker " \fIENDPOINT\fP"') == "-b ,  --broker  ENDPOINT"
    assert roff_text(r".B silence add \-\-type \fIT\fP") == "silence add --type T"


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_man_page_matches_help(program):
    page = PROGRAMS[program]
    assert (MAN_DIR / page).is_file(), f"man/{page} is missing: every program has a page"
    h_opts, h_cmds = help_of(program)
    m_opts, m_cmds = man_of(page)
    assert h_opts, f"{program} --help: no option found (the extractor is broken)"
    assert m_opts, f"man/{page}: no option found in a .TP tag (the extractor is broken)"
    ahead = pending().get(program, set())
    problems = []
    syn = synopsis_options(page)
    for what, h_set, m_set, named in (("option", h_opts, m_opts, m_opts | syn),
                                      ("subcommand", h_cmds, m_cmds, m_cmds)):
        for x in sorted(h_set - m_set):
            problems.append(f"{program} --help lists the {what} {x}, which man/{page} does not "
                            f"document (add a .TP entry for it)")
        for x in sorted(named - h_set - ahead):
            problems.append(f"man/{page} documents the {what} {x}, which `{program} --help` does "
                            f"not list (remove it from the page, or add `{program} {x}` to "
                            f"tests/e2e/{PENDING.name} if its branch has not landed yet)")
    for x in sorted(ahead):
        if x in h_opts or x in h_cmds:
            problems.append(f"{PENDING.name}: `{program} {x}` is in --help now: remove the line")
        elif x not in m_opts and x not in m_cmds:
            problems.append(f"{PENDING.name}: `{program} {x}` is not documented in man/{page}: "
                            f"document it there or remove the line")
    assert not problems, "\n".join(problems)


def test_every_page_is_known():
    pages = sorted(p.name for p in MAN_DIR.iterdir() if re.search(r"\.[1-8]$", p.name))
    assert pages == sorted([*PROGRAMS.values(), *OTHER_PAGES]), \
        f"man/ holds {pages}; this test knows {sorted([*PROGRAMS.values(), *OTHER_PAGES])}: " \
        f"add a new page to PROGRAMS (a program's) or OTHER_PAGES"


@pytest.mark.parametrize("page", sorted([*PROGRAMS.values(), *OTHER_PAGES]))
def test_man_page_renders_without_warnings(page):
    if shutil.which("man") is None:
        pytest.fail("man is not installed: the rendering check needs the Debian packages man-db "
                    "and groff-base (apt-get install man-db groff-base)", pytrace=False)
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(MAN_DIR / page)],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stderr, \
        f"man/{page}: man exited {r.returncode}, warnings:\n{r.stderr}"
    name = page.rsplit(".", 1)[0].upper()
    assert r.stdout.lstrip().startswith(name), f"man/{page} did not render a {name} page:\n" \
                                               f"{r.stdout[:400]}"
    assert "NAME" in r.stdout and "DESCRIPTION" in r.stdout, \
        f"man/{page} lacks a NAME or DESCRIPTION section"


# A file with an unknown key `zz-SECTION` in every section: --check-config names the keys
# each section knows.
UNKNOWN_KEYS_YAML = """\
broker: {zz-broker: 1}
privacy: {zz-privacy: 1}
agents: [{id: a, role: school, zz-agents: 1}]
agencies: [{id: police, zz-agencies: 1}]
channels: [{id: c, url: "http://127.0.0.1:9/x", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw,
            zz-channels: 1}]
workflows:
  - name: w
    zz-workflows: 1
    match: {type: absence}
    assign:
      - agency: police
        zz-assign: 1
        escalate: [{after: 0s, notify: [c], zz-escalate: 1}]
rhythms: [{name: r, contact_every: 1d, visit_every: 1d, zz-rhythms: 1}]
calendar: {zz-calendar: 1}
zz-top: 1
"""
# section of the file -> (section of the page, prefix of its tags)
CONFIG_SECTIONS = {
    "broker": ("BROKER", ""), "privacy": ("PRIVACY", ""), "agents": ("AGENTS", ""),
    "agencies": ("AGENCIES", ""), "channels": ("CHANNELS", ""), "workflows": ("WORKFLOWS", ""),
    "assign": ("WORKFLOWS", "assign[]."), "escalate": ("WORKFLOWS", "assign[].escalate[]."),
    "rhythms": ("RHYTHMS", ""), "calendar": ("CALENDAR", ""),
}


def loader_keys(tmp_path):
    """{section: [keys]} as `carehubd --check-config` lists them for unknown keys."""
    conf = tmp_path / "unknown-keys.yaml"
    conf.write_text(UNKNOWN_KEYS_YAML, encoding="utf-8")
    r = subprocess.run([program_path("carehubd"), "--check-config", "-c", str(conf)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    for m in h.SANITIZER_MARKERS:
        assert m not in r.stderr, f"carehubd --check-config: sanitizer report:\n{r.stderr}"
    found = dict(re.findall(r'unknown key "zz-([a-z]+)" in [^(]*\(known: ([^)]*)\)', r.stderr))
    missing = sorted({*CONFIG_SECTIONS, "top"} - set(found))
    assert not missing, f"carehubd --check-config named no known keys for {missing}:\n{r.stderr}"
    return {k: [x.strip() for x in v.split(",")] for k, v in found.items()}


def test_config_page_documents_every_key(tmp_path):
    known = loader_keys(tmp_path)
    page = "carehub.yaml.5"
    text = (MAN_DIR / page).read_text(encoding="utf-8")
    sections = {x.strip().strip('"').lower() for x in re.findall(r"^\.SH (.*)$", text, re.M)}
    tags = {}
    for section, tag in man_tags(page):
        tags.setdefault(section, set()).add(tag.split()[0] if tag.split() else "")
    problems = [f"man/{page} has no section {s.upper()} for the top-level key {s}"
                for s in known["top"] if s not in sections]
    for sect, (man_sect, prefix) in CONFIG_SECTIONS.items():
        documented = {t[len(prefix):] for t in tags.get(man_sect, set())
                      if t.startswith(prefix) and "[]." not in t[len(prefix):]}
        for key in known[sect]:
            if key not in documented:
                problems.append(f"the loader knows {sect} key {key}, which man/{page} does not "
                                f"document (add `.TP` `.B {prefix}{key}` under {man_sect})")
        ahead = CONFIG_AHEAD.get(sect, set())
        for key in sorted(ahead & set(known[sect])):
            problems.append(f"the loader accepts {sect} key {key} now: remove it from "
                            f"CONFIG_AHEAD and the page's \"not accepted yet\"")
        for key in sorted(documented - set(known[sect]) - ahead):
            problems.append(f"man/{page} documents {sect} key {key} under {man_sect}, which the "
                            f"loader does not know")
    assert not problems, "\n".join(problems)
