"""The shipped default run database and its cached laws: what a fresh clone plans from."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB = ROOT / "data" / "runs" / "runs.sqlite"
LAWS = ROOT / "data" / "runs" / "laws.json"


def test_shipped_database_is_intact_and_holds_every_experiment():
    con = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        sweeps = dict(con.execute("SELECT sweep, count(*) FROM runs GROUP BY sweep").fetchall())
        params = {r[0] for r in con.execute("SELECT DISTINCT parameterization FROM runs WHERE sweep = 'shape'")}
        axes = {r[0] for r in con.execute("SELECT DISTINCT axis FROM coord_checks")}
        unfinished = con.execute("SELECT count(*) FROM runs WHERE status IN ('running', 'pending')").fetchone()[0]
    finally:
        con.close()
    assert sweeps.get("shape", 0) >= 30 and sweeps.get("lr", 0) >= 24
    assert {"sp", "mup", "completep", "alpha0.5"} <= params
    assert axes == {"depth", "width"}
    assert unfinished == 0


def test_cached_laws_match_the_shipped_database():
    """A fresh clone must plan from the cache (no refit): the cache names this file's hash."""
    from planner import lawcache

    data = json.loads(LAWS.read_text())
    assert data["db_sha256"] == lawcache._file_sha256(DB), "regenerate: cp-plan recommend (or reproduce --report-only)"
    laws = lawcache.load_laws()
    assert laws.meta["origin"] == "cache" and {"sp", "mup", "completep"} <= set(laws.laws)


def _plan(hardware):
    out = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "recommend", "--params", "1.5e9",
                          "--hardware", hardware, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_weight_streaming_and_latency_plans_differ_with_savings_intervals():
    ws, lat = _plan("weight-streaming"), _plan("latency")
    assert ws["n_layer"] > lat["n_layer"] and ws["ratio"] < lat["ratio"]
    for plan in (ws, lat):
        assert abs(plan["n_params"] / 1.5e9 - 1) < 0.1
        for other in ("mup", "sp"):
            s = plan["savings"][other]
            assert s["low"] <= s["fraction"] <= s["high"]
        assert any("irreducible loss E" in w or "of the largest run" in w for w in plan["warnings"])
    band = ws["band"]
    assert band["completep"]["ratio_min"] <= band["mup"]["ratio_min"]  # CompleteP's band is never shallower
