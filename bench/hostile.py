"""Generated hostile input: over a thousand bad (or merely odd) command lines, each checked.

Every case runs `cp-plan` in this process (cli.main, as the console script does) inside a scratch
folder, on its own copy of a small run database, and is judged on four things:

- **traceback**: an exception other than SystemExit escaped, or stderr shows a traceback;
- **exit code**: not 0/1/2, or 0 where the input is invalid, or non-zero where it is valid;
- **one line**: an exit 1 whose stderr is not a single ``cp-plan: error: ...`` line;
- **database**: a failed command changed the database's content (compared as an SQL dump);
- **hang**: the case ran past its alarm (a FIFO read, an unbounded loop).

Categories: file names (too long, multi-byte, newlines, through a file, ...) for every path
argument; deeply nested JSON for every JSON input; encodings (Latin-1, UTF-16, BOMs, NUL bytes,
invalid bytes) for every file input and ``--where``; numeric extremes in ``--where`` and the
numeric options; devices, FIFOs, sockets, symlinks and folders as outputs; hand-damaged
databases under every command that reads one.

    python bench/hostile.py                # all cases (about 3 minutes), counts by category
    python bench/hostile.py --every 6      # a sixth of them (what tests/test_hostile_generated.py runs)
    python bench/hostile.py --json         # the counts and every failing case as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHIPPED_DB = ROOT / "data" / "runs" / "runs.sqlite"
SHIPPED_LAWS = ROOT / "data" / "runs" / "laws.json"
ALARM_S = 120

OK, FAIL, ANY = "ok", "fail", "any"


@dataclass
class Case:
    category: str
    args: list[str]
    expect: str = ANY  # OK: must exit 0; FAIL: must exit non-zero; ANY: either, cleanly
    db: str = "good"  # the database copy the case runs on ("good" or a damage name)
    setup: object = None  # callable(ws: Path) run before the case (makes its input files)

    @property
    def label(self) -> str:
        text = " ".join(self.args)
        return text if len(text) <= 160 else text[:150] + f"… ({len(text)} chars)"


@dataclass
class Outcome:
    case: Case
    code: int | None
    err: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------- inputs

GOOD_CSV = "n_params,n_tokens,loss\n1e6,2e7,3.1\n2e6,4e7,2.9\n"
GOOD_JSONL = '{"n_params": 1e6, "n_tokens": 2e7, "loss": 3.1}\n'
GOOD_SWEEP = json.dumps({"runs": [{"parameterization": "completep", "n_embd": 64, "n_layer": 2,
                                   "n_tokens": 100000}]})
GOOD_HW = 'name = "odd"\nobjective = "loss"\n'


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")


# File names: (label, name, creatable). Names are relative to the scratch folder; {file} is a
# regular file there, {dir} a folder.
NAMES = [
    ("255 bytes", "{255}", True),
    ("256 bytes", "{256}", False),
    ("300 bytes", "b" * 296 + ".ext", False),
    ("multi-byte 400 bytes", "é" * 198 + ".ext", False),
    ("path over 4096", "/".join(["c" * 200] * 22) + ".ext", False),
    ("newline", "new\nline.ext", True),
    ("carriage return", "cr\r.ext", True),
    ("leading dash", "-dash.ext", True),
    ("spaces", "  spaced name .ext", True),
    ("unicode", "ünïcødé.ext", True),
    ("emoji", "📈📉.ext", True),
    ("through a file", "{file}/x.ext", False),
    ("missing folders", "no/such/folders/x.ext", None),  # creatable for outputs (folders made), missing for inputs
    ("a folder", "{dir}", False),
    ("dot", ".", False),
    ("empty", "", False),
]


def _name(ws: Path, raw: str, ext: str) -> str:
    if raw in ("{255}", "{256}"):  # a name of exactly that many bytes, extension included
        return "a" * (int(raw[1:-1]) - len(ext)) + ext
    return raw.replace("{file}", str(ws / "plain.txt")).replace("{dir}", str(ws / "folder")).replace(".ext", ext)


def name_cases() -> list[Case]:
    out = []
    inputs = [  # (command template with {p}, extension, valid content)
        (["runs", "import", "{p}", "--db", "{db}"], ".csv", GOOD_CSV),
        (["recommend", "--hardware", "{p}", "--db", "{db}"], ".toml", GOOD_HW),
        (["recommend", "--laws", "{p}"], ".json", None),
        (["sweep", "file", "{p}", "--dry-run", "--db", "{db}"], ".json", GOOD_SWEEP),
        (["runs", "list", "--db", "{p}"], ".sqlite", None),
    ]
    outputs = [
        (["runs", "export", "--out", "{p}", "--db", "{db}"], ".csv"),
        (["recommend", "--params", "1e8", "--export", "json", "--out", "{p}", "--db", "{db}"], ".json"),
        (["fit", "--law", "compute", "--bootstrap", "0", "--out", "{p}", "--db", "{db}"], ".json"),
        (["runs", "snapshot", "{p}", "--db", "{db}"], ".sqlite"),
        (["next", "--budget-flops", "1e15", "--bootstrap", "5", "--out", "{p}", "--db", "{db}"], ".json"),
    ]
    for (label, raw, creatable), (tpl, ext, content) in itertools.product(NAMES, inputs):
        make = creatable is True and content is not None

        def setup(ws, raw=raw, ext=ext, content=content, make=make):
            if make:
                _write(ws / _name(ws, raw, ext), content)

        # a name click reads as an option (exit 2), or one that gives no source name (emoji: use
        # --source), may fail cleanly
        odd = raw.startswith("-") or (label == "emoji" and tpl[:2] == ["runs", "import"])
        out.append(Case(f"file names: input ({label})", [a.replace("{p}", "\0P") for a in tpl],
                        ANY if odd else OK if make else FAIL, setup=(setup, raw, ext)))
    for (label, raw, creatable), (tpl, ext) in itertools.product(NAMES, outputs):
        out.append(Case(f"file names: output ({label})", [a.replace("{p}", "\0P") for a in tpl],
                        # missing folders: snapshot makes them, the other writers refuse (a typo is not a folder)
                        ANY if raw.startswith("-") or creatable is None else OK if creatable else FAIL,
                        setup=(None, raw, ext)))
    return out


# Nested JSON: depths and inputs.
DEPTHS = [2, 50, 900, 5000, 200_000]


def nested_cases() -> list[Case]:
    out = []
    for depth in DEPTHS:
        deep = "[" * depth + "]" * depth
        obj = '{"a": ' * depth + "1" + "}" * depth
        targets = [
            (["recommend", "--hardware", "{ws}/deep.json", "--db", "{db}"], "deep.json", deep, FAIL),
            (["recommend", "--hardware", "{ws}/deep.json", "--db", "{db}"], "deep.json", obj, FAIL),
            (["recommend", "--laws", "{ws}/deep.json"], "deep.json", deep, FAIL),
            (["sweep", "file", "{ws}/deep.json", "--dry-run", "--db", "{db}"], "deep.json", deep, FAIL),
            (["sweep", "file", "{ws}/deep.json", "--dry-run", "--db", "{db}"], "deep.json", obj, FAIL),
            (["runs", "import", "{ws}/deep.jsonl", "--db", "{db}"], "deep.jsonl",
             '{"n_params": 1e6, "n_tokens": 2e7, "loss": 3.0, "extra": ' + deep + "}\n", ANY),
            (["runs", "import", "{ws}/deep.jsonl", "--db", "{db}"], "deep.jsonl", deep + "\n", FAIL),
        ]
        for args, fname, text, expect in targets:
            out.append(Case(f"nested JSON (depth {depth})", args, expect,
                            setup=lambda ws, f=fname, t=text: _write(ws / f, t)))
    return out


# Encodings of every file input.
def _encodings(text: str) -> list[tuple[str, bytes]]:
    utf8 = text.encode("utf-8")
    return [
        ("UTF-8", utf8),
        ("UTF-8 with BOM", b"\xef\xbb\xbf" + utf8),
        ("UTF-16", text.encode("utf-16")),
        ("UTF-16-LE without BOM", text.encode("utf-16-le")),
        ("Latin-1", utf8.replace(b"o", b"\xe9", 1)),
        ("invalid bytes", b"\xff\xfe\xfa" + utf8),
        ("NUL bytes", utf8.replace(b"\n", b"\x00\n", 1)),
        ("CRLF", text.replace("\n", "\r\n").encode("utf-8")),
        ("empty", b""),
        ("only a BOM", b"\xef\xbb\xbf"),
    ]


def encoding_cases() -> list[Case]:
    out = []
    inputs = [
        (["runs", "import", "{ws}/in.csv", "--db", "{db}"], "in.csv", GOOD_CSV),
        (["runs", "import", "{ws}/in.jsonl", "--db", "{db}"], "in.jsonl", GOOD_JSONL),
        (["recommend", "--hardware", "{ws}/hw.toml", "--db", "{db}"], "hw.toml", GOOD_HW),
        (["recommend", "--hardware", "{ws}/hw.json", "--db", "{db}"], "hw.json", json.dumps({"name": "x", "objective": "loss"})),
        (["sweep", "file", "{ws}/s.json", "--dry-run", "--db", "{db}"], "s.json", GOOD_SWEEP),
        (["recommend", "--laws", "{ws}/laws.json"], "laws.json", "{}"),
    ]
    for (args, fname, text), (label, body) in ((i, e) for i in inputs for e in _encodings(i[2])):
        expect = OK if label in ("UTF-8", "CRLF") and fname != "laws.json" else ANY
        out.append(Case(f"encodings ({label})", args, expect, setup=lambda ws, f=fname, b=body: _write(ws / f, b)))
    for raw in ["source=\udcff", "source=caf\udce9", "\udcff=1", "loss<\udc80", "source=\u202e", "source=\x00",
                "n_layer=\U0001f4c8", "source= ", "=", "loss<<1"]:
        out.append(Case("encodings (--where)", ["runs", "list", "--where", raw, "--db", "{db}"], ANY))
    for raw in ["\udcff", "a\tb", "\u202eevil", "x" * 5000, " ", "ok-name"]:
        out.append(Case("encodings (--source)", ["runs", "import", "{ws}/in.csv", "--source", raw, "--db", "{db}"],
                        OK if raw == "ok-name" else ANY, setup=lambda ws: _write(ws / "in.csv", GOOD_CSV)))
    return out


# Numeric extremes.
WHERE_COLUMNS = ["n_layer", "loss", "n_params", "source", "seed", "no_such_column", "status"]
WHERE_OPS = ["=", "!=", "<", "<=", ">", ">="]
WHERE_VALUES = ["1e309", "-1e309", "nan", "inf", "-inf", "1e19", "18446744073709551616", "-0", "1e-400",
                "0x10", "1_000", " 5 ", "", "abc", "9" * 400, "None"]
NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e400", "1e-300", "1e300", "abc", "", "1e16", "0.5"]


def numeric_cases() -> list[Case]:
    out = []
    for col, op, v in itertools.product(WHERE_COLUMNS, WHERE_OPS, WHERE_VALUES):
        out.append(Case("numbers: --where", ["runs", "list", "--json", "--where", f"{col}{op}{v}", "--db", "{db}"], ANY))
    for opt, v in itertools.product(["--params", "--flops", "--tpp", "--max-overhead", "--tolerance", "--confidence",
                                     "--vocab-size", "--seq-len", "--d-head"], NUMBERS):
        out.append(Case("numbers: recommend options", ["recommend", opt, v, "--json", "--db", "{db}"], ANY))
    for opt, v in itertools.product(["--n-embd", "--n-layer", "--params", "--n-tokens"],
                                    NUMBERS + ["9223372036854775808", "100000000000000000000"]):
        base = {"--n-embd": "256", "--n-layer": "4"}
        args = ["predict", "--json", "--db", "{db}"]
        for k, dv in base.items():
            args += [k, v if k == opt else dv]
        if opt not in base:
            args += [opt, v]
        out.append(Case("numbers: predict options", args, ANY))
    for v in NUMBERS + ["99999999999", "10001", "-5"]:
        out.append(Case("numbers: --bootstrap", ["fit", "--law", "compute", "--bootstrap", v, "--json", "--db", "{db}"],
                        FAIL if v not in ("0", "1e16", "0.5") or v == "1e16" else ANY))
        out.append(Case("numbers: --seed", ["fit", "--law", "compute", "--bootstrap", "0", "--seed", v, "--json",
                                            "--db", "{db}"], ANY))
        out.append(Case("numbers: --limit", ["runs", "list", "--json", "--limit", v, "--db", "{db}"], ANY))
        out.append(Case("numbers: --budget-flops", ["next", "--budget-flops", v, "--bootstrap", "5", "--out",
                                                    "{ws}/n.json", "--db", "{db}"], ANY))
    return out


# Outputs that are not plain files.
def _make_output(ws: Path, kind: str, ext: str) -> str:
    p = ws / f"out-{kind.replace(' ', '-')}{ext}"
    if kind == "char device":  # made here (as root), never a real one such as /dev/null
        try:
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            os.mkfifo(p)  # no permission for device nodes: the same check applies to a FIFO
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "symlink to a file":
        _write(ws / f"target{ext}", "old\n")
        p.symlink_to(ws / f"target{ext}")
    elif kind == "dangling symlink":
        p.symlink_to(ws / "nowhere" / "x")
    elif kind == "symlink loop":
        p.symlink_to(ws / f"out-loop2{ext}")
        (ws / f"out-loop2{ext}").symlink_to(p)
    elif kind == "symlink to a folder":
        (ws / "tdir").mkdir()
        p.symlink_to(ws / "tdir")
    elif kind == "folder":
        p.mkdir()
    elif kind == "0600 file":
        _write(p, "secret\n")
        p.chmod(0o600)
    elif kind == "read-only folder":
        d = ws / "rodir"
        d.mkdir()
        d.chmod(0o500)
        return str(d / f"x{ext}")
    return str(p)


OUTPUT_KINDS = ["char device", "fifo", "socket", "symlink to a file", "dangling symlink", "symlink loop",
                "symlink to a folder", "folder", "0600 file", "read-only folder"]
OUTPUT_OK = {"symlink to a file", "0600 file"}


def output_cases() -> list[Case]:
    out = []
    writers = [
        (["runs", "export", "--out", "{o}", "--db", "{db}"], ".csv"),
        (["recommend", "--params", "1e8", "--export", "json", "--out", "{o}", "--db", "{db}"], ".json"),
        (["recommend", "--params", "1e8", "--export", "megatron", "--out", "{o}", "--db", "{db}"], ".yaml"),
        (["fit", "--law", "compute", "--bootstrap", "0", "--out", "{o}", "--db", "{db}"], ".json"),
        (["runs", "snapshot", "{o}", "--db", "{db}"], ".sqlite"),
        (["next", "--budget-flops", "1e15", "--bootstrap", "5", "--out", "{o}", "--db", "{db}"], ".json"),
    ]
    root = os.geteuid() == 0
    for kind, (tpl, ext) in itertools.product(OUTPUT_KINDS, writers):
        expect = OK if kind in OUTPUT_OK else (ANY if kind in ("read-only folder", "dangling symlink") and root else FAIL)
        if kind == "dangling symlink":
            expect = ANY
        out.append(Case(f"outputs ({kind})", list(tpl), expect, setup=("output", kind, ext)))
    return out


# Hand-damaged databases: SQL applied to a copy of the good one.
DAMAGE = {
    "text in loss": "UPDATE runs SET loss = 'abc' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "bytes in loss": "UPDATE runs SET loss = x'00ff' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "negative loss": "UPDATE runs SET loss = -1 WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "text nan params": "UPDATE runs SET n_params = 'nan' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "huge n_layer": "UPDATE runs SET n_layer = 9223372036854775807 WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "text n_layer": "UPDATE runs SET n_layer = 'deep' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "broken config_json": "UPDATE runs SET config_json = '{broken' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "config_json a list": "UPDATE runs SET config_json = '[1,2]' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "config_json nested": "UPDATE runs SET config_json = '" + "[" * 5000 + "]" * 5000 + "'",
    "broken extra_json": "UPDATE runs SET extra_json = '{x' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "extra_json a list": "UPDATE runs SET extra_json = '[1]' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "schema_version abc": "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
    "schema_version 99": "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    "no meta table": "DROP TABLE meta",
    "no runs table": "DROP TABLE runs",
    "no curves table": "DROP TABLE curves",
    "unknown status": "PRAGMA ignore_check_constraints = 1; UPDATE runs SET status = 'zombie' WHERE rowid IN "
                      "(SELECT rowid FROM runs LIMIT 3)",
    "text timestamps": "UPDATE runs SET created_at = 'yesterday', updated_at = x'ff' WHERE rowid IN "
                       "(SELECT rowid FROM runs LIMIT 3)",
    "unknown parameterization": "UPDATE runs SET parameterization = '??' WHERE rowid IN (SELECT rowid FROM runs LIMIT 3)",
    "text in curves": "UPDATE curves SET val_loss = 'x' WHERE rowid IN (SELECT rowid FROM curves LIMIT 5)",
    "no runs": "DELETE FROM runs",
}
FILE_DAMAGE = {"truncated": lambda p: open(p, "r+b").truncate(5000), "zero bytes": lambda p: open(p, "wb").close(),
               "random bytes": lambda p: p.write_bytes(os.urandom(8192)), "text file": lambda p: p.write_text("hello\n")}
READERS = [
    ["runs", "list"], ["runs", "list", "--json"], ["runs", "export", "--out", "{ws}/x.csv"],
    ["recommend", "--params", "1e8", "--bootstrap", "5", "--json"],
    ["fit", "--law", "compute", "--bootstrap", "0", "--json"],
    ["predict", "--n-embd", "256", "--n-layer", "4", "--bootstrap", "5"],
    ["next", "--budget-flops", "1e15", "--bootstrap", "5", "--out", "{ws}/n.json"],
    ["runs", "snapshot", "{ws}/snap.sqlite"], ["sweep", "file", "{ws}/s.json", "--dry-run"],
    ["report", "--out", "{ws}/r.html", "--bootstrap", "5"],
]


def damage_cases() -> list[Case]:
    out = []
    for name, reader in itertools.product(list(DAMAGE) + list(FILE_DAMAGE), READERS):
        out.append(Case(f"damaged databases ({name})", reader + ["--db", "{db}"], ANY, db=name,
                        setup=lambda ws: _write(ws / "s.json", GOOD_SWEEP)))
    return out


def all_cases() -> list[Case]:
    return name_cases() + nested_cases() + encoding_cases() + numeric_cases() + output_cases() + damage_cases()


# ---------------------------------------------------------------------- running


def _dump(path: Path) -> str | bytes | None:
    """A database's content: its SQL dump, or its bytes when SQLite cannot read it."""
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()
    except sqlite3.Error:
        return path.read_bytes()


def _prepare_db(ws: Path, name: str) -> Path:
    db = ws / "runs.sqlite"
    shutil.copy(SHIPPED_DB, db)
    if name == "good":
        shutil.copy(SHIPPED_LAWS, ws / "laws.json")  # the shipped cache: valid for an identical copy
    elif name in DAMAGE:
        con = sqlite3.connect(db)
        con.executescript(DAMAGE[name])
        con.commit()
        con.close()
    else:
        FILE_DAMAGE[name](db)
    return db


class _Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Alarm()


def run_case(case: Case, scratch: Path) -> Outcome:
    import cli

    ws = Path(tempfile.mkdtemp(dir=scratch))
    (ws / "folder").mkdir()
    _write(ws / "plain.txt", "plain\n")
    db = _prepare_db(ws, case.db)
    args = [a.replace("{db}", str(db)).replace("{ws}", str(ws)) for a in case.args]
    setup = case.setup
    if isinstance(setup, tuple) and setup[0] == "output":
        target = _make_output(ws, setup[1], setup[2])
        args = [a.replace("{o}", target) for a in args]
    elif isinstance(setup, tuple):
        fn, raw, ext = setup
        if fn is not None:
            fn(ws)
        name = _name(ws, raw, ext)
        args = [a.replace("\0P", name) for a in args]
    elif callable(setup):
        setup(ws)
    before = _dump(db)
    text = ""
    problems: list[str] = []
    code: int | None = None
    t0 = time.perf_counter()
    cwd = os.getcwd()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(ALARM_S)
    try:
        os.chdir(ws)
        code, _, text = cli.run_captured(args)
    except _Alarm:
        problems.append("hang")
    except BaseException as exc:  # noqa: BLE001 (judging: any escape is a traceback)
        problems.append("traceback")
        text = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
    seconds = time.perf_counter() - t0
    if "Traceback (most recent call last)" in text and "traceback" not in problems:
        problems.append("traceback")
    if code is not None:
        if code not in (0, 1, 2) or (case.expect == FAIL and code == 0) or (case.expect == OK and code != 0):
            problems.append("exit code")
        if code == 1 and "traceback" not in problems:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            if not lines or not lines[-1].startswith("cp-plan: error: ") or \
                    sum(ln.startswith("cp-plan: error: ") for ln in lines) != 1:
                problems.append("one line")
    if code != 0 and _dump(db) != before:
        problems.append("database")
    for p in ws.rglob("*"):  # let the next run clean up a read-only folder
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o700)
    shutil.rmtree(ws, ignore_errors=True)
    return Outcome(case, code, text.strip()[-400:], problems, seconds)


def run_all(cases: list[Case], progress: bool = True) -> list[Outcome]:
    scratch = Path(tempfile.mkdtemp(prefix="cp-plan-hostile-"))
    outcomes = []
    try:
        for i, case in enumerate(cases, 1):
            outcomes.append(run_case(case, scratch))
            if progress and (i % 50 == 0 or i == len(cases)):
                bad = sum(bool(o.problems) for o in outcomes)
                print(f"  {i}/{len(cases)} cases, {bad} with problems", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict:
    by_cat: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        cat = o.case.category.split(" (")[0]
        c = by_cat[cat]
        c["cases"] += 1
        c["exit 0"] += o.code == 0
        c["exit 1"] += o.code == 1
        c["exit 2"] += o.code == 2
        for p in o.problems:
            c[p] += 1
    totals = Counter()
    for c in by_cat.values():
        totals.update(c)
    return {"categories": {k: dict(v) for k, v in sorted(by_cat.items())}, "total": dict(totals),
            "failures": [{"category": o.case.category, "args": o.case.label, "expect": o.case.expect,
                          "exit": o.code, "problems": o.problems, "stderr": o.err} for o in outcomes if o.problems]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=1, help="run every Nth case (default: all)")
    ap.add_argument("--json", action="store_true", help="print the counts and failures as JSON")
    args = ap.parse_args()
    cases = all_cases()[::max(1, args.every)]
    t0 = time.perf_counter()
    res = summary(run_all(cases))
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return
    problems = ("traceback", "exit code", "one line", "database", "hang")
    print(f"{len(cases)} generated cases in {time.perf_counter() - t0:.0f} s")
    print(f"{'category':22s} {'cases':>6s} {'exit 0':>7s} {'exit 1':>7s} {'exit 2':>7s}  " + "  ".join(problems))
    for cat, c in list(res["categories"].items()) + [("total", res["total"])]:
        print(f"{cat:22s} {c.get('cases', 0):6d} {c.get('exit 0', 0):7d} {c.get('exit 1', 0):7d} "
              f"{c.get('exit 2', 0):7d}  " + "  ".join(f"{c.get(p, 0):{len(p)}d}" for p in problems))
    for f in res["failures"][:40]:
        print(f"  {', '.join(f['problems'])}: [{f['category']}] {f['args']} (expect {f['expect']}, exit {f['exit']}): "
              f"{f['stderr'].splitlines()[-1][:200] if f['stderr'] else ''}")


if __name__ == "__main__":
    main()
