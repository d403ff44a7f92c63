"""The identifiers scrubber: what each detector replaces, what it must leave alone, and (property-based)
that no planted identifier survives the whole pipeline."""

from __future__ import annotations

import ipaddress
import string
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from corpus import privacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceip_core.default_plugins.identifiers import VERSION, IdentifiersScrubber, TextScrubber, scrub_text
from ceip_core.records import CounterValue, Histogram, Problem, ProcessSession, ProductSpec, Report, SystemInfo
from ceip_core.scrubbing import MachineIdentifiers, ScrubContext, ScrubLimits, ScrubOutcome

MACHINE = MachineIdentifiers(
    host_names=("ws-4711", "ws-4711.corp.example.com"),
    user_names=("alice", "user"),
    home_dirs=("/srv/people/alice", "D:\\Profiles\\bob"),
)


def scrub(text: str, machine: MachineIdentifiers = MACHINE) -> tuple[str, dict[str, int]]:
    counts: Counter[str] = Counter()
    return scrub_text(text, machine, counts), dict(counts)


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("mail bob@example.com now", "mail <email> now", "email"),
        ("Bob.Smith+tag@mail.example.co.uk", "<email>", "email"),
        ("x@[10.1.2.3] and y@[IPv6:fe80::1]", "<email> and <email>", "email"),
        ("KeyError@utils.py", "<email>", "email"),
        ("bob@ws-4711.corp.example.com", "<email>", "email"),
        ("at 10.0.0.1:80", "at <ip>:80", "ip"),
        ("255.255.255.255 1.0.0.1", "<ip> <ip>", "ip"),
        ("net 192.168.001.010/24", "net <ip>/24", "ip"),
        ("fe80::1%eth0 down", "<ip> down", "ip"),
        ("link fe80::1%eth0.", "link <ip>.", "ip"),
        ("fe80::1.%eth0 down", "<ip>. down", "ip"),
        ("fe80::1:%eth0", "<ip>:", "ip"),
        ("2001:db8:85a3:0:0:8a2e:370:7334", "<ip>", "ip"),
        ("::ffff:192.168.1.1", "<ip>", "ip"),
        ("[2001:db8::1]:443", "[<ip>]:443", "ip"),
        ("connect to fe80::1: refused", "connect to <ip>: refused", "ip"),
        ("addr:2001:db8::1.", "addr:<ip>.", "ip"),
        ("dead:beef::cafe", "<ip>", "ip"),
        ("aa:bb:cc:dd:ee:ff", "<mac>", "mac"),
        ("MAC 00-1A-2B-3C-4D-5E.", "MAC <mac>.", "mac"),
        ("aabb.ccdd.eeff", "<mac>", "mac"),
        ("4111 1111 1111 1111", "<card>", "card"),
        ("card=4111-1111-1111-1111;", "card=<card>;", "card"),
        ("5500000000000004", "<card>", "card"),
        ("378282246310005 (amex)", "<card> (amex)", "card"),
        ("two: 4111111111111111 5500 0000 0000 0004", "two: <card> <card>", "card"),
        ("call +1 (555) 123-4567", "call <phone>", "phone"),
        ("+44 20 7946 0958", "<phone>", "phone"),
        ("+4915112345678", "<phone>", "phone"),
        ("555-123-4567", "<phone>", "phone"),
        ("555.123.4567", "<phone>", "phone"),
        ("(555) 123-4567", "<phone>", "phone"),
        ("020 7946 0958", "<phone>", "phone"),
        ("id 123e4567-e89b-12d3-a456-426614174000", "id <uuid>", "uuid"),
        ("{6F9619FF-8B86-D011-B42D-00C04FC964FF}", "{<uuid>}", "uuid"),
        ("serial C02XK1ZZJG5H", "serial <serial>", "serial"),
        ("SN4A7B9C2D11", "<serial>", "serial"),
        ("SN12345678", "<serial>", "serial"),
        ("dev_DESKTOP-4F7K2LM", "dev_<serial>", "serial"),
        ("ptr 0x7ffd5e8a1b20", "ptr <serial>", "serial"),
        ("device d41d8cd98f00b204e9800998ecf8427e", "device <serial>", "serial"),
        ("/home/carol/data/q3.csv", "~/data/q3.csv", "home_dir"),
        ("/Users/dave/Library", "~/Library", "home_dir"),
        ("C:\\Users\\John Smith\\Documents", "~\\Documents", "home_dir"),
        ("c:/users/eve", "~", "home_dir"),
        ("C:\\Documents and Settings\\frank\\x", "~\\x", "home_dir"),
        ("/root/.ssh", "~/.ssh", "home_dir"),
        ("open /srv/people/alice/notes", "open ~/notes", "home_dir"),
        ("d:/profiles/BOB/q", "~/q", "home_dir"),
        ("on ws-4711 now", "on <host> now", "host"),
        ("WS-4711.corp.example.com", "<host>", "host"),
        ("Alice's file", "<user>'s file", "user"),
        ("ws-47110 and ALICE2", "<host> and <user>", "host"),
        ("alice_smith", "<user>_smith", "user"),
    ],
)
def test_replaces_identifiers(text: str, expected: str, kind: str) -> None:
    result, counts = scrub(text)
    assert result == expected
    assert counts.get(kind, 0) >= 1


@pytest.mark.parametrize(
    "text",
    [
        "render.py",
        "ValueError",
        "export_pdf",
        "open_file2",
        "ValueError@render.py:88",
        "KeyError@io/csv_reader.py:120",
        "main thread blocked in sqlite3_step",
        "at 12:30:45 on 2026-11-22",
        "2026-11-22T12:30:45.123+00:00",
        "std::vector<int>::push_back",
        "add::dec",
        "version 10.0.19045",
        "1.2.3.4.5",
        "1.2.3.256",
        "pi 3.14159265358979323846",
        "order 123456 of 1000000",
        "4111111111111112",
        "+12",
        "UTF-16LE",
        "ISO-8859-1",
        "AES256GCM",
        "HRESULT 0x80070005",
        "x86_64",
        "utf8mb4",
        "sizes 1024 2048 4096",
        "8-16 GiB",
        "malice",
        "/rootfs/etc",
        "/home",
        "v1.2.3.4",
        "Version=4.0.0.0",
        "net 10.0.0.0/8",
        "3.2.1.0",
        "mysql 8.0.35-0ubuntu0.22.04.1",
        "main.8f3e2b1a9c7d.js",
        "ubuntu-22.04.3-desktop-amd64.iso",
        "sha d41d8cd98f00b204e9800998ecf8427e",
        "KB5034441",
        "CVE-2024-3094",
        "<user> and <host> and <email>",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert scrub(text) == (text, {})


def test_placeholders_are_not_matched_by_machine_names() -> None:
    # A user called "user" or a host called "ip" must not turn "<user>" into "<<user>>".
    machine = MachineIdentifiers(host_names=("ip", "host"), user_names=("user", "email"))
    assert scrub("user on host sent <user> <ip> <email> <host>", machine)[0] == (
        "<user> on <host> sent <user> <ip> <email> <host>"
    )


def test_machine_names_match_in_any_case_even_with_unusual_letters() -> None:
    # The quick ASCII pre-test must never skip a name the case-insensitive pattern would find.
    machine = MachineIdentifiers(user_names=("\u017fam", "\u0130smail", "j\u00fcrgen"), host_names=("WS-4711",))
    text = "SAM sam ismail ISMAIL J\u00dcRGEN ws-4711 Ws-4711 jurgen"
    assert scrub(text, machine) == ("<user> <user> <user> <user> <user> <host> <host> jurgen", {"user": 5, "host": 2})


def test_the_longest_machine_name_wins() -> None:
    assert scrub("ws-4711.corp.example.com")[1] == {"host": 1}


def test_control_characters_are_removed_and_text_normalised() -> None:
    text, counts = scrub("a\x00b\nc\u200bd \uff21\uff22\uff23\uff11\uff12\uff13")
    assert text == "ab cd ABC123"
    assert counts == {"normalised": 1}


def test_lone_surrogates_are_removed() -> None:
    assert scrub("a\ud800b") == ("ab", {"normalised": 1})


def test_invisible_characters_cannot_hide_an_identifier() -> None:
    assert scrub("bob\u200b@exa\u00admple.com")[0] == "<email>"
    assert scrub("１９２.１６８.１.１")[0] == "<ip>"


def test_counts_every_replacement() -> None:
    assert scrub("a@b.co c@d.co 10.0.0.1 alice")[1] == {"email": 2, "ip": 1, "user": 1}


def test_scrubbing_is_idempotent_on_examples() -> None:
    text = "alice@x.org on ws-4711 at 10.0.0.1 from /home/bob/x with 4111 1111 1111 1111, C02XK1ZZJG5H"
    once = scrub(text)[0]
    assert scrub(once) == (once, {})


# --------------------------------------------------------------------------------------------------
# The scrubber on whole reports
# --------------------------------------------------------------------------------------------------


def run(report: Report, ctx: ScrubContext) -> Report:
    result = IdentifiersScrubber().scrub(report, ctx)
    assert result is not None
    return result


def test_scrubs_every_free_text_field(make_report: Callable[..., Report], ctx: ScrubContext) -> None:
    report = make_report(
        counters=[CounterValue("feature", 1, "sent to bob@example.com")],
        histograms=[Histogram("open_session", 1, 5.0, 5.0, 5.0, {9: 1}, "from 10.1.2.3")],
        problems=[Problem("crash", "OSError: /home/alice/q3.csv", 1)],
        config={"theme": "alice-dark", "threads": 8},
        system=SystemInfo(os="Linux ws-4711", memory_bucket="8-16 GiB", features={"bluetooth": "ws-4711"}),
    )
    out = run(report, ctx)
    assert out.counters[0].label == "sent to <email>"
    assert out.histograms[0].label == "from <ip>"
    assert out.problems[0].signature == "OSError: ~/q3.csv"
    assert out.config == {"theme": "<user>-dark", "threads": 8}
    assert out.system == SystemInfo(os="Linux <host>", memory_bucket="8-16 GiB", features={"bluetooth": "<host>"})
    assert out.diagnostics == {
        "scrub.identifiers.email": 1,
        "scrub.identifiers.home_dir": 1,
        "scrub.identifiers.host": 2,
        "scrub.identifiers.ip": 1,
        "scrub.identifiers.user": 1,
    }


def test_leaves_declared_names_and_ids_alone(make_report: Callable[..., Report], spec: ProductSpec) -> None:
    # Names that are declared, and ids that are UUIDs by design, are not free text.
    machine = MachineIdentifiers(host_names=("analyst",), user_names=("theme", "crash", "feature"))
    ctx = ScrubContext(spec=spec, machine=machine)
    report = make_report(
        counters=[CounterValue("feature", 1)],
        problems=[Problem("crash", "boom", 1)],
        config={"theme": "dark"},
        sessions=[ProcessSession("analyst.exe", make_report().period.start, 1.0)],
    )
    out = run(report, ctx)
    assert (out.report_id, out.guid, out.product) == (report.report_id, report.guid, report.product)
    assert out.counters == report.counters
    assert out.problems == report.problems
    assert out.config == report.config
    assert out.sessions == report.sessions


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("5.2.1", "5.2.1"),
        ("10.0.19045.1", "10.0.19045.1"),
        ("6.8.0-45-generic", "6.8.0-45-generic"),
        ("1.0+build_7", "1.0+build_7"),
        ("5.2 (alice's build)", "<invalid>"),
        ("", "<invalid>"),
        ("-5", "<invalid>"),
        ("1" * 65, "<invalid>"),
        ("bob@example.com", "<invalid>"),
    ],
)
def test_version_fields_must_look_like_versions(
    version: str, expected: str, make_report: Callable[..., Report], ctx: ScrubContext
) -> None:
    report = make_report(product_version=version, system=SystemInfo(os_version=version))
    out = run(report, ctx)
    assert out.product_version == expected
    assert out.system is not None and out.system.os_version == expected
    assert out.diagnostics.get("scrub.identifiers.bad_version", 0) == (0 if expected == version else 2)


def test_labels_that_collide_after_scrubbing_are_merged(
    make_report: Callable[..., Report], make_histogram: Callable[..., Histogram], ctx: ScrubContext
) -> None:
    report = make_report(
        counters=[CounterValue("feature", 2, "a@x.org"), CounterValue("feature", 3, "b@y.org")],
        histograms=[
            make_histogram("open_session", [1.0, 2.0], "10.0.0.1"),
            make_histogram("open_session", [8.0], "::1"),
        ],
        problems=[Problem("crash", "at 10.0.0.1", 1), Problem("crash", "at 10.0.0.2", 4)],
    )
    out = run(report, ctx)
    assert out.counters == (CounterValue("feature", 5, "<email>"),)
    assert [(h.label, h.count, h.sum, h.min, h.max) for h in out.histograms] == [("<ip>", 3, 11.0, 1.0, 8.0)]
    assert out.problems == (Problem("crash", "at <ip>", 5),)


def test_an_unchanged_report_keeps_its_records(typical_report: Report, spec: ProductSpec) -> None:
    ctx = ScrubContext(spec=spec)
    clean = attrs.evolve(typical_report, problems=typical_report.problems[:2])
    out = run(clean, ctx)
    assert out.counters is clean.counters
    assert out.problems is clean.problems
    assert out.diagnostics == {}


# --------------------------------------------------------------------------------------------------
# Property: no planted identifier survives the whole pipeline, and the result is deterministic
# --------------------------------------------------------------------------------------------------

NAME = st.text(string.ascii_lowercase + string.digits, min_size=3, max_size=8)
# Filler cannot form an identifier or a machine name on its own: no digits, "@", ":", ".", "-" or "/".
FILLER = st.text(string.ascii_letters + " _,;()'", max_size=12)


def luhn_complete(digits: list[int]) -> str:
    """``digits`` plus the check digit that makes them pass the Luhn check."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 == 0 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn) -> str:
    number = luhn_complete(draw(st.lists(st.integers(0, 9), min_size=12, max_size=18)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4)) if sep else number


@st.composite
def macs(draw: st.DrawFn) -> str:
    octets = [f"{b:02x}" for b in draw(st.binary(min_size=6, max_size=6))]
    style = draw(st.sampled_from([":", "-", "."]))
    mac = ".".join("".join(octets[i : i + 2]) for i in (0, 2, 4)) if style == "." else style.join(octets)
    return mac.upper() if draw(st.booleans()) else mac


def plausible_ipv6(address: ipaddress.IPv6Address) -> bool:
    """The documented limit: an address with no digit and fewer than three groups (``::``, ``a::b``)
    reads like a word with colons and is left alone."""
    text = str(address)
    return any(c.isdigit() for c in text) or len([g for g in text.split(":") if g]) >= 3


@st.composite
def phones(draw: st.DrawFn) -> str:
    d = lambda n: "".join(str(draw(st.integers(0, 9))) for _ in range(n))  # noqa: E731
    return draw(
        st.sampled_from(
            [f"+44 20 {d(4)} {d(4)}", f"+1 ({d(3)}) {d(3)}-{d(4)}", f"{d(3)}-{d(3)}-{d(4)}", f"0{d(2)} {d(4)} {d(4)}"]
        )
    )


#: What the property tests plant (UUIDs and phone numbers too, less often).
PLANTED_KINDS = ("email", "ipv4", "ipv6", "ipv4in6", "mac", "card", "home", "host", "user")
#: The kinds of issue 10, planted as often as the rest together.
NEW_KINDS = ("ssn", "access_key", "jwt", "query", "unc", "domain_user", "numbered", "fqdn")
ALNUM = string.ascii_letters + string.digits


@st.composite
def plants(draw: st.DrawFn, machine: MachineIdentifiers) -> tuple[str, list[str]]:
    """One identifier as it appears in text, and the strings that must not appear afterwards."""
    host, user = machine.host_names[0], machine.user_names[0]
    kind = draw(st.sampled_from([*PLANTED_KINDS, *PLANTED_KINDS, "uuid", "phone", *NEW_KINDS, *NEW_KINDS]))
    if kind in NEW_KINDS:
        return draw(new_plants(kind, machine))
    if kind == "email":
        value = draw(st.emails())
    elif kind == "ipv4":
        # The documented limit: 0.b.c.d and a.b.c.0 are networks or versions (4.0.0.0), not one machine.
        value = str(draw(st.ip_addresses(v=4).filter(lambda a: a.packed[0] and a.packed[3])))
    elif kind == "ipv6":
        value = str(draw(st.ip_addresses(v=6).filter(plausible_ipv6)))
    elif kind == "ipv4in6":
        value = f"::ffff:{draw(st.ip_addresses(v=4))}"
    elif kind == "mac":
        value = draw(macs())
    elif kind == "card":
        value = draw(cards())
    elif kind == "uuid":
        value = str(draw(st.uuids()))
    elif kind == "phone":
        value = draw(phones())
    elif kind == "home":
        name = draw(NAME)
        path, sep = draw(
            st.sampled_from([(f"/home/{name}", "/"), (f"/Users/{name}", "/"), (f"C:\\Users\\{name}", "\\")])
        )
        return f"{path}{sep}x", [path]
    else:
        name = host if kind == "host" else user
        value = name.upper() if draw(st.booleans()) else name
    return value, [value]


@st.composite
def new_plants(draw: st.DrawFn, kind: str, machine: MachineIdentifiers) -> tuple[str, list[str]]:
    """The kinds the scrubbers learnt for issue 10, with what must not survive."""
    word = draw(st.text(string.ascii_lowercase, min_size=3, max_size=8))
    token = draw(st.text(ALNUM, min_size=24, max_size=32))
    if kind == "ssn":
        area = draw(st.integers(1, 665))
        value = f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"
        return value, [value]
    if kind == "access_key":
        value = "AKIA" + draw(st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16))
        return value, [value]
    if kind == "jwt":
        value = f"eyJ{token}.eyJ{token[::-1]}.{token}"
        return value, [token]
    if kind == "query":
        return f"https://{word}.example.com/p?{word}={token}#{token[::-1]}", [token, token[::-1], f"{word}.example"]
    if kind == "unc":
        return f"\\\\{word}01\\share\\{word}x\\a.txt", [f"{word}01", f"{word}x"]
    if kind == "domain_user":
        return f"CORP\\{word}", [f"\\{word}"]
    if kind == "numbered":
        name = draw(st.sampled_from([machine.host_names[0], machine.user_names[0]]))
        value = f"{name.upper() if draw(st.booleans()) else name}{draw(st.integers(0, 999))}"
        return value, [value]
    value = f"{word}-{draw(st.integers(1, 99))}.{draw(st.sampled_from(['corp', 'internal', 'example.com']))}"
    return value, [value]


@st.composite
def texts(draw: st.DrawFn, machine: MachineIdentifiers) -> tuple[str, list[str]]:
    """Filler text with one to three identifiers planted at random places."""
    parts, forbidden = [draw(FILLER)], []
    for _ in range(draw(st.integers(1, 3))):
        value, bad = draw(plants(machine))
        parts += [value, draw(FILLER)]
        forbidden += bad
    return " ".join(parts), forbidden


@st.composite
def machines(draw: st.DrawFn) -> MachineIdentifiers:
    host, user = f"host-{draw(NAME)}", f"user-{draw(NAME)}"
    return MachineIdentifiers(host_names=(host,), user_names=(user,), home_dirs=(f"/home/{user}",))


@st.composite
def planted_reports(
    draw: st.DrawFn, make_report: Callable[..., Report]
) -> tuple[Report, MachineIdentifiers, list[str]]:
    """A report with identifiers planted in every free-text field, its machine, and what must not survive."""
    machine = draw(machines())
    forbidden: list[str] = []
    few = st.integers(0, 3)

    def text() -> str:
        value, bad = draw(texts(machine))
        forbidden.extend(bad)
        return value

    report = make_report(
        counters=[CounterValue("feature", draw(st.integers(0, 50)), text()) for _ in range(draw(few))],
        histograms=[Histogram("open_session", 1, 3.0, 3.0, 3.0, {6: 1}, text()) for _ in range(draw(few))],
        problems=[Problem("crash", text(), 1) for _ in range(draw(few))],
        config={"theme": text(), "language": text(), "threads": 4},
        system=SystemInfo(os=text(), memory_bucket="8-16 GiB"),
    )
    return report, machine, forbidden


def strings_in(value: Any) -> Iterator[str]:
    """Every string anywhere in a record: attribute values, dict keys, nested records."""
    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from strings_in(v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_planted_identifier_survives_the_pipeline(
    data: st.DataObject,
    make_report: Callable[..., Report],
    pipeline: Callable[[Report, ScrubContext], ScrubOutcome],
    spec: ProductSpec,
) -> None:
    report, machine, forbidden = data.draw(planted_reports(make_report))
    # Generous string limits, so that truncation cannot hide an identifier the scrubber missed.
    ctx = ScrubContext(spec=spec, machine=machine, limits=ScrubLimits(max_string_bytes=4096))
    outcome = pipeline(report, ctx)
    assert outcome.report is not None, outcome.dropped_by
    found = [s for s in strings_in(outcome.report) for bad in forbidden if bad.lower() in s.lower()]
    assert not found, f"survived: {found}"
    assert pipeline(report, ctx) == outcome
    shuffled = attrs.evolve(
        report,
        counters=data.draw(st.permutations(report.counters)),
        problems=report.problems[::-1],
        config=dict(reversed(report.config.items())),
    )
    assert pipeline(shuffled, ctx) == outcome


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_scrubbing_text_is_idempotent(data: st.DataObject) -> None:
    machine = data.draw(machines())
    text, _ = data.draw(texts(machine))
    once = scrub_text(text, machine)
    assert scrub_text(once, machine) == once


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(codec="ascii"), max_size=60))
def test_arbitrary_ascii_text_scrubs_idempotently(text: str) -> None:
    once = scrub_text(text, MACHINE)
    assert scrub_text(once, MACHINE) == once


# --------------------------------------------------------------------------------------------------
# The public corpus (tests/corpus/privacy.py): recall per kind and false positives, in every place
# --------------------------------------------------------------------------------------------------

#: Machines whose names the corpus plants: this one, and one with the names that are hardest to scrub
#: without scrubbing ordinary words (a two-letter host, "root").
CORPUS_MACHINES = (
    MachineIdentifiers.of_this_machine(),
    MachineIdentifiers(host_names=("vm",), user_names=("root",), home_dirs=("/root",)),
    MachineIdentifiers(host_names=("ws-4711", "ws-4711.corp.example.com"), user_names=("alice",)),
)


def places(text: str, make_report: Callable[..., Report], ctx: ScrubContext) -> dict[str, str | None]:
    """``text`` in every free-text place of a report, through the whole pipeline: what each place holds."""
    report = make_report(
        product_version=text,
        counters=[CounterValue("feature", 1, text)],
        problems=[Problem("crash", text, 1)],
        config={"theme": text},
        system=SystemInfo(os=text, arch=text, memory_bucket=text, boot_age_bucket=text, os_version=text),
    )
    result = IdentifiersScrubber().scrub(report, ctx)
    assert result is not None and result.system is not None
    system = result.system
    return {
        "label": result.counters[0].label,
        "signature": result.problems[0].signature,
        "config": str(result.config["theme"]),
        "product_version": result.product_version,
        **{name: getattr(system, name) for name in ("os", "arch", "memory_bucket", "boot_age_bucket", "os_version")},
    }


@pytest.mark.parametrize("machine", CORPUS_MACHINES, ids=lambda m: m.host_names[0] if m.host_names else "none")
def test_the_corpus_recall_is_at_least_99_percent_per_kind(
    machine: MachineIdentifiers, make_report: Callable[..., Report], spec: ProductSpec
) -> None:
    ctx = ScrubContext(spec=spec, machine=machine)
    leaks = privacy.leaking(machine)
    assert len(leaks) >= 300 and set(privacy.LEAKING_KINDS) == {e["kind"] for e in leaks}
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed = []
    for entry in leaks:
        for place, value in places(entry["text"], make_report, ctx).items():
            total[entry["kind"]] += 1
            if any(value is not None and s.lower() in value.lower() for s in entry["secrets"]):
                missed.append((entry["kind"], place, entry["text"], value))
            else:
                caught[entry["kind"]] += 1
    recall = {kind: caught[kind] / total[kind] for kind in total}
    assert all(r >= 0.99 for r in recall.values()), (recall, missed[:10])


@pytest.mark.parametrize("machine", CORPUS_MACHINES, ids=lambda m: m.host_names[0] if m.host_names else "none")
def test_the_corpus_false_positives_are_at_most_1_percent(
    machine: MachineIdentifiers, make_report: Callable[..., Report], spec: ProductSpec
) -> None:
    ctx = ScrubContext(spec=spec, machine=machine)
    benign = privacy.benign()
    assert len(benign) >= 300
    checked, changed = 0, []
    for entry in benign:
        for place, value in places(entry["text"], make_report, ctx).items():
            if place in ("product_version", "os_version") and not VERSION.fullmatch(entry["text"]):
                continue  # not a version: it must become <invalid> there
            checked += 1
            if value != entry["text"]:
                changed.append((place, entry["text"], value))
    assert len(changed) <= 0.01 * checked, changed[:10]


@pytest.mark.parametrize(
    "text",
    [
        "ValueError@render.py:88",
        "KB5034441 failed to install",
        "CVE-2024-3094",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "libssl.so.3",
        "Version=4.0.0.0",
        "max_tokens=512",
        "token expired",
        "Basic authentication failed",
        "logging.info",
        "HKLM\\Software\\Microsoft",
        "C:\\Program Files\\Analyst\\bin\\analyst.exe",
        "HRESULT 0x80070005",
        "built from 3f2a9c1d",
        "login: failed",
        "users: 5, host_count=3, host=localhost",
        "rows 12345678",
        "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    ],
)
def test_benign_strings_of_telemetry_survive(text: str) -> None:
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("key AKIAIOSFODNN7EXAMPLE", "key <secret>", "secret"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer <secret>", "secret"),
        ('{"password": "hunter2"}', '{"password": "<secret>"}', "secret"),
        ("https://bob:pw@db.example.com/x?q=1#frag", "https://<user>:<secret>@<host>/x?q=<value>#<value>", "value"),
        ("SSN 078-05-1120", "SSN <id>", "national_id"),
        ("NINO QQ 12 34 56 C", "NINO <id>", "national_id"),
        ("S-1-5-21-1004336348-1177238915-682003330-512", "<id>", "national_id"),
        ("0044 20 7946 0958", "<phone>", "phone"),
        ("\\\\fs01\\home\\jdoe\\q3.xlsx", "\\\\<host>\\<path>\\q3.xlsx", "host"),
        ("CORP\\jdoe", "<user>", "user"),
        ("~jdoe/.ssh", "~<user>/.ssh", "user"),
        ("~/../jdoe/.ssh", "~/../<user>/.ssh", "user"),
        ("to: jane%40example.com", "to: <email>", "encoded"),
        ("peer 0xC0A8010A", "peer <ip>", "ip"),
        ("addr c0a80101, ip=3232235777", "addr <ip>, ip=<ip>", "ip"),
        ("AKIAJ7Q3Z5W2X8Y4V6U1:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "<secret>:<secret>", "secret"),
        ("ip-10-0-1-23.ec2.internal", "<host>", "host"),
        ("db-07.prod.acme.internal", "<host>", "host"),
        ('COMPUTERNAME=WS-0042 "owner": "ana"', 'COMPUTERNAME=<host> "owner": "<user>"', "user"),
    ],
)
def test_replaces_the_new_kinds(text: str, expected: str, kind: str) -> None:
    result, counts = scrub(text)
    assert result == expected
    assert counts.get(kind, 0) >= 1


def test_the_scan_is_bounded_by_the_string_limit() -> None:
    # The pipeline scans at most 4x the string limit: whatever a product passes, the cost is bounded
    # (the time of long adversarial strings is measured in bench/privacy.py, not here).
    scrubber = TextScrubber(MACHINE, max_chars=1020)
    assert len(scrubber("1 " * 500_000)) <= 1020
    assert len(scrubber("password=" * 100_000)) <= 1020


def test_short_own_names_and_root_are_scrubbed_as_words_with_digits() -> None:
    machine = MachineIdentifiers(host_names=("vm",), user_names=("root",))
    assert scrub("VM vm01 Root2 rootfs jvm vmware", machine)[0] == "<host> <host> <user> rootfs jvm vmware"


def test_this_machine_keeps_short_names() -> None:
    machine = MachineIdentifiers.of_this_machine()
    assert all(len(n) >= 2 for n in (*machine.host_names, *machine.user_names))
    assert "localhost" not in machine.host_names


def test_a_unc_path_whose_names_look_like_escapes_is_still_a_path() -> None:
    """``\\\\uaa01`` is a UNC server, not the escape ``\\uaa01``: decoding it would hide the path (found by
    the planted-identifier property above)."""
    text, _ = scrub(r"copy failed: \\uaa01\share\uaax\a.txt")
    assert "uaa01" not in text and "uaax" not in text, text
