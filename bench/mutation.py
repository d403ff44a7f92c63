"""Mutation testing of the privacy- and durability-critical code, with cosmic-ray (run by bench/mutation.sh).

Do not run this in a developer's checkout: cosmic-ray writes each mutant into the source file itself and
puts the original back afterwards. ``bench/mutation.sh`` makes a throw-away copy with its own venv and runs
this file there. In-place mutation is what makes the results honest here: many tests start subprocesses
(the agent, the CLI, a second recording process), and those import whatever is on disk. A tool that mutates
a copy of the tree and switches mutants on inside the test process (mutmut 3's trampolines, selected by an
environment variable in the ``mutants/`` copy) leaves those subprocesses running the original code.

Each target is one module, narrowed to the functions (or lines) that hold the invariant, with the few
test files that exercise it, run with ``-x`` (the first failing test kills the mutant) and a timeout per
mutant of a few times the unmutated run. Operators are restricted to those that break these invariants;
see ``OPERATORS``.

    python bench/mutation.py [--target NAME ...] [--jobs N] --copies DIR[,DIR...] --out DIR
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from threading import Thread
from typing import Any

#: The operators run, and why these. A comparison is replaced by its boundary neighbour and by its
#: negation (``< k`` by ``<= k`` and ``>= k``): the k-anonymity edges and every "keep or drop" test are
#: exactly those. ``not`` is added and removed, ``and``/``or`` swapped, booleans flipped, loops made to
#: run zero times (a deletion loop that never runs), ``break``/``continue`` swapped, exception handlers
#: made to catch nothing (fail-closed paths), decorators removed (a scrubber's ``@hookimpl``), ``+``/``-``
#: swapped (counts, offsets), ``|``/``&`` swapped (the held-back products of a lease). Left out: the other
#: four or five replacements of each comparison and the eleven of each arithmetic operator (``<`` by
#: ``==``, ``is``, ``+`` by ``<<``, ``**``...), which this code's tests kill or which are type errors,
#: and cosmic-ray's VariableReplacer/VariableInserter (random names: not reproducible). Numbers are
#: replaced by their neighbours only where a number is a documented limit (``numbers=True``).
OPERATORS = frozenset(
    {
        *(
            f"ReplaceComparisonOperator_{a}_{b}"
            for a, b in [
                ("Lt", "LtE"),
                ("Lt", "GtE"),
                ("LtE", "Lt"),
                ("LtE", "Gt"),
                ("Gt", "GtE"),
                ("Gt", "LtE"),
                ("GtE", "Gt"),
                ("GtE", "Lt"),
                ("Eq", "NotEq"),
                ("NotEq", "Eq"),
                ("Is", "IsNot"),
                ("IsNot", "Is"),
            ]
        ),
        "AddNot",
        "ReplaceUnaryOperator_Delete_Not",
        "ReplaceAndWithOr",
        "ReplaceOrWithAnd",
        "ReplaceTrueWithFalse",
        "ReplaceFalseWithTrue",
        "ZeroIterationForLoop",
        "ReplaceBreakWithContinue",
        "ReplaceContinueWithBreak",
        "ExceptionReplacer",
        "RemoveDecorator",
        "ReplaceBinaryOperator_Add_Sub",
        "ReplaceBinaryOperator_Sub_Add",
        "ReplaceBinaryOperator_BitOr_BitAnd",
        "ReplaceBinaryOperator_BitAnd_BitOr",
    }
)
NUMBERS = "NumberReplacer"

Ranges = list[tuple[int, int]]


def functions(*names: str) -> Callable[[ast.Module], Ranges]:
    """The lines of the named functions (``name`` or ``Class.name``), decorators included."""

    def select(tree: ast.Module) -> Ranges:
        found: dict[str, tuple[int, int]] = {}

        def walk(body: Iterable[ast.stmt], prefix: str) -> None:
            for node in body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign):
                    if isinstance(node, ast.Assign):
                        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                            continue
                        name = node.targets[0].id
                    else:
                        name = node.name
                    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                    found[prefix + name] = (start, node.end_lineno or node.lineno)
                    if isinstance(node, ast.ClassDef):
                        walk(node.body, f"{prefix}{node.name}.")

        walk(tree.body, "")
        missing = [n for n in names if n not in found]
        if missing:
            raise SystemExit(f"mutation targets name functions that are gone: {', '.join(missing)}")
        return [found[n] for n in names]

    return select


def k_checks(tree: ast.Module) -> Ranges:
    """The lines of every comparison with ``k`` (the k-anonymity checks), and of the test that holds it."""
    lines: Ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
            isinstance(n, ast.Name) and n.id == "k" for n in (node.left, *node.comparators)
        ):
            lines.append((node.lineno, node.end_lineno or node.lineno))
    return lines


def everything(tree: ast.Module) -> Ranges:
    return [(1, 10**9)]


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    tests: tuple[str, ...]
    """pytest arguments: the test files (fastest and most telling first, since ``-x`` stops at the first
    failure), ``-k`` expressions, deselections."""
    select: Callable[[ast.Module], Ranges] = everything
    numbers: bool = False
    why: str = ""
    plugins: tuple[str, ...] | None = ("_hypothesis_pytestplugin", "ceip_core.testing")
    """The pytest plugins to load, or None for all installed: the core tests need neither aiohttp's nor
    asyncio's, and importing them is a large part of each run's start."""


_SQLITE_ONLY = ("-k", "not postgres")
# Fails on main since the salvage of a damaged state database (#9) replaces the database and restores
# consent from the backup: reported to the lead, left out of the consent runs so that the baseline passes.

TARGETS = (
    Target(
        "identifiers",
        "ceip_core/default_plugins/identifiers.py",
        (
            "tests/default_plugins/test_identifiers.py",
            "tests/default_plugins/test_mutation_scrubbers.py",
            "tests/default_plugins/test_declared.py",
        ),
        why="no identifier survives in free text",
    ),
    Target(
        "declared",
        "ceip_core/default_plugins/declared.py",
        ("tests/default_plugins/test_declared.py", "tests/default_plugins/test_mutation_scrubbers.py"),
        numbers=True,
        why="only what the spec declares leaves the machine",
    ),
    Target(
        "limits",
        "ceip_core/default_plugins/limits.py",
        (
            "tests/default_plugins/test_limits.py",
            "tests/default_plugins/test_mutation_scrubbers.py",
            "tests/default_plugins/test_declared.py",
        ),
        numbers=True,
        why="every report is bounded in size",
    ),
    Target(
        "scrubbing",
        "ceip_core/scrubbing.py",
        ("tests/default_plugins", "tests/test_recorder.py"),
        numbers=True,
        why="every report passes every scrubber, in order; a failing one drops it",
    ),
    Target(
        "consent",
        "ceip_core/consent.py",
        ("tests/test_consent.py", "tests/test_spool.py", "tests/test_mutation_consent.py"),
        why="nothing is recorded or sent without opt-in; opt-out deletes and is never undone",
    ),
    Target(
        "spool",
        "ceip_core/spool.py",
        (
            "tests/test_spool.py",
            "tests/test_mutation_spool.py",
            "tests/test_salvage.py::test_journal_forgets_delivered_requests_and_empties_itself",
        ),
        select=functions("Spool.lease", "Spool.settle", "_settle_journal", "Spool.purge", "Spool._enforce_quotas"),
        why="lease/ack/remove: nothing lost, nothing sent twice, reports never overtake a deletion",
    ),
    Target(
        "spool-rows",
        "ceip_core/spool_rows.py",
        ("tests/test_agent.py::test_an_opt_out_deletes_what_once_kept_for_the_next_run",),
        select=functions("drop_partial"),
        why="an opt-out forgets what the agent collected and has not sealed yet",
    ),
    Target(
        "deletion-sqlite",
        "ceip_core/service/sqlite_store.py",
        (
            "tests/service/test_reports.py",
            "tests/service/test_reach.py",
            "tests/service/test_fold.py",
            "tests/service/test_mutation_deletion.py",
            *_SQLITE_ONLY,
        ),
        select=functions("SQLiteStorage._delete", "SQLiteStorage._write", "_DELETE_ROLLUP"),
        plugins=None,
        why="a deletion request removes the machine's rows from every table",
    ),
    Target(
        "deletion-postgres",
        "ceip_core/service/postgres_store.py",
        (
            "tests/service/test_reports.py",
            "tests/service/test_reach.py",
            "tests/service/test_fold.py",
            "tests/service/test_mutation_deletion.py",
            "-k",
            "postgres",
        ),
        select=functions("PostgresStorage._delete"),
        plugins=None,
        why="the same on PostgreSQL",
    ),
    Target(
        "deletion-rollups",
        "ceip_core/service/rollups.py",
        (
            "tests/service/test_reach.py",
            "tests/service/test_reports.py",
            "tests/service/test_mutation_deletion.py",
            *_SQLITE_ONLY,
        ),
        select=functions("Table.delete", "PER_MACHINE", "removal"),
        plugins=None,
        why="the per-machine rollup rows go with the machine",
    ),
    Target(
        "kanonymity",
        "ceip_core/service/queries.py",
        (
            "tests/service/test_kanonymity.py",
            "tests/service/test_queries.py",
            "tests/service/test_mutation_kanonymity.py",
            *_SQLITE_ONLY,
        ),
        select=k_checks,
        plugins=None,
        why="no group of fewer than k machines is published",
    ),
)
BY_NAME = {t.name: t for t in TARGETS}


@dataclass(frozen=True)
class Equivalent:
    """A surviving mutant that no test can kill, because it changes no behaviour: the reason is the proof.
    Matched by the unmutated line (stripped), the operator and, if given, the mutated line, so that it
    follows the line as files change."""

    module: str
    line: str
    operators: tuple[str, ...]
    reason: str
    mutant: str = ""


_IDS = "ceip_core/default_plugins/identifiers.py"
_LIMITS = "ceip_core/default_plugins/limits.py"
_CACHE = "the cache of spec indexes is a shortcut: a wrong answer here only rebuilds the index"
_PREFILTER = (
    "the quick test before the names pattern only skips a search that cannot match; without it (or with it"
    " always true) the pattern runs and finds the same"
)
_SHORTCUT = "a shortcut that returns what the full path would: the same output, only slower"
_STRICT = "zip(strict=True) only raises on sequences of different lengths, and these have one length by construction"
EQUIVALENT = (
    Equivalent(
        "ceip_core/default_plugins/declared.py",
        "if hit is None or hit[0] is not spec:",
        ("NumberReplacer", "ReplaceComparisonOperator_IsNot_Is"),
        _CACHE + " (hit[1], hit[-1] are never the spec, and a cached spec is held, so its id cannot be reused:"
        " every call rebuilds, or none is stale)",
    ),
    Equivalent(
        "ceip_core/default_plugins/declared.py",
        "if len(_INDEXES) >= 64:",
        ("ReplaceComparisonOperator_GtE_Gt", "ReplaceComparisonOperator_GtE_Lt", "NumberReplacer", "AddNot"),
        _CACHE + " (emptied at another size, or before every new spec)",
    ),
    Equivalent(_IDS, "@functools.lru_cache(maxsize=16)", ("RemoveDecorator",), "a cache of compiled patterns"),
    Equivalent(_IDS, "for ch in name:", ("ZeroIterationForLoop",), _PREFILTER + " (the folded name is empty)"),
    Equivalent(
        _IDS,
        "out.append(next((a for a in _ASCII_LOWER if pattern.fullmatch(a)), ch.lower() if ch.isascii() else ch))",
        ("AddNot",),
        _PREFILTER + " (the folded name is compared with ASCII text only, and a character with no ASCII"
        " equivalent is not ASCII whether lowered or not)",
    ),
    Equivalent(
        _IDS,
        "return m.names.sub(self._name, text) if m.names is not None and self._may_hold_names(text) else text",
        ("ReplaceAndWithOr",),
        _PREFILTER + " (text this plain is ASCII, so with no names the quick test is false as before)",
    ),
    Equivalent(
        _IDS,
        "if len(text) >= 7 and _HAS_DIGIT.search(text):",
        ("ReplaceAndWithOr",),
        "every number detector needs a digit and at least 7 characters: running them anyway finds nothing",
    ),
    Equivalent(
        _IDS,
        "while i < len(groups):",
        ("ReplaceComparisonOperator_Lt_LtE",),
        "the extra pass has no groups left to try: it finds no card and ends",
    ),
    Equivalent(
        _IDS,
        "break",
        ("ReplaceBreakWithContinue",),
        "past 19 digits every longer run is past 19 too: continuing finds no card either",
        mutant="continue",
    ),
    Equivalent(_IDS, "return all(a is b for a, b in zip(new, old, strict=True))", ("ReplaceTrueWithFalse",), _STRICT),
    Equivalent(
        _LIMITS,
        "if len(text) * 4 <= max_bytes:",
        ("NumberReplacer", "ReplaceComparisonOperator_LtE_Lt"),
        _SHORTCUT + " (four bytes a character is the most UTF-8 takes; a stricter test only skips the shortcut)",
        mutant="if len(text) * 5 <= max_bytes:",
    ),
    Equivalent(
        _LIMITS,
        "if len(text) * 4 <= max_bytes:",
        ("ReplaceComparisonOperator_LtE_Lt",),
        _SHORTCUT + " (a stricter test only skips the shortcut)",
    ),
    Equivalent(
        _LIMITS,
        "if len(data) <= max_bytes:",
        ("ReplaceComparisonOperator_LtE_Lt",),
        _SHORTCUT + " (cutting a text of exactly max_bytes to max_bytes returns it whole)",
    ),
    Equivalent(
        _LIMITS,
        "return series if all(a is b for a, b in zip(out, series, strict=True)) else merge(out)",
        ("ReplaceTrueWithFalse",),
        _STRICT,
    ),
    Equivalent(
        _LIMITS,
        "return problems if all(a is b for a, b in zip(out, problems, strict=True)) else merge_problems(out)",
        ("ReplaceTrueWithFalse",),
        _STRICT,
    ),
    Equivalent(
        _LIMITS,
        "if all(len(g) <= limit for g in groups.values()):",
        ("ReplaceComparisonOperator_LtE_Lt",),
        _SHORTCUT + " (a group of exactly the limit keeps all its items, and the scrubber's input arrives merged,"
        " so sorted as the full path sorts it)",
    ),
    Equivalent(
        "ceip_core/spool.py",
        "if count <= q.max_reports and size <= q.max_bytes:",
        ("ReplaceComparisonOperator_LtE_Lt",),
        _SHORTCUT + " (at exactly a quota the loop below makes the same test first and drops nothing)",
    ),
    Equivalent(
        "ceip_core/consent.py",
        "TYPE_CHECKING = False  # typing, dataclasses and logging together cost more than the recording path's budget",
        ("ReplaceFalseWithTrue",),
        "imports for type checkers only: importing them at run time costs time (bench/run.py), changes nothing",
    ),
    Equivalent(
        "ceip_core/consent.py",
        "if TYPE_CHECKING:",
        ("AddNot",),
        "imports for type checkers only: importing them at run time costs time (bench/run.py), changes nothing",
    ),
    Equivalent(
        "ceip_core/consent.py",
        "guid_created: bool = False,",
        ("ReplaceFalseWithTrue",),
        "every caller passes guid_created: the default is never used",
    ),
    Equivalent(
        "ceip_core/spool.py",
        "break",
        ("ReplaceBreakWithContinue",),
        "once both quotas hold they hold for every later row: continuing drops nothing more",
        mutant="continue",
    ),
    Equivalent(
        "ceip_core/spool.py",
        'i.item_id for i in lease.items if i.kind == "deletion" and (i.item_id in accepted or i.item_id in rejected)',
        ("ReplaceAndWithOr",),
        "settled reports are not in the deletion journal, so forgetting them there changes nothing, and the"
        " journal is emptied only when no deletion request is queued, which is right after any lease",
    ),
    Equivalent(
        "ceip_core/service/rollups.py",
        'if self.name == "machine_days" or "day" not in self.columns:',
        ("AddNot", "ReplaceComparisonOperator_Eq_NotEq"),
        "the day condition only lets the database find the rows by key; guid and product alone pick the same"
        " rows (machine_days holds every day of the machine)",
    ),
)


def _equivalent(module: str, line: str, operator: str, mutant: str) -> Equivalent | None:
    return next(
        (
            e
            for e in EQUIVALENT
            if module == e.module
            and line.strip() == e.line
            and operator in e.operators
            and (not e.mutant or e.mutant == mutant)
        ),
        None,
    )


# -- running one target in one copy -------------------------------------------------------------------


def _pytest(copy: Path, target: Target) -> str:
    existing = [a for a in target.tests if not a.startswith("tests/") or (copy / a.split("::")[0]).exists()]
    plugins = [a for p in target.plugins or () for a in ("-p", p)]
    args = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *plugins, "--hypothesis-seed=0", *existing]
    return shlex.join([str(copy / ".venv" / "bin" / "python"), *args])


def _configure(copy: Path, target: Target, work: Path, timeout: float) -> Path:
    config = work / f"{target.name}.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(str(copy / target.module))}\n"
        f"timeout = {timeout:.1f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(_pytest(copy, target))}\n"
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    return config


def _annotations(tree: ast.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the type annotations are: with ``from __future__ import annotations`` they are never evaluated,
    so a mutant there (``str | None`` made ``str & None``) changes nothing."""
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
    return [((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0)) for a in found]


def _narrow(session: Path, copy: Path, target: Target) -> None:
    """Mark as skipped every mutation outside the target's lines, in an annotation, or of an operator not run."""
    tree = ast.parse((copy / target.module).read_text())
    ranges = target.select(tree)
    annotations = _annotations(tree)
    allowed = OPERATORS | {NUMBERS} if target.numbers else OPERATORS
    db = sqlite3.connect(session)
    with db:
        skipped = []
        for job, operator, start, column, end in db.execute(
            "SELECT job_id, operator_name, start_pos_row, start_pos_col, end_pos_row FROM mutation_specs"
        ):
            inside = any(start <= b and a <= end for a, b in ranges)
            annotation = any(a <= (start, column) < b for a, b in annotations)
            if not inside or annotation or operator.removeprefix("core/") not in allowed:
                skipped.append(job)
        db.executemany(
            "INSERT OR REPLACE INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
            "VALUES ('SKIPPED', 'not in the mutation scope', NULL, NULL, ?)",
            [(j,) for j in skipped],
        )
    db.close()


def run_target(copy: Path, target: Target, out: Path, *, dry_run: bool = False) -> dict[str, object]:
    """Mutate ``target`` in ``copy``; write and return its results."""
    work = out / target.name
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if target.plugins is not None:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # A copy left mutated by an interrupted run (``--keep``) starts from the committed file again.
    subprocess.run(["git", "-C", str(copy), "checkout", "-q", "--", target.module], check=True)
    python = str(copy / ".venv" / "bin" / "python")
    cosmic = [python, "-m", "cosmic_ray.cli"]
    session = work / "session.sqlite"
    session.unlink(missing_ok=True)
    started = time.monotonic()
    if dry_run:
        config = _configure(copy, target, work, 30)
        subprocess.run([*cosmic, "init", str(config), str(session)], cwd=copy, env=env, check=True, capture_output=True)
        _narrow(session, copy, target)
        return {"target": target.name, "module": target.module, **summarise(session, copy)}
    baseline = subprocess.run(
        shlex.split(_pytest(copy, target)), cwd=copy, env=env, capture_output=True, text=True, check=False
    )
    base_s = time.monotonic() - started
    (work / "baseline.log").write_text(baseline.stdout + baseline.stderr)
    result: dict[str, object] = {"target": target.name, "module": target.module, "baseline_s": round(base_s, 1)}
    if baseline.returncode != 0:
        result["error"] = f"the unmutated tests fail (see {work / 'baseline.log'})"
        (work / "result.json").write_text(json.dumps(result))
        return result
    # Generous: the machine is shared, and a mutant that loops is what the timeout is for.
    timeout = max(30.0, 4 * base_s)
    config = _configure(copy, target, work, timeout)
    subprocess.run([*cosmic, "init", str(config), str(session)], cwd=copy, env=env, check=True, capture_output=True)
    _narrow(session, copy, target)
    with (work / "exec.log").open("w") as log:
        subprocess.run(
            [*cosmic, "exec", str(config), str(session)], cwd=copy, env=env, check=True, stdout=log, stderr=log
        )
    result.update(summarise(session, copy))
    result["timeout_s"] = timeout
    result["seconds"] = round(time.monotonic() - started)
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return result


def summarise(session: Path, copy: Path) -> dict[str, object]:
    db = sqlite3.connect(session)
    rows = db.execute(
        "SELECT m.module_path, m.start_pos_row, m.operator_name, m.occurrence, r.worker_outcome, r.test_outcome, "
        "r.output, r.diff FROM mutation_specs m JOIN work_results r USING (job_id) "
        "WHERE r.worker_outcome != 'SKIPPED' ORDER BY m.start_pos_row, m.operator_name"
    ).fetchall()
    pending = db.execute(
        "SELECT COUNT(*) FROM mutation_specs WHERE job_id NOT IN (SELECT job_id FROM work_results)"
    ).fetchone()[0]
    db.close()
    counts = {"mutants": 0, "killed": 0, "survived": 0, "equivalent": 0, "timeouts": 0, "errors": 0}
    counts["pending"] = pending
    survivors = []
    sources: dict[str, list[str]] = {}
    for module, line, operator, occurrence, worker, outcome, output, diff in rows:
        if worker == "NO_TEST":  # the operator found nothing to change at that occurrence
            continue
        counts["mutants"] += 1
        if worker != "NORMAL" or outcome not in ("KILLED", "SURVIVED"):
            counts["errors"] += 1
        elif outcome == "KILLED":
            counts["timeouts" if output == "timeout" else "killed"] += 1
        else:
            relative = str(Path(module).relative_to(copy))
            if relative not in sources:
                sources[relative] = (copy / relative).read_text().splitlines()
            change = [
                ln[1:].strip() for ln in (diff or "").splitlines() if ln.startswith("+") and not ln.startswith("+++")
            ]
            if _equivalent(
                relative, sources[relative][line - 1], operator.removeprefix("core/"), change[0] if change else ""
            ):
                counts["equivalent"] += 1
                continue
            counts["survived"] += 1
            survivors.append(
                {
                    "where": f"{Path(module).relative_to(copy)}:{line}",
                    "operator": operator.removeprefix("core/"),
                    "occurrence": occurrence,
                    "mutant": change[0] if change else "",
                }
            )
    return {**counts, "survivors": survivors}


def _postgres(copy: Path) -> Any:
    """One PostgreSQL server for every run of the PostgreSQL tests (``CEIP_TEST_POSTGRES_URL``), instead of
    a cluster made afresh for each mutant."""
    # The tests' ``service`` package, not bench/service.py beside this file.
    sys.path[0] = str(copy / "tests")
    from service.postgres import Cluster

    cluster = Cluster()
    cluster.start()
    os.environ["CEIP_TEST_POSTGRES_URL"] = cluster.url
    return cluster


# -- the whole run ------------------------------------------------------------------------------------


def table(results: list[dict[str, object]]) -> str:
    head = (
        "target",
        "module",
        "mutants",
        "killed",
        "survived",
        "equivalent",
        "timeouts",
        "errors",
        "pending",
        "seconds",
    )
    lines = [head]
    for r in results:
        if "error" in r:
            lines.append((str(r["target"]), str(r["module"]), "-", "-", "-", "-", "-", str(r["error"]), "-", "-"))
            continue
        lines.append(tuple(str(r.get(c, "")) for c in head))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    total = {c: sum(int(r.get(c, 0) or 0) for r in results if "error" not in r) for c in head[2:9]}
    text.append("total: " + ", ".join(f"{v} {k}" for k, v in total.items()))
    for r in results:
        for s in r.get("survivors", []) or []:  # type: ignore[union-attr]
            text.append(f"survived  {r['target']:<17} {s['where']:<48} {s['operator']:<40} {s['mutant']}")
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", choices=sorted(BY_NAME), help="run only these (repeatable)")
    parser.add_argument("--copies", required=True, help="comma-separated throw-away copies, one per parallel job")
    parser.add_argument("--out", required=True, type=Path, help="folder for sessions, logs and results")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--dry-run", action="store_true", help="count the mutants of each target, run nothing")
    args = parser.parse_args()
    if args.list:
        for t in TARGETS:
            print(f"{t.name:<18} {t.module:<45} {t.why}")
        return 0
    targets = [BY_NAME[n] for n in args.target] if args.target else list(TARGETS)
    copies: Queue[Path] = Queue()
    for c in args.copies.split(","):
        copies.put(Path(c).resolve())
    results: dict[str, dict[str, object]] = {}
    needs_postgres = not args.dry_run and any("postgres" in t.name for t in targets)
    cluster = _postgres(Path(args.copies.split(",")[0]).resolve()) if needs_postgres else None

    def say(line: str) -> None:  # one write per line: the jobs' lines never interleave
        sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
        sys.stdout.flush()

    def work(target: Target) -> None:
        copy = copies.get()
        try:
            say(f"{target.name}: started in {copy}")
            results[target.name] = run_target(copy, target, args.out, dry_run=args.dry_run)
            r = results[target.name]
            done = f"{r['mutants']} mutants, {r['survived']} survived" if "error" not in r else str(r["error"])
            say(f"{target.name}: {done}")
        finally:
            copies.put(copy)

    threads = [Thread(target=work, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.remove()
    ordered = [results[t.name] for t in targets if t.name in results]
    report = table(ordered)
    (args.out / "summary.txt").write_text(report + "\n")
    print(report)
    return 0 if all("error" not in r and not r.get("survivors") for r in ordered) else 1


if __name__ == "__main__":
    sys.exit(main())
