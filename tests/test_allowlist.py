"""The allowlist: the file, the `ceip allowlist` commands, and that a product not on it is inert."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import ceip_core
from ceip_core import wire
from ceip_core.allowlist import Allowlist, AllowlistError, Entry, default_path, make_entry
from ceip_core.cli import cli
from ceip_core.consent import Consent
from ceip_core.plugins import Plugins
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.testing import TEST_EXECUTABLE

HASH = "ab" * 32


def ceip(*args: str, code: int = 0, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == code, result.output
    return result.output


def test_a_missing_file_allowlists_nothing(tmp_path: Path, sample: Plugins) -> None:
    allowlist = Allowlist.read(tmp_path / "nope.toml")
    assert allowlist.entries == ()
    assert not allowlist.allows(sample.product("sample"))


def test_the_file_round_trips_and_narrowing_an_executable_replaces_it(tmp_path: Path, sample: Plugins) -> None:
    path = tmp_path / "allow.toml"
    Allowlist().add([make_entry("sample", "sample-app"), make_entry("other", "other-app")]).write(path)
    narrowed = Allowlist.read(path).add([make_entry("sample", "sample-app", "/opt/sample/*", HASH.upper())])
    narrowed.write(path)
    assert Allowlist.read(path).entries == (
        Entry("other", "other-app"),
        Entry("sample", "sample-app", "/opt/sample/*", HASH),
    )
    assert 'executables = [\n    { name = "sample-app", path = "/opt/sample/*", sha256 = "' in path.read_text()
    assert Allowlist.read(path).remove("sample").entries == (Entry("other", "other-app"),)


def test_only_executables_the_product_declares_count(sample: Plugins) -> None:
    spec = sample.product("sample")
    wrong = Allowlist((make_entry("sample", "sample.exe"),))
    assert not wrong.allows(spec)
    assert wrong.why_inert(spec) == (
        "not allowlisted: the allowlist names sample.exe, which the product does not declare "
        f"(declared: sample-app, {TEST_EXECUTABLE})"
    )
    assert Allowlist().why_inert(spec) == "not allowlisted"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[products.sample]\nexecutables = ["sample-app"\n', ":2: Unclosed array, at the end of the file"),
        ('[products.sample]\nexecutables = ["a"]\n[other]\nx = 1\n', ": unknown key 'other'"),
        ("products = 3\n", ": 'products' must hold a table per product"),
        ('\n[products.sample]\nexecutable = ["sample-app"]\n', ":2: a product takes executables"),
        ('[products.sample]\nexecutables = "sample-app"\n', ":1: executables must be a list"),
        ('[products.a]\nexecutables = ["a"]\n\n[products.b]\nexecutables = [3]\n', ":4: 'name' must be a non-empty"),
        ('[products.b]\nexecutables = [{ name = "b", sha = "x" }]\n', ":1: unknown key 'sha' in an executable"),
        ('[products.b]\nexecutables = [{ path = "/x" }]\n', ":1: an executable given as a table needs a name"),
        ('[products.b]\nexecutables = [{ name = "b", sha256 = "x" }]\n', ":1: 'sha256' must be 64 hexadecimal digits"),
        ('[products.b]\nexecutables = ["/usr/bin/b"]\n', ":1: 'name' is a file name, not a path"),
        ('[products."hub-server"]\nexecutables = [""]\n', ":1: 'name' must be a non-empty string"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_line_and_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "allow.toml"
    path.write_text(text)
    with pytest.raises(AllowlistError) as caught:
        Allowlist.read(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_outside_the_cli_a_malformed_file_allowlists_nothing_and_says_why(
    sample: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    path = default_path()
    assert Allowlist.current().allows(sample.product("sample"))
    path.write_text('[products.sample]\nexecutables = ["sample-app"\n')
    with caplog.at_level(logging.ERROR, logger="ceip_core.allowlist"):
        assert Allowlist.current().entries == ()
    assert f"{path}:2:" in caplog.text and "nothing is allowlisted until it is fixed" in caplog.text
    path.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    assert Allowlist.current().allows(sample.product("sample"))  # a fixed file is read again


def test_a_product_that_is_not_allowlisted_is_inert(sample: Plugins, ceip_home: Path) -> None:
    ceip("consent", "in", "sample", "other")
    ceip("allowlist", "remove", "sample")
    with ceip_core.recorder("sample", "1.0") as rec:
        rec.feature("open_file")
    with ceip_core.recorder("other", "1.0") as rec:
        rec.feature("used")
    spool = Spool(StateDB(ceip_home))
    assert [i.product for i in spool.items()] == ["other"]
    assert spool.stats().drops["not-allowlisted:sample"] == 1
    lines = {line.split()[0]: line for line in ceip("consent", "status").splitlines()}
    # Opted in but inert is not "participating" (issue 17): one predicate, ceip_core.participation, decides.
    assert lines["sample"].endswith("Sample                   opted in, not participating  (inert: not allowlisted)")
    assert lines["other"].endswith(" participating") and "inert" not in lines["other"]
    rows = {r["product"]: r for r in json.loads(ceip("consent", "status", "--json"))}
    assert rows["sample"]["allowlisted"] is False and rows["other"]["allowlisted"] is True
    assert rows["sample"]["participating"] is False and rows["other"]["participating"] is True
    assert rows["sample"]["why_not"] == ["inert: not allowlisted (ceip allowlist add sample)"]
    check = {r["product"]: r for r in json.loads(ceip("allowlist", "check", "--json"))["products"]}
    assert {p: (check[p]["active"], check[p]["why_not"]) for p in check} == {
        p: (rows[p]["participating"], rows[p]["why_not"]) for p in check
    }


def test_the_allowlist_commands(sample: Plugins) -> None:
    ceip("allowlist", "remove", "sample")
    ceip("allowlist", "remove", "other")
    assert "Nothing is allowlisted" in ceip("allowlist", "list")
    shown = ceip("allowlist", "add", "sample", input="y\n")
    # The maintainer saw what the product may collect before saying yes.
    assert "sample may collect" in shown and "| `open_file` | counter | uses | Files opened. |" in shown
    assert f"sample: allowlisted sample-app, {TEST_EXECUTABLE} in" in shown
    args = ("--executable", "other-app", "--path", "/opt/other/*", "--sha256", HASH)
    out = ceip("allowlist", "add", "other", *args, "--yes")
    assert "may collect" not in out
    assert "other: allowlisted other-app (path /opt/other/*, sha256 abababababab…)" in out
    listed = json.loads(ceip("allowlist", "list", "--json"))
    assert listed["executables"] == [
        {"product": "sample", "name": "sample-app", "path": None, "sha256": None},
        {"product": "sample", "name": TEST_EXECUTABLE, "path": None, "sha256": None},
        {"product": "other", "name": "other-app", "path": "/opt/other/*", "sha256": HASH},
    ]
    ceip("consent", "in", "sample")
    check = ceip("allowlist", "check")
    assert f"sample           active: observing sample-app, {TEST_EXECUTABLE}" in check
    assert "other            not active: not opted in (ceip consent in other)" in check
    assert "removed 1 executable(s)" in ceip("allowlist", "remove", "other", "--executable", "other-app")
    check = json.loads(ceip("allowlist", "check", "--json"))
    assert {r["product"]: r["why_not"] for r in check["products"]} == {
        "other": ["inert: not allowlisted (ceip allowlist add other)", "not opted in (ceip consent in other)"],
        "sample": [],
    }
    assert not any(r["declaration_changed"] for r in check["products"])


@pytest.mark.parametrize(("answer", "message"), [("n\n", "sample: not allowlisted"), ("", "sample: no answer")])
def test_allowlist_add_allows_nothing_unless_the_maintainer_says_yes(
    sample: Plugins, answer: str, message: str
) -> None:
    ceip("allowlist", "remove", "sample")
    assert message in ceip("allowlist", "add", "sample", input=answer, code=1)
    assert not Allowlist.read(default_path()).allows(sample.product("sample"))


def test_check_flags_a_product_whose_declaration_changed_since_it_was_reviewed(sample: Plugins) -> None:
    ceip("allowlist", "add", "sample", "--yes")
    recorded = Allowlist.read(default_path())
    assert recorded.reviewed == {"sample": wire.spec_digest(sample.product("sample"))}
    assert 'reviewed = "' in default_path().read_text()
    # A new version of the plugin declares another metric: its digest is no longer the one reviewed.
    Allowlist(recorded.entries, {"sample": "0" * 32}).write(default_path())
    rows = {r["product"]: r for r in json.loads(ceip("allowlist", "check", "--json"))["products"]}
    assert rows["sample"]["declaration_changed"] and not rows["other"]["declaration_changed"]
    assert "review it with ceip allowlist add sample" in ceip("allowlist", "check")
    ceip("allowlist", "add", "sample", "--yes")  # reviewed again
    assert "review it" not in ceip("allowlist", "check")
    # Removing the product forgets what was reviewed.
    ceip("allowlist", "remove", "sample")
    assert "sample" not in Allowlist.read(default_path()).reviewed


def test_a_reviewed_digest_must_be_one(sample: Plugins) -> None:
    default_path().write_text('[products.sample]\nexecutables = ["sample-app"]\nreviewed = "abc\\n"\n')
    with pytest.raises(AllowlistError, match=":1: reviewed must be a spec digest"):
        Allowlist.read(default_path())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["allowlist", "add", "nope"], "unknown product 'nope' (known: other, sample)"),
        (["allowlist", "add", "sample", "--executable", "sample.exe"], "sample declares no executable 'sample.exe'"),
        (["allowlist", "add", "sample", "--path", "/opt/*"], "--path and --sha256 apply to one executable"),
        (["allowlist", "add", "sample", "--executable", "sample-app", "--sha256", "abc"], "64 hexadecimal digits"),
        (["allowlist", "remove", "nope"], "'nope' is not in the allowlist (allowlisted: other, sample)"),
    ],
)
def test_bad_input_gets_a_clear_message(sample: Plugins, args: list[str], message: str) -> None:
    assert message in ceip(*args, code=2)


def test_a_malformed_file_is_a_clear_error_without_a_traceback(sample: Plugins) -> None:
    default_path().write_text('[products.sample]\nexecutables = ["sample-app"\n')
    exe = shutil.which("ceip", path=str(Path(sys.executable).parent))
    assert exe, "the ceip console script is not installed beside this interpreter"
    for command in (["allowlist", "check"], ["allowlist", "add", "other"]):
        proc = subprocess.run([exe, *command], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert f"Error: {default_path()}:2: Unclosed array, at the end of the file" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert Consent(StateDB()).state("sample").value == "unset"
