"""`clara bench current`: the scenario generator's guarantees, and a smoke run of the harness.

Scores are NOT asserted (the memory core is being changed to supersede facts that change); what
is asserted is that the benchmark is sound: phrasebooks complete and dev/holdout disjoint,
paraphrase questions sharing no content word with the new statement, the table carrying every
metric, counts that add up, and no privacy violation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from clara.bench import current

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("CLARA_TEST_DATABASE_URL")


def test_phrasebooks_are_complete_and_dev_holdout_disjoint():
    assert current.validate() == []


@pytest.mark.parametrize("set_name", current.SETS)
def test_generated_scenarios(set_name):
    scs = current.generate(set_name, seed=1)
    assert len(scs) >= 400
    assert len({s.attr for s in scs}) >= 15
    share = Counter(s.lang for s in scs)
    assert share["es"] / len(scs) >= 0.2 - 1e-9
    for lang in ("pt", "fr", "de"):
        assert share[lang] / len(scs) >= 0.05
    assert {s.form for s in scs} == {"change", "cessation"} and {s.person for s in scs} == {1, 3}
    assert {s.place for s in scs} == {"dm", "personal", "shared"}
    assert all(not s.paraphrase_overlap for s in scs), [s.id for s in scs if s.paraphrase_overlap][:5]
    for s in scs:
        roles = [t.role for p in s.sessions for t in p.turns]
        assert roles.count("old") == roles.count("new") == roles.count("twin") == 1
        old_day = next(p.day for p in s.sessions if any(t.role == "old" for t in p.turns))
        new_day = next(p.day for p in s.sessions if any(t.role == "new" for t in p.turns))
        assert old_day < new_day < s.question_day  # each state in its own session, days apart
        assert s.question and s.history_question and s.paraphrase_question
        assert "{" not in s.new_text + s.old_text + s.question and "@" not in s.question.replace(".", "")
    assert [s.new_text for s in current.generate(set_name, seed=1)[:20]] == [s.new_text for s in scs[:20]]


def test_dev_and_holdout_questions_differ():
    dev = {s.question for s in current.generate("dev")}
    hold = {s.question for s in current.generate("holdout")}
    assert len(dev & hold) / len(hold) < 0.05  # the odd identical short question across sets


def test_rendering_per_language():
    ctx = current.Ctx("es", 3, "f", name="Lucía", intro="mi hermana Lucía", myrel="mi hermana", v="el colegio Alameda")
    assert current.render("{{kid} va a {v}|@ va a {v}}", ctx) == "Lucía va al colegio Alameda"
    ctx = current.Ctx("pt", 1, "f", v="a USP")
    assert current.render("{estudo em {v}, sou alun[o|a]|}", ctx) == "estudo na USP, sou aluna"
    ctx = current.Ctx("fr", 3, "m", name="Adrien", myrel="mon coloc", v="le japonais")
    assert current.render("{|ce que @ préfère, c'est {v}, dit {myrel}}", ctx) == (
        "ce qu'Adrien préfère, c'est le japonais, dit mon coloc"
    )
    assert current.render("{|le numéro {deN}}", ctx) == "le numéro d'Adrien"
    with pytest.raises(ValueError):
        current.render("@ lives in {v}", current.Ctx("en", 1, "m", v="Porto"))


def _bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLARA_DATA_DIR": str(tmp_path), "COLUMNS": "250"}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "clara.cli", "bench", "current", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=170,
    )


def _check(res: subprocess.CompletedProcess, out: Path, n: int) -> dict:
    assert res.returncode == 0, res.stderr[-3000:]
    for col in ("n", *current.METRICS, "query_p50_ms", "query_p95_ms", "privacy_violations"):
        assert col in res.stdout, col
    data = json.loads(out.read_text())["systems"]
    rows = {k: v for k, v in data.items() if k in current.LANG_SHARE}
    assert sum(r["n"] for r in rows.values()) == data["all"]["n"] == n
    for name, row in [*rows.items(), ("all", data["all"])]:
        counts = row["counts"]
        for metric in current.METRICS:
            assert 0 <= counts[metric] <= row["n"]
            assert row[metric] == pytest.approx(counts[metric] / row["n"]), (name, metric)
            if name == "all":
                assert counts[metric] == sum(r["counts"][metric] for r in rows.values())
        # the top hit cannot be both the new state and a stale old one; an empty answer has no new state
        assert counts["current@1"] + counts["stale>current"] <= row["n"]
        assert counts["none@k"] + counts["current@5"] <= row["n"]
        assert row["query_p50_ms"] <= row["query_p95_ms"]
    for breakdown in ("by_attribute", "by_form", "by_person", "by_place", "by_new_template"):
        assert sum(r["n"] for r in data[breakdown].values()) == n
    assert len(data["scenarios"]) == n
    assert data["all"]["privacy_violations"] == 0  # another user's private memories: never
    assert data["run"]["paraphrase_overlaps"] == 0
    return data


def test_smoke_run_sqlite(tmp_path):
    out = tmp_path / "current.json"
    res = _bench(["--limit", "12", "--json", str(out)], tmp_path)
    data = _check(res, out, 12)
    assert len({s["lang"] for s in data["scenarios"].values()}) >= 3  # a limit still mixes languages
    bad = _bench(["--set", "nope", "--limit", "2"], tmp_path)
    assert bad.returncode == 2 and "unknown set" in bad.stderr


@pytest.mark.skipif(not PG_URL, reason="CLARA_TEST_DATABASE_URL not set")
def test_smoke_run_postgresql(tmp_path, pg_database):
    out = tmp_path / "current.json"
    res = _bench(
        ["--limit", "6", "--lang", "es,en", "--set", "holdout", "--json", str(out), "--database-url", pg_database],
        tmp_path,
    )
    data = _check(res, out, 6)
    assert data["run"]["database"] == "postgresql"
    assert {s["lang"] for s in data["scenarios"].values()} <= {"es", "en"}
