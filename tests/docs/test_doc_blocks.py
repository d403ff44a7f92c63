"""Every shell and Python block of README.md and docs/*.md is run here, or is marked illustrative with a
reason, so that the docs cannot drift from the code unseen.

A fenced block is run unless the line right before its fence is ``<!-- illustrative: REASON -->``:

- ``bash`` / ``sh`` / ``shell`` blocks run with ``bash -e -o pipefail``, one block after the other in one
  throw-away folder per page (so a tour's blocks see what the blocks before them made), with this venv's
  ``ceip`` on ``PATH`` (and as ``.venv/bin/ceip``), a state folder of their own (``CEIP_HOME``), no
  machine policy, and HTTP(S) to other machines sent to a closed local port; each within
  :data:`BLOCK_TIMEOUT`;
  ``<!-- with a receiving service ... -->`` before the fence runs the block while ``ceip serve --db
  sqlite:ceip.db`` serves from that folder on a free loopback port, given to the block in place of 8080;
- ``python`` / ``py`` blocks run in this venv's Python, one process per page, each block in the namespace
  the page's blocks before it left (a traceback names the page and its line).

Every ``ceip`` command line in a shell block, run or not (and ``$ ceip`` lines of transcripts, ``ceip`` in
crontab lines), must name commands and options that exist: it is parsed by the real click group, as a run
would parse it, without running. Every fence names its language and no code block goes unfenced, so
that no command hides in an unlabelled block, and every page with ceip commands links docs/cli.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from helpers import wait_for

from ceip_core.cli import cli
from ceip_core.cli.reference import anchor, reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL = frozenset({"bash", "sh", "shell"})
PYTHON = frozenset({"python", "py"})
#: Code this harness cannot run: a block in one of these must be written as bash or python, or be marked.
UNRUN = frozenset({"console", "shell-session", "zsh", "fish", "powershell", "pycon", "ipython"})

#: Seconds one block may take. The slowest run here is a few CLI calls of a second or two each.
BLOCK_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*illustrative\b:?(?P<reason>.*?)-->\s*$")
#: Before a shell block: run it while ``ceip serve --db sqlite:ceip.db`` serves from the page's folder on a free
#: loopback port, which the block gets in place of the 8080 it shows (the README's second terminal).
_SERVICE = re.compile(r"^\s*<!--\s*with a receiving service\b.*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*(illustrative|with a receiving service)", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  #: the opening fence's line, 1-based
    end: int  #: the closing fence's line
    language: str
    text: str
    #: None when the block is to be run; else its marker's reason ("" if the marker gives none).
    reason: str | None
    #: Run while a receiving service serves (the :data:`_SERVICE` marker).
    with_service: bool = False

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        body = "\n".join(
            line[indent:] if line.startswith(" " * indent) else line.lstrip() for line in lines[i + 1 : end]
        )
        before = lines[i - 1] if i > 0 else ""
        marker = _MARKER.match(before)
        language = opening["info"].strip().split(maxsplit=1)[0].lower() if opening["info"].strip() else ""
        reason = marker["reason"].strip() if marker else None
        found.append(Block(page, i + 1, end + 1, language, body + "\n", reason, bool(_SERVICE.match(before))))
        i = end + 1
    return found


def all_blocks() -> Iterator[Block]:
    for page in PAGES:
        yield from blocks(page)


def _runs(block: Block, languages: frozenset[str]) -> bool:
    return block.language in languages and block.reason is None


# -- the rules -------------------------------------------------------------------------------------------


def test_every_fence_names_its_language() -> None:
    unnamed = [b.where for b in all_blocks() if not b.language]
    assert not unnamed, f"fenced blocks without a language (```bash, ```python, ```text, ...): {unnamed}"


def indented_code(page: Path) -> list[int]:
    """The lines where an indented (unfenced) code block starts in ``page``: four spaces after a blank line,
    outside fences and lists. Such a block has no language and no marker, so the rules could not see it."""
    inside = {n for b in blocks(page) for n in range(b.line, b.end + 1)}
    starts = []
    in_list = False
    lines = page.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if n in inside or not line.strip():
            continue
        if not line.startswith("    "):
            in_list = bool(re.match(r"^\s*([-*+]|\d+\.)\s", line)) or (in_list and line.startswith(" "))
        elif not in_list and n > 1 and not lines[n - 2].strip():
            starts.append(n)
    return starts


def test_no_code_block_goes_unfenced(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n    ceip status\n\n- item\n\n    more of the item\n\nend\n", encoding="utf-8")
    assert indented_code(page) == [3]
    unfenced = [f"{_id(page)}:{n}" for page in PAGES for n in indented_code(page)]
    assert not unfenced, f"indented code blocks (fence them and name the language): {unfenced}"


def test_every_code_block_is_run_or_marked_with_a_reason() -> None:
    problems = []
    for b in all_blocks():
        if b.reason == "":
            problems.append(f"{b.where}: an illustrative marker needs a reason: <!-- illustrative: REASON -->")
        elif b.reason is not None and b.language not in SHELL | PYTHON | UNRUN:
            problems.append(f"{b.where}: only shell and Python blocks are run, a ```{b.language} block needs no marker")
        elif b.with_service and b.language not in SHELL:
            problems.append(f"{b.where}: only a shell block can run with a receiving service")
        elif b.reason is None and b.language in UNRUN:
            problems.append(f"{b.where}: a ```{b.language} block is not run: write it as bash or python, or mark it")
    assert not problems, "\n".join(problems)


def test_every_marker_stands_right_before_a_fence() -> None:
    marked = {(b.page, b.line - 1) for b in all_blocks() if b.reason is not None or b.with_service}
    quoted = {(b.page, n) for b in all_blocks() for n in range(b.line, b.end + 1)}  # a marker shown in a block
    stray = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if _ANY_MARKER.search(line) and (page, n) not in marked | quoted
    ]
    assert not stray, f"illustrative markers that are not on the line right before a fence: {stray}"


def test_the_parser_reads_fences_markers_and_reasons(tmp_path: Path) -> None:
    """The rules above are only as good as the reading of the page: check it on a page made for it."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```bash\nceip status\n```\n\n<!-- illustrative: starts a server -->\n```python\n"
        "serve()\n```\n<!-- illustrative -->\n~~~~sh\necho ```\n~~~~\n\n"
        "- item:\n\n  ```toml\n  a = 1\n  ```\n```\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.line, b.end, b.language, b.text, b.reason) for b in found] == [
        (3, 5, "bash", "ceip status\n", None),
        (8, 10, "python", "serve()\n", "starts a server"),
        (12, 14, "sh", "echo ```\n", ""),
        (18, 20, "toml", "a = 1\n", None),
        (21, 22, "", "\n", None),
    ]


# -- running them ----------------------------------------------------------------------------------------


def _environment(folder: Path) -> dict[str, str]:
    """A throw-away world for a page's blocks: its own state folder, service data, home and allowlist, no
    machine policy, no plugin switches, no way off this machine by HTTP; this venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEIP_") and k.lower() not in _PROXIES}
    home = folder / "home"
    for sub in ("home", "state", "work", "xdg-config", "xdg-data"):
        (folder / sub).mkdir()
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(folder / "xdg-config"),
        XDG_DATA_HOME=str(folder / "xdg-data"),
        CEIP_HOME=str(folder / "state"),
        CEIP_POLICY_FILE=str(folder / "no-policy.toml"),
        CEIP_SERVICE_DATA=str(folder / "service"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONDONTWRITEBYTECODE="1",
    )
    # Loopback only: whatever a block would send elsewhere over HTTP(S) goes to a closed port instead.
    env.update(HTTPS_PROXY=_NOWHERE, HTTP_PROXY=_NOWHERE, NO_PROXY="127.0.0.1,localhost,::1")
    env.pop("DISPLAY", None)  # a block never opens a window on the tester's screen
    # `.venv/bin/ceip` as the README writes it; only ceip, so that no block can change this venv.
    (folder / "work" / ".venv" / "bin").mkdir(parents=True)
    (folder / "work" / ".venv" / "bin" / "ceip").symlink_to(Path(sys.executable).parent / "ceip")
    return env


_PROXIES = {"https_proxy", "http_proxy", "no_proxy", "all_proxy"}
_NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def _pages_with(languages: frozenset[str]) -> list[Path]:
    return [page for page in PAGES if any(_runs(b, languages) for b in blocks(page))]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", _pages_with(SHELL), ids=_id)
def test_shell_blocks_run(page: Path, tmp_path: Path) -> None:
    env = _environment(tmp_path)
    for b in blocks(page):
        if not _runs(b, SHELL):
            continue
        with _service(tmp_path / "work", env) if b.with_service else contextlib.nullcontext(8080) as port:
            script = b.text.replace("8080", str(port))
            done = _run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path / "work", env=env)
        assert done is not None, f"{b.where}: still running after {BLOCK_TIMEOUT:.0f} s:\n{script}"
        assert done.returncode == 0, (
            f"{b.where}: the block exits with {done.returncode}\n{script}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )


@contextlib.contextmanager
def _service(folder: Path, env: dict[str, str]) -> Iterator[int]:
    """``ceip serve --db sqlite:ceip.db`` in ``folder`` on a free loopback port, until the block is done."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    command = ["ceip", "serve", "--db", "sqlite:ceip.db", "--port", str(port)]
    log = folder.parent / "service.log"
    with log.open("w") as out:
        service = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz") or service.poll() is not None, timeout=30)
        assert service.poll() is None, f"ceip serve ended with {service.returncode}:\n{log.read_text()}"
        yield port
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _run(
    command: list[str], *, cwd: Path, env: dict[str, str], input: str = ""
) -> subprocess.CompletedProcess[str] | None:
    """``command`` in a session of its own, None if it outlives :data:`BLOCK_TIMEOUT`. Whatever it leaves
    running (a server, an agent started in the background) is killed with it, then or when it ends."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=cwd,
        env=env,
    )
    try:
        stdout, stderr = process.communicate(input, timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


#: Runs a page's Python blocks (given as JSON on stdin) one after the other in one namespace; each compiled
#: under the page's name with its lines where they are in the page, so a traceback points into the page.
_PYTHON_RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for page, line, text in json.load(sys.stdin):
    exec(compile("\\n" * line + text, page, "exec"), namespace)
"""


@pytest.mark.parametrize("page", _pages_with(PYTHON), ids=_id)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    env = _environment(tmp_path)
    code = [(str(page.relative_to(ROOT)), b.line, b.text) for b in blocks(page) if _runs(b, PYTHON)]
    done = _run([sys.executable, "-c", _PYTHON_RUNNER], input=json.dumps(code), cwd=tmp_path / "work", env=env)
    assert done is not None, f"the Python blocks of {_id(page)} still run after {BLOCK_TIMEOUT:.0f} s"
    assert done.returncode == 0, f"a Python block of {_id(page)} fails:\n{done.stderr[-4000:]}"


# -- every ceip command line names what exists -----------------------------------------------------------


def command_lines(block: Block) -> Iterator[list[str]]:
    """The arguments of each ``ceip`` invocation in ``block`` (``ceip`` or a path ending in ``/ceip``)."""
    if block.language in SHELL:
        scripts = [block.text.replace("\\\n", " ")]
    elif block.language == "cron":
        scripts = [" ".join(line.split()[5:]) for line in block.text.splitlines() if not line.startswith("#")]
    else:  # a transcript: the lines typed at a prompt
        scripts = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    for script in scripts:
        for line in script.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
            command: list[str] = []
            for word in [*words, ";"]:
                if word in {";", "&&", "||", "|", "&"}:
                    yield from _ceip_arguments(command)
                    command = []
                else:
                    command.append(word)


def _ceip_arguments(command: list[str]) -> Iterator[list[str]]:
    while command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0]):  # VAR=value before the command
        command = command[1:]
    if not command or command[0].rsplit("/", 1)[-1] != "ceip":
        return
    arguments = []
    words = iter(command[1:])
    for word in words:
        if re.fullmatch(r"\d?[<>]+&?", word):  # a redirection: skip it and its target
            next(words, None)
        else:
            arguments.append(word)
    yield arguments


def _invocations() -> list[tuple[str, list[str]]]:
    return [
        (b.where, arguments)
        for b in all_blocks()
        if b.language in SHELL | UNRUN | {"cron", "text"}
        for arguments in command_lines(b)
    ]


def test_command_lines_are_found() -> None:
    """The checks below see every ceip line: a block with a pipe, a redirection, a comment and a prompt."""
    script = "export X=1 && ceip describe --json > a.json  # ceip nothing\nfoo | .venv/bin/ceip \\\n  review\n"
    sh = Block(ROOT, 1, 4, "bash", script, None)
    text = Block(ROOT, 1, 4, "text", "$ ceip allowlist check\nanalyst  active: ceip consent in analyst\n", None)
    cron = Block(ROOT, 1, 3, "cron", "*/5 * * * * ceip agent --once\n", None)
    assert [list(command_lines(b)) for b in (sh, text, cron)] == [
        [["describe", "--json"], ["review"]],
        [["allowlist", "check"]],
        [["agent", "--once"]],
    ]


def parse(arguments: list[str]) -> str:
    """The path of the command ``ceip ARGUMENTS`` runs (``ceip consent in``), parsed by the real click group
    as a run would parse it, without running anything; a click error for a command line ceip refuses."""
    ctx = cli.make_context("ceip", list(arguments))
    while isinstance(ctx.command, click.Group):
        with warnings.catch_warnings():  # click < 9 keeps the subcommand's name apart from the other args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*getattr(ctx, "protected_args", ()), *ctx.args]
        if not rest:
            break
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        assert name is not None and command is not None
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx.command_path


def test_parse_refuses_what_ceip_refuses() -> None:
    assert parse(["--home", "./x", "consent", "in", "analyst"]) == "ceip consent in"
    assert parse(["agent", "install", "--print"]) == "ceip agent install"
    for wrong in (["consent", "join"], ["status", "--quiet"], ["serve", "--port", "x"], ["allowlist", "add"]):
        with pytest.raises(click.UsageError):
            parse(wrong)


def test_every_ceip_command_line_names_commands_and_options_that_exist() -> None:
    """Each ``ceip ...`` of the docs, run or not, parses: its commands exist, its options exist and take the
    values given, its arguments are all there. A file the reader is to have (``--specs FILE``) need not."""
    wrong = []
    invocations = _invocations()
    assert len(invocations) > 50  # the docs show many; finding none would mean the search is broken
    for where, arguments in invocations:
        try:
            parse(arguments)
        except click.BadParameter as exc:
            readers_file = exc.param is not None and isinstance(exc.param.type, click.Path) and exc.param.type.exists
            if not readers_file:
                wrong.append(f"{where}: ceip {shlex.join(arguments)}\n    {exc.format_message()}")
        except click.ClickException as exc:
            wrong.append(f"{where}: ceip {shlex.join(arguments)}\n    {exc.format_message()}")
    assert not wrong, "command lines in the docs that the CLI does not take:\n" + "\n".join(wrong)


def unknown_names(arguments: list[str]) -> list[str]:
    """The words of ``ceip ARGUMENTS`` that name no command or option of ceip: the check for commands named
    in the prose, which leaves out values and arguments (``ceip report``, ``ceip serve --specs FILE``).
    A word in capitals stands for any command (``ceip COMMAND --help``); ``show|set`` names each."""
    ctx = click.Context(cli, info_name="ceip")
    unknown = []
    words = iter(arguments)
    for word in words:
        if word.startswith("-"):
            name = word.partition("=")[0]
            option = next((p for p in ctx.command.get_params(ctx) if name in (*p.opts, *p.secondary_opts)), None)
            if option is None:
                unknown.append(word)
            elif isinstance(option, click.Option) and not option.is_flag and not option.count and "=" not in word:
                next(words, None)  # its value
        elif isinstance(ctx.command, click.Group):
            if word.isupper():
                break
            found = [ctx.command.get_command(ctx, alternative) for alternative in word.split("|")]
            if None in found or not found[0]:
                unknown.append(word)
                break
            ctx = click.Context(found[0], info_name=word.split("|")[0], parent=ctx)
    return unknown


def test_unknown_names_finds_what_ceip_does_not_have() -> None:
    assert unknown_names(["config", "show|set|unset", "upload-url"]) == []
    assert unknown_names(["serve", "--specs", "FILE", "--k", "5", "--access-log"]) == []
    assert unknown_names(["COMMAND", "--help"]) == []
    assert unknown_names(["consent", "join", "analyst"]) == ["join"]
    assert unknown_names(["review", "--sent", "--jsn"]) == ["--jsn"]
    assert unknown_names(["config", "show|sett"]) == ["show|sett"]


_SPAN = re.compile(r"(?<!`)`(?:[\w./-]*/)?ceip ([^`]+)`(?!`)")


def test_every_command_named_in_the_prose_exists() -> None:
    """``ceip ...`` in the text between the blocks names commands and options that exist."""
    spans = [
        (f"{_id(page)}:{text.count(chr(10), 0, m.start()) + 1}", m[1])
        for page in PAGES
        for text in [page.read_text(encoding="utf-8")]
        for m in _SPAN.finditer(text)
    ]
    assert len(spans) > 100  # the docs name many; finding none would mean the search is broken
    wrong = [
        f"{where}: `ceip {span}`: {', '.join(bad)}"
        for where, span in spans
        if (bad := unknown_names(shlex.split(span)))
    ]
    assert not wrong, "commands or options in the prose that ceip does not have:\n" + "\n".join(wrong)


def test_pages_that_show_commands_link_the_cli_reference() -> None:
    sections = {"", *(anchor(h) for h in re.findall(r"^#+ (.*)$", reference(), flags=re.MULTILINE))}
    links = [
        (_id(page), anchor)
        for page in PAGES
        for anchor in re.findall(r"\]\((?:docs/)?cli\.md#?([^)]*)\)", page.read_text(encoding="utf-8"))
    ]
    assert [link for link in links if link[1] not in sections] == [], "links to sections cli.md does not have"
    unlinked = [
        _id(page)
        for page in PAGES
        if page.name != "cli.md"
        and any(next(command_lines(b), None) is not None for b in blocks(page) if b.language in SHELL)
        and not re.search(r"\]\((docs/)?cli\.md(#[^)]*)?\)", page.read_text(encoding="utf-8"))
    ]
    assert not unlinked, f"pages with ceip commands that do not link the CLI reference (cli.md): {unlinked}"
