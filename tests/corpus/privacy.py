"""The public privacy corpus: generators of realistic strings that leak an identifier, by kind, and of
benign strings that telemetry carries and that must survive unchanged.

Every leaking entry names the substrings (``secrets``) that must not appear, in any case, in what is
stored. The generators are seeded, so the corpus is the same on every run; ``leaking(machine)`` fills in
this machine's own host and user names, because those are what a real recorder must scrub.
``tests/corpus/heldout.jsonl`` is a separate hand-written sample of the same kinds, written before the
scrubbers were tuned and only evaluated at the end (``bench/privacy.py --heldout``).

    python -c "import tests.corpus.privacy as c; c.dump()"   # the corpus as JSON lines, for a look
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from typing import Any

from ceip_core.scrubbing import MachineIdentifiers

Entry = dict[str, Any]

#: The leaking kinds, as the issue groups them.
LEAKING_KINDS = ("secret", "url", "national_id", "phone", "path", "encoded", "host", "classic")
#: The benign kinds.
BENIGN_KINDS = ("signature", "file", "version", "hash", "article", "text")
PER_KIND = 60

_FIRST = [
    "alice",
    "bob",
    "carol",
    "dmitri",
    "esra",
    "farid",
    "grace",
    "hiro",
    "ines",
    "jamal",
    "kenji",
    "lucia",
    "mateo",
    "nadia",
    "oskar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "tariq",
    "uma",
    "viktor",
    "wen",
    "yusuf",
]
_LAST = [
    "smith",
    "garcia",
    "nguyen",
    "mueller",
    "kowalski",
    "okafor",
    "tanaka",
    "rossi",
    "haddad",
    "lindqvist",
    "fernandes",
    "oconnor",
    "petrov",
    "yilmaz",
    "zhang",
    "bauer",
]
_ORGS = ["acme", "contoso", "initech", "globex", "umbrella", "hooli", "northwind", "fabrikam", "wayne", "tyrell"]
_TLDS = ["com", "net", "org", "local", "internal", "corp", "lan", "co.uk", "de", "io", "cloud", "dev"]
_WRAP = [
    "{}",
    "error: {}",
    "failed to open {}",
    "{} (retrying)",
    "OSError: {}",
    "connect {} refused",
    "value={}",
    "[{}]",
    "'{}'",
    "while loading {} at step 3",
]


def _rng(kind: str, seed: int) -> random.Random:
    return random.Random(f"{kind}:{seed}")


def _chars(r: random.Random, alphabet: str, n: int) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _user(r: random.Random) -> str:
    first, last = r.choice(_FIRST), r.choice(_LAST)
    return r.choice([first, f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}", f"{first}{r.randint(1, 99)}"])


def _domain(r: random.Random) -> str:
    return f"{r.choice(_ORGS)}{r.choice(['', '-corp', 'labs', '-it'])}.{r.choice(_TLDS)}"


def _wrap(r: random.Random, text: str) -> str:
    return r.choice(_WRAP).format(text)


def _entry(kind: str, text: str, *secrets: str) -> Entry:
    return {"kind": kind, "text": text, "secrets": list(secrets)}


B64 = string.ascii_letters + string.digits
HEX = "0123456789abcdef"


def _secret(r: random.Random) -> Entry:
    shape = r.randrange(16)
    if shape == 0:
        value = r.choice(["AKIA", "ASIA"]) + _chars(r, string.ascii_uppercase + string.digits, 16)
        text = r.choice(["aws key {} denied", "AccessKeyId {}", "{}", "credentials for {} expired"]).format(value)
    elif shape == 1:
        value = _chars(r, B64 + "+/", 40)
        text = r.choice(["aws_secret_access_key={}", "AWS_SECRET_ACCESS_KEY: {}", "secret_key = {}"]).format(value)
    elif shape == 2:
        value = f"{r.choice(['sk', 'rk', 'pk'])}_{r.choice(['live', 'test'])}_{_chars(r, B64, r.randint(16, 32))}"
        text = _wrap(r, value)
    elif shape == 3:
        value = f"xox{r.choice('bpas')}-{r.randint(10**9, 10**12)}-{_chars(r, B64, r.randint(12, 24))}"
        text = r.choice(["slack token {} revoked", "posting with {}", "{}"]).format(value)
    elif shape == 4:
        value = "sk-" + r.choice(["", "proj-", "ant-"]) + _chars(r, B64 + "_-", r.randint(20, 40))
        text = r.choice(["OPENAI_API_KEY={}", "using key {}", "401 for {}"]).format(value)
    elif shape == 5:
        header = "eyJ" + _chars(r, B64 + "_-", r.randint(10, 30))
        payload = "eyJ" + _chars(r, B64 + "_-", r.randint(20, 60))
        value = f"{header}.{payload}.{_chars(r, B64 + '_-', r.randint(20, 43))}"
        text = r.choice(["jwt {} expired", "id_token={}", "Bearer {}", "{}"]).format(value)
        return _entry("secret", text, payload)
    elif shape == 6:
        body = _chars(r, B64 + "+/", r.randint(30, 80))
        label = r.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "CERTIFICATE"])
        text = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
        return _entry("secret", text, body)
    elif shape == 7:
        value = _chars(r, B64 + "-._~", r.randint(16, 48))
        text = r.choice(["Authorization: Bearer {}", "authorization=Bearer {}", "header 'Authorization: Bearer {}'"])
        text = text.format(value)
    elif shape == 8:
        import base64

        value = base64.b64encode(f"{_user(r)}:{_chars(r, B64, 10)}".encode()).decode()
        text = r.choice(["Authorization: Basic {}", "proxy auth Basic {}", "basic={}"]).format(value)
    elif shape == 9:
        key = r.choice(["password", "passwd", "pwd", "db_password", "PASSWORD", "admin_pass", "Password"])
        value = r.choice(["Winter2024!", "hunter2", "S3cr3t!", "p@ssw0rd", "Tr0ub4dor&3"]) + str(r.randint(0, 99))
        sep = r.choice(["=", ": ", " = ", "=>", ":=", '": "', " "])
        text = (f'{{"{key}{sep}{value}"}}' if sep == '": "' else f"{key}{sep}{value}") + r.choice(["", ";", " failed"])
    elif shape == 10:
        key = r.choice(
            [
                "token",
                "api_key",
                "apiKey",
                "X-Api-Key",
                "secret",
                "client_secret",
                "access_token",
                "auth_token",
                "session_id",
                "SESSIONID",
                "private_key",
            ]
        )
        value = _chars(r, B64, r.randint(12, 40))
        sep = r.choice(["=", ": ", "=", "='", '="'])
        text = f"{key}{sep}{value}" + ("'" if sep.endswith("'") else '"' if sep.endswith('"') else "")
    elif shape == 11:
        user, pw = _user(r), _chars(r, B64, r.randint(8, 16))
        scheme = r.choice(["https", "postgres", "mysql", "redis", "ftp", "amqp", "mongodb+srv"])
        text = f"{scheme}://{user}:{pw}@{r.choice(['db', 'cache', 'mq'])}{r.randint(1, 9)}.{_domain(r)}/app"
        return _entry("secret", text, pw, user)
    elif shape == 12:
        value = "gh" + r.choice("pous") + "_" + _chars(r, B64, 36)
        text = _wrap(r, value)
    elif shape == 13:
        value = "AIza" + _chars(r, B64 + "_-", 35)
        text = r.choice(["maps key={}", "googleapis {} quota", "{}"]).format(value)
    elif shape == 14:
        value = _chars(r, HEX, 32)
        text = r.choice(["Password={};", "Server=db;User Id=sa;Password={};", "AccountKey={}", "token: {}"])
        text = text.format(value)
    else:
        value = _chars(r, B64, r.randint(24, 40))
        text = r.choice(["session cookie {}", "x-auth-token: {}", "refresh_token={}"]).format(value)
    return _entry("secret", text, value)


def _url(r: random.Random) -> Entry:
    host = r.choice(["api", "www", "portal", "cdn", "login"]) + "." + _domain(r)
    value = r.choice([_user(r), _chars(r, B64, 12), str(r.randint(10000, 999999)), f"{_user(r)}%40{_domain(r)}"])
    key = r.choice(["q", "user", "uid", "email", "session", "id", "name", "token", "ref", "search"])
    extra = r.choice(["", f"&page={r.randint(1, 9)}x", f"&lang=en-{r.choice(['GB', 'US'])}"])
    path = r.choice(["/search", "/v1/items", "/account/reset", "/", "/api/v2/report.pdf", ""])
    shape = r.randrange(4)
    if shape == 0:
        text = f"https://{host}{path or '/'}?{key}={value}{extra}"
    elif shape == 1:
        frag = _chars(r, B64, r.randint(8, 20))
        text = f"{r.choice(['http', 'https'])}://{host}{path}#access_token={frag}"
        value = frag
    elif shape == 2:
        text = f"GET {path or '/'}?{key}={value}{extra} HTTP/1.1"
    else:
        text = f"opened {r.choice(['https', 'http'])}://{host}{path}?{key}={value}"
    return _entry("url", _wrap(r, text) if r.random() < 0.3 else text, value.split("%")[0])


def _ssn(r: random.Random) -> str:
    return f"{r.choice([r.randint(1, 665), r.randint(667, 899)]):03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


def _luhn(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return digits + str((10 - total % 10) % 10)


def _national(r: random.Random) -> Entry:
    shape = r.randrange(10)
    if shape == 0:
        value = _ssn(r)
        text = r.choice(["SSN {}", "ssn: {}", "applicant {}", "{}", "tax form {} rejected"]).format(value)
        if r.random() < 0.3:
            value = value.replace("-", " ")
            text = f"social security number {value}"
    elif shape == 1:
        value = _ssn(r).replace("-", "")
        text = r.choice(["SSN={}", "ssn {}", "SSN: {}", "Social Security No. {}"]).format(value)
    elif shape == 2:
        letters = "ABCEGHJKLMNPRSTWXYZ"
        digits = f"{r.randint(0, 999999):06d}"
        spaced = r.random() < 0.5
        body = " ".join(digits[i : i + 2] for i in range(0, 6, 2)) if spaced else digits
        gap = " " if spaced else ""
        value = f"{r.choice(letters)}{r.choice(letters)}{gap}{body}{gap}{r.choice('ABCD')}"
        text = r.choice(["NI number {}", "NINO: {}", "national insurance {}", "{}"]).format(value)
    elif shape == 3:
        value = r.choice([f"{r.randint(10**8, 10**9 - 1)}", f"{r.choice('CXKPL')}{r.randint(10**6, 10**8 - 1)}"])
        text = r.choice(["passport {}", "Passport No: {}", "passport_number={}", "passport #{}"]).format(value)
    elif shape == 4:
        value = _luhn("".join(str(r.randint(0, 9)) for _ in range(14)))
        text = r.choice(["IMEI {}", "imei={}", "device imei: {}", "{}"]).format(value)
    elif shape == 5:
        value = f"{r.choice(['310', '234', '262', '460'])}{r.randint(10, 99)}{r.randint(10**9, 10**10 - 1)}"
        text = r.choice(["IMSI {}", "imsi={}", "sim {}"]).format(value)
    elif shape == 6:
        sub = "-".join(str(r.randint(10**8, 4 * 10**9)) for _ in range(3))
        value = f"S-1-5-21-{sub}-{r.randint(500, 5000)}"
        text = r.choice(["owner {}", "ACL entry {} denied", "{}", "sid={}"]).format(value)
        return _entry("national_id", text, sub)
    elif shape == 7:
        lat, lon = r.uniform(-89, 89), r.uniform(-179, 179)
        value = f"{lat:.{r.randint(4, 7)}f}"
        second = f"{lon:.{r.randint(4, 7)}f}"
        text = r.choice(["at {}, {}", "gps {},{}", "location={},{}", "{}, {} (last fix)"]).format(value, second)
        return _entry("national_id", text, value, second)
    elif shape == 8:
        lat, lon = r.uniform(0, 89), r.uniform(0, 179)
        value, second = f"{lat:.{r.randint(2, 6)}f}", f"{lon:.{r.randint(2, 6)}f}"
        text = r.choice(["lat={} lon={}", "latitude: {}, longitude: {}", "lat {} lng {}"]).format(value, second)
        return _entry("national_id", text, value, second)
    else:
        value = f"{r.randint(1, 89)}°{r.randint(0, 59)}'{r.randint(0, 59)}\"{r.choice('NS')}"
        text = f"position {value} {r.randint(1, 179)}°{r.randint(0, 59)}'{r.randint(0, 59)}\"{r.choice('EW')}"
    return _entry("national_id", text, value)


def _phone(r: random.Random) -> Entry:
    d = lambda n: "".join(str(r.randint(0, 9)) for _ in range(n))  # noqa: E731
    shape = r.randrange(9)
    if shape == 0:
        tail = f"{d(4)} {d(4)}"
        text = f"+44 20 {tail}"
    elif shape == 1:
        tail = f"{d(3)}-{d(4)}"
        text = f"+1 ({d(3)}) {tail}"
    elif shape == 2:
        tail = f"{d(2)} {d(2)} {d(2)}"
        text = f"+33 {r.randint(1, 9)} {d(2)} {tail}"
    elif shape == 3:
        tail = f"{d(4)} {d(4)}"
        text = f"00{r.choice(['49', '44', '41', '31'])} {d(2)} {tail}"
    elif shape == 4:
        tail = f"{d(3)}.{d(4)}"
        text = f"+1.{d(3)}.{tail}"
    elif shape == 5:
        tail = f"{d(4)} {d(6)}"
        text = f"(+44) {tail}"
    elif shape == 6:
        tail = f"{d(4)}-{d(4)}"
        text = f"+81-{r.randint(1, 9)}-{tail}"
    elif shape == 7:
        tail = d(8)
        text = f"+{r.choice(['49', '34', '39', '46'])}{d(3)}{tail}"
    else:
        tail = f"{d(3)} {d(4)}"
        text = f"+44 (0){d(2)} {tail}"
    context = r.choice(["call {}", "tel: {}", "phone={}", "{}", "mobile {} unreachable", "contact: {}", "sms to {}"])
    return _entry("phone", context.format(text), tail)


def _path(r: random.Random) -> Entry:
    user = _user(r)
    file = r.choice(["report.xlsx", "data.csv", "notes.txt", "config.ini", ".bashrc", "main.py"])
    shape = r.randrange(8)
    if shape == 0:
        folder = r.choice(["Documents", "AppData\\Local\\Temp", "Desktop"])
        text = f"C:\\Users\\{user}\\{folder}\\{file}"
    elif shape == 1:
        server = f"{r.choice(['fs', 'files', 'nas'])}{r.randint(1, 20):02d}"
        text = f"\\\\{server}\\{r.choice(['home', 'profiles', 'users$'])}\\{user}\\{file}"
        return _entry("path", _wrap(r, text), user, server)
    elif shape == 2:
        text = f"{r.choice(['CORP', 'CONTOSO', 'ACME', 'AD', 'EMEA'])}\\{user}"
        text = r.choice(["logon as {}", "user {} denied", "{}", "runas /user:{}"]).format(text)
    elif shape == 3:
        text = f"~{user}/{file}"
    elif shape == 4:
        text = f"~/../{user}/{file}"
    elif shape == 5:
        text = f"/home/{user}/{r.choice(['src', 'work', '.cache'])}/{file}"
    elif shape == 6:
        text = f"/Users/{user}/Library/{file}"
    else:
        text = f"..\\..\\Users\\{user}\\{file}"
    return _entry("path", _wrap(r, text) if r.random() < 0.5 else text, user)


def _encoded(r: random.Random) -> Entry:
    user = _user(r)
    shape = r.randrange(7)
    if shape == 0:
        text = f"email={user}%40{_domain(r)}"
        return _entry("encoded", text, user)
    if shape == 1:
        text = f"path=C%3A%5CUsers%5C{user}%5CDesktop"
    elif shape == 2:
        text = f"from={user}%2540{_domain(r)}"
    elif shape == 3:
        octets = [r.choice([10, 192, 172]), r.randint(0, 255), r.randint(0, 255), r.randint(1, 254)]
        if octets[0] == 192:
            octets[1] = 168
        elif octets[0] == 172:
            octets[1] = r.randint(16, 31)
        value = "0x" + "".join(f"{o:02X}" for o in octets)
        text = r.choice(["peer {} refused", "addr={}", "bind {}"]).format(value)
        return _entry("encoded", text, value)
    elif shape == 4:
        ip = f"{r.randint(1, 223)}-{r.randint(0, 255)}-{r.randint(0, 255)}-{r.randint(1, 254)}"
        text = r.choice([f"ip-{ip}.ec2.internal", f"ec2-{ip}.compute-1.amazonaws.com", f"{ip}.nip.io", f"ip-{ip}"])
        return _entry("encoded", _wrap(r, text), ip)
    elif shape == 5:
        text = f"q=%2Fhome%2F{user}%2F.ssh"
    else:
        import base64

        value = base64.b64encode(f"{user}@{_domain(r)}".encode()).decode()
        text = f"payload {value}"
        return _entry("encoded", text, value)
    return _entry("encoded", text, user)


def _host(r: random.Random, machine: MachineIdentifiers) -> Entry:
    own_host = machine.host_names[0] if machine.host_names else "ws-4711"
    own_user = machine.user_names[0] if machine.user_names else "alice"
    shape = r.randrange(8)
    if shape == 0:
        role, site = r.choice(["db", "build", "web", "app", "ci"]), r.choice(["prod", "eu", "dc1"])
        value = f"{role}-{r.randint(1, 99):02d}.{site}.{_domain(r)}"
        text = r.choice(["replica {} lagging", "connect to {} refused", "{}", "resolved {}"]).format(value)
        return _entry("host", text, value.split(".")[0])
    if shape == 1:
        value = f"{r.choice(_FIRST)}-{r.choice(['laptop', 'macbook-pro', 'desktop', 'pc'])}"
        text = r.choice(["{}.local", "mdns {}.local", "{}"]).format(value)
        return _entry("host", text, value)
    if shape == 2:
        value = r.choice([own_host, own_host.upper(), own_host.capitalize()])
        text = r.choice(["build on {} failed", "{}", "{}:8080", "host={}", "({})"]).format(value)
    elif shape == 3:
        value = f"{r.choice([own_host, own_host.upper()])}{r.randint(0, 99):02d}"
        text = r.choice(["{} unreachable", "node {}", "{}"]).format(value)
    elif shape == 4:
        value = r.choice([own_user, own_user.upper(), own_user.capitalize()])
        text = r.choice(["session for {}", "{}", "owner={}", "{}'s settings", "user {} logged in"]).format(value)
    elif shape == 5:
        value = f"{r.choice([own_user, own_user.upper()])}{r.randint(1, 99)}"
        text = r.choice(["{} logged in", "{}", "by {}"]).format(value)
    elif shape == 6:
        value = f"DESKTOP-{_chars(r, string.ascii_uppercase + string.digits, 7)}"
        text = r.choice(["{}", "joined from {}", "client {}"]).format(value)
    else:
        value = f"{r.choice(['mail', 'vpn', 'proxy', 'fs'])}{r.randint(1, 9)}.{_domain(r)}"
        text = r.choice(["smtp {} timeout", "via {}", "{}"]).format(value)
        return _entry("host", text, value.split(".")[0] + "." + value.split(".")[1])
    return _entry("host", text, value)


def _classic(r: random.Random) -> Entry:
    shape = r.randrange(6)
    if shape == 0:
        value = f"{_user(r)}@{_domain(r)}"
    elif shape == 1:
        value = f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    elif shape == 2:
        value = ":".join(f"{r.randint(0, 255):02x}" for _ in range(6))
    elif shape == 3:
        value = _luhn("4" + "".join(str(r.randint(0, 9)) for _ in range(14)))
    elif shape == 4:
        value = "-".join(_chars(r, HEX, n) for n in (8, 4, 4, 4, 12))
    else:
        value = f"C02{_chars(r, string.ascii_uppercase + string.digits, 9)}"
        return _entry("classic", f"serial {value}", value)
    return _entry("classic", _wrap(r, value), value)


_LEAKING: dict[str, Callable[[random.Random, MachineIdentifiers], Entry]] = {
    "secret": lambda r, m: _secret(r),
    "url": lambda r, m: _url(r),
    "national_id": lambda r, m: _national(r),
    "phone": lambda r, m: _phone(r),
    "path": lambda r, m: _path(r),
    "encoded": lambda r, m: _encoded(r),
    "host": _host,
    "classic": lambda r, m: _classic(r),
}


def leaking(machine: MachineIdentifiers, per_kind: int = PER_KIND, seed: int = 0) -> list[Entry]:
    """``per_kind`` leaking strings of every kind, for ``machine``'s own names."""
    return [_LEAKING[kind](_rng(kind, seed * 10_000 + i), machine) for kind in LEAKING_KINDS for i in range(per_kind)]


def _benign_one(kind: str, r: random.Random) -> str:
    errors = ["ValueError", "KeyError", "TypeError", "IndexError", "OSError", "RuntimeError", "TimeoutError"]
    files = ["render.py", "loader.py", "charts/axis.py", "io/csv_reader.py", "export.cpp", "Report.java", "app.ts"]
    if kind == "signature":
        return r.choice(
            [
                f"{r.choice(errors)}@{r.choice(files)}:{r.randint(1, 2000)}",
                f"{r.choice(errors)}: list index out of range in {r.choice(['render', 'load', 'parse'])}_rows",
                f"HRESULT 0x{r.choice(['80070005', '80004005', '8007000E', '80070057'])}",
                f"SIGSEGV in libpng16.so.16 at offset {r.randint(100, 9000)}",
                f"std::out_of_range in Matrix::at({r.randint(0, 99)})",
                f"NullPointerException@{r.choice(['Renderer', 'Loader'])}.java:{r.randint(1, 900)}",
                f"timeout after {r.randint(1, 60) * 1000} ms",
                f"panic: index out of range [{r.randint(0, 9)}] with length {r.randint(0, 9)}",
                f"[Errno {r.randint(1, 40)}] No such file or directory",
            ]
        )
    if kind == "file":
        return r.choice(
            [
                f"report_{r.randint(2019, 2026)}_Q{r.randint(1, 4)}.xlsx",
                f"libssl.so.{r.randint(1, 3)}",
                r.choice(["setup.cfg", "README.md", "index.d.ts", "archive.tar.gz", "Analyst.app", "theme-dark.css"]),
                f"model_v{r.randint(1, 9)}.onnx",
                f"python3.{r.randint(8, 13)}",
                f"msvcp{r.choice(['140', '120'])}.dll",
                f"chart-{r.choice(['bar', 'line', 'pie'])}.svg",
                f"System.{r.choice(['Data', 'Net.Http', 'Xml'])}.dll",
                "com.example.analyst.plist",
            ]
        )
    if kind == "version":
        return r.choice(
            [
                f"{r.randint(1, 20)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
                f"10.0.{r.randint(17000, 26000)}.{r.randint(1, 4000)}",
                f"v{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 20)}",
                f"{r.randint(2019, 2026)}.{r.randint(1, 12)}.{r.randint(0, 9)}",
                f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}-rc.{r.randint(1, 5)}",
                f"6.{r.randint(1, 9)}.0-{r.randint(10, 200)}-generic",
                f"{r.randint(1, 9)}.0.0.0",
                f"{r.randint(1, 5)}.{r.randint(0, 9)}.{r.randint(0, 9)}+build.{r.randint(1, 999)}",
                f"17.0.{r.randint(1, 12)}+{r.randint(1, 12)}-LTS",
            ]
        )
    if kind == "hash":
        return r.choice(
            [
                f"sha256:{_chars(r, HEX, 64)}",
                f"commit {_chars(r, HEX, 40)}",
                f"md5 {_chars(r, HEX, 32)}",
                f"built from {_chars(r, HEX, 7)}",
                f"checksum={_chars(r, HEX, 64)}",
                f"git rev {_chars(r, HEX, 12)}",
                f"{_chars(r, HEX, 64)}",
                f"sha1 {_chars(r, HEX, 40)}",
            ]
        )
    if kind == "article":
        return r.choice(
            [
                f"KB{r.randint(890000, 5099999)} failed to install",
                f"update KB{r.randint(890000, 5099999)}",
                f"CVE-{r.randint(2015, 2026)}-{r.randint(1000, 49999)}",
                f"MS{r.randint(10, 17)}-{r.randint(1, 150):03d} patch missing",
                f"RHSA-{r.randint(2019, 2026)}:{r.randint(1000, 9999)}",
                f"USN-{r.randint(4000, 7000)}-{r.randint(1, 3)}",
            ]
        )
    return r.choice(
        [
            "x86_64",
            "arm64",
            "8-16 GiB",
            "Linux",
            "Windows",
            "macOS",
            "dark",
            "en-GB",
            "UTF-8",
            "1920x1080",
            f"render took {r.randint(1, 9999)} ms",
            f"rows {r.randint(1, 10**7)}",
            f"retry {r.randint(1, 5)} of 5",
            f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z",
            "invalid password",
            "token expired",
            "logging.info",
            "max_tokens=512",
            "auto_save",
            "pdf",
            f"{r.randint(1, 64)} threads",
            f"zoom {r.choice(['100', '125', '150'])}%",
            "1-7 days",
            f"p95 {r.uniform(1, 500):.2f} ms",
            "connection reset by peer",
            "ISO-8859-1",
            "AES256GCM",
        ]
    )


def benign(per_kind: int = PER_KIND + 10, seed: int = 0) -> list[Entry]:
    """``per_kind`` benign strings of every benign kind (duplicates removed)."""
    out: dict[tuple[str, str], Entry] = {}
    for kind in BENIGN_KINDS:
        for i in range(per_kind):
            text = _benign_one(kind, _rng(kind, seed * 10_000 + i))
            out[(kind, text)] = {"kind": kind, "text": text}
    return list(out.values())


def heldout(path: str, machine: MachineIdentifiers) -> tuple[list[Entry], list[Entry]]:
    """The hand-written held-out sample: leaking and benign entries, ``{host}``/``{user}`` filled in."""
    host = machine.host_names[0] if machine.host_names else "ws-4711"
    user = machine.user_names[0] if machine.user_names else "alice"

    def fill(text: str) -> str:
        for name, value in (("host", host), ("user", user)):
            text = text.replace("{" + name + "}", value).replace("{" + name.upper() + "}", value.upper())
            text = text.replace("{" + name.capitalize() + "}", value.capitalize())
        return text

    leaks, benigns = [], []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            e = json.loads(line)
            e["text"] = fill(e["text"])
            if "secrets" in e:
                e["secrets"] = [fill(s) for s in e["secrets"]]
                leaks.append(e)
            else:
                benigns.append(e)
    return leaks, benigns


def dump(machine: MachineIdentifiers | None = None) -> None:
    """Print the corpus as JSON lines (for a sample machine unless one is given)."""
    machine = machine or MachineIdentifiers(host_names=("ws-4711",), user_names=("alice",))
    for entry in [*leaking(machine), *benign()]:
        print(json.dumps(entry))
