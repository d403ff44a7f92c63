"""The detectors of the ``identifiers`` scrubber beyond the classic ones (e-mail, IP, MAC, card, phone,
UUID, serial): credentials, URL parts, national and device identifiers, paths that name a user, other
machines' names, encoded forms.

Each detector is a function ``(text, hit) -> text``: ``hit(kind)`` counts one replacement and returns the
placeholder for ``kind``. They are cheap to skip (each one first checks for a character or a word that
it needs) and linear in the length of the text: every pattern starts at a literal or a narrow class,
and repeats are possessive or bounded, so no input makes the regex engine backtrack without bound.
docs/scrubbing.md lists what each one matches and what it deliberately leaves alone.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import re
from collections.abc import Callable

Hit = Callable[[str], str]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# -- credentials ---------------------------------------------------------------------------------------

# PEM blocks: everything from the BEGIN line to the END line, or to the end of the text when the string
# was cut before the END line.
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{1,40}+-----(?:.*?-----END [A-Z0-9 ]{1,40}+-----|.*+)", re.DOTALL)

# Authorization schemes followed by their credentials: ``Authorization: Bearer abc...``, ``Basic ...``.
_AUTH_SCHEME = re.compile(
    r"(?i)(?<![A-Za-z])(?P<scheme>bearer|basic|digest|negotiate|ntlm|token|apikey|sso-key)"
    r"(?P<sep>[ ]++|=)(?P<cred>[A-Za-z0-9._~+/=:-]{6,}+)"
)

# Secrets written as key-value pairs: a key containing one of these words, a separator (``=``, ``:``,
# ``=>``, ``->``, ``:=``, optionally quoted, or whitespace), then the value. The key may have a prefix
# and a suffix (``db_password``, ``X-Api-Key``, ``aws_secret_access_key``).
_SECRET_WORDS = (
    "password|passwd|passphrase|passcode|pwd|pswd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    "private[_-]?key|signing[_-]?key|encryption[_-]?key|credentials?|session[_-]?id|sessionid|sessid|"
    "cookie|auth[_-]?key|client[_-]?secret|pin[_-]?code|otp|accountkey|sharedaccesskey|connectionstring|pass(?![a-z])"
)
_KEY_VALUE = re.compile(
    rf"(?i)(?P<key>(?:{_SECRET_WORDS})[A-Za-z0-9_.-]{{0,24}}+)"
    r"(?P<sep>[\"']?[ ]*+(?:=>|->|:=|[=:])[ ]*+|[ ]++)"
    r"(?P<val>\"[^\"]{1,200}+\"|'[^']{1,200}+'|[^\s\"',;&)}\]<>]{1,200}+)"
)
_SECRET_HINTS = (
    "pass",
    "pwd",
    "pswd",
    "secret",
    "token",
    "key",
    "credential",
    "session",
    "sessid",
    "cookie",
    "otp",
    "pin",
    "connectionstring",
)
# Values that hide nothing: empty markers, booleans, masks.
_NOT_SECRET = frozenset({"null", "none", "true", "false", "yes", "no", "on", "off", "***", "****", "*****", "redacted"})

# Keys that name something about a secret, not the secret.
_NOT_SECRET_KEYS = (
    "tokens",
    "count",
    "len",
    "length",
    "size",
    "ttl",
    "expiry",
    "expires",
    "expires_in",
    "timeout",
    "type",
    "policy",
    "age",
    "limit",
    "min",
    "max",
    "file",
    "path",
    "url",
    "format",
    "strength",
    "required",
    "enabled",
    "mode",
)
# Tokens of the well-known shapes, recognised without any key before them.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}"  # cloud access key ids
    r"|AIza[0-9A-Za-z_-]{30,}+"  # cloud API keys
    r"|ya29\.[0-9A-Za-z_-]{20,}+"  # OAuth access tokens
    r"|(?:sk|pk|rk)_(?:live|test|prod)_[0-9A-Za-z]{8,}+"  # payment platforms
    r"|whsec_[0-9A-Za-z]{16,}+"
    r"|xox[abposrec]-[0-9A-Za-z-]{8,}+|xapp-[0-9A-Za-z-]{8,}+"  # chat platforms
    r"|gh[pousr]_[0-9A-Za-z]{20,}+|github_pat_[0-9A-Za-z_]{20,}+|glpat-[0-9A-Za-z_-]{16,}+"  # code hosting
    r"|sk-(?:proj-|ant-|live-|svcacct-)?[0-9A-Za-z_-]{16,}+"  # "sk-..." API keys
    r"|npm_[0-9A-Za-z]{30,}+|pypi-[0-9A-Za-z_-]{30,}+|dckr_pat_[0-9A-Za-z_-]{20,}+"  # package registries' tokens
    r"|(?:shpat|shpss|shpca|hf|figd|lin_api|ntn|dop_v1|glptt|sq0atp|sq0csp)[_-][0-9A-Za-z_-]{20,}+"  # other services
    r"|SG\.[0-9A-Za-z_-]{16,}+\.[0-9A-Za-z_-]{16,}+"  # mail services
    r"|(?:AC|SK)[0-9a-f]{32}"
    r"|[0-9]{8,10}:AA[0-9A-Za-z_-]{30,}+"  # chat bots
    r"|eyJ[0-9A-Za-z_-]{8,}+(?:\.[0-9A-Za-z_-]*+){0,2}"  # JWTs (and a lone base64 JSON header)
    r")"
)
_TOKEN_HINTS = re.compile(
    r"shp|hf_|figd_|lin_api|ntn_|dop_v1|glptt|sq0|dckr_"
    r"|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA|AIza|ya29|_live_|_test_|_prod_"
    r"|whsec|xox|xapp|gh[pousr]_|github_pat|glpat|sk-|npm_|pypi-|SG\.|AC|SK|:AA|eyJ"
)


def _hints(*words: str) -> re.Pattern[str]:
    """One search for any of ``words`` in lower-cased text: the cheap test before a detector. (Searching
    lower-cased text is several times faster than a case-insensitive search for many words.)"""
    return re.compile("|".join(re.escape(w.lower()) for w in words))


_AUTH_WORDS = ("bearer", "basic", "digest", "negotiate", "ntlm", "token", "apikey", "sso-key")
_AUTH_HINT = _hints(*_AUTH_WORDS)
_SECRET_HINT = _hints(*_SECRET_HINTS)


# Accounts and machines named by a key: user=jsmith, COMPUTERNAME=WS-0042, "owner": "ana".
_NAMED_ACCOUNT = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?P<key>(?P<user>user(?:[_-]?(?:name|id))?|login(?:[_-]?name)?|logon|owner|account(?:[_-]?name)?"
    r"|principal|upn|uid)|(?P<host>host(?:[_-]?name)?|computer[_-]?name|machine[_-]?name|node[_-]?name"
    r"|workstation|device[_-]?name|server(?:[_-]?name)?))"
    r"(?P<sep>[\"']?[ ]*+[=:][ ]*+[\"']?)(?P<val>[A-Za-z0-9][A-Za-z0-9._\\@$-]{0,63}+)"
)
_ACCOUNT_HINT = re.compile(
    r"user|login|logon|owner|account|principal|upn|uid|host|computer|machine|node|workstation"
    r"|device|server"
)
#: Values after such a key that say how something went, not who or which machine.
_NOT_NAMES = _words(
    """
    localhost none null true false unknown default anonymous 0 failed failure success succeeded successful ok
    error denied required missing invalid expired locked disabled enabled timeout refused unavailable pending
    """
)


def accounts(text: str, hit: Hit) -> str:
    """The value after a key that names a user or a machine (``user=jsmith``, ``hostname: ws-0042``)."""
    if ("=" in text or ":" in text) and _ACCOUNT_HINT.search(text.lower()):
        text = _NAMED_ACCOUNT.sub(lambda m: _account(m, hit), text)
    return text


def _account(m: re.Match[str], hit: Hit) -> str:
    value = m.group("val")
    if value.lower() in _NOT_NAMES or value.startswith("127."):
        return m.group()
    return m.group("key") + m.group("sep") + hit("user" if m.group("user") else "host")


def credentials(text: str, hit: Hit) -> str:
    """PEM blocks, authorization credentials, secret key-value pairs and tokens of well-known shapes."""
    if "-----BEGIN" in text:
        text = _PEM.sub(lambda m: hit("secret"), text)
    if _AUTH_HINT.search(text.lower()):
        text = _AUTH_SCHEME.sub(lambda m: _auth(m, hit), text)
    if _SECRET_HINT.search(text.lower()):
        text = _KEY_VALUE.sub(lambda m: _key_value(m, hit), text)
    if len(text) >= 16 and _TOKEN_HINTS.search(text):
        text = _TOKEN_SHAPES.sub(lambda m: hit("secret"), text)
    return text


def _credential_like(value: str) -> bool:
    """A value that can be a credential rather than a word: a digit or a symbol in it, or long."""
    return len(value) >= 20 or any(not c.isalpha() for c in value)


def _auth(m: re.Match[str], hit: Hit) -> str:
    cred = m.group("cred")
    if cred.startswith("<"):
        return m.group()
    # Base64 without digits still changes case inside words (dXNlcjpwYXNz); "Authentication" does not.
    mixed_case = len(cred) >= 8 and any(a.islower() and b.isupper() for a, b in itertools.pairwise(cred))
    if not _credential_like(cred) and not (m.group("scheme").lower() in ("basic", "bearer") and mixed_case):
        return m.group()
    return m.group("scheme") + m.group("sep") + hit("secret")


def _key_value(m: re.Match[str], hit: Hit) -> str:
    sep, value = m.group("sep"), m.group("val")
    bare = value.strip("\"'")
    if not bare or bare.startswith("<") or bare.lower() in _NOT_SECRET:
        return m.group()
    key = m.group("key").lower()
    if key.endswith(_NOT_SECRET_KEYS):
        return m.group()  # max_tokens=512, token_ttl=3600, password_policy=strict
    short = key in ("pass", "pwd", "otp")
    if short and ((m.start() and m.string[m.start() - 1].islower()) or not sep.strip()):
        return m.group()  # bypass=1, compass north: short words inside longer ones, or before a plain word
    if not sep.strip() and not _credential_like(bare):
        return m.group()  # "token expired": a word after the key, not a value
    quote = value[0] if value[0] in "\"'" else ""
    return m.group("key") + sep + quote + hit("secret") + quote


# -- URLs -----------------------------------------------------------------------------------------------

# scheme://[userinfo@]host[:port][/path][?query][#fragment]
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15}+)://(?:(?P<userinfo>[^\s/?#@]{1,200}+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[^\s/?#:\[\]]{1,253}+)?(?P<port>:[0-9]{1,5})?"
    r"(?P<path>/[^\s?#]*+)?(?P<query>\?[^\s#]*+)?(?P<fragment>#\S*+)?"
)
# A query string after a path or a page without a scheme: "/cb?code=...&state=...".
_QUERY = re.compile(
    r"(?<=[A-Za-z0-9_./>-])(?:\?(?=[A-Za-z0-9_.\[\]%-]{1,64}+=)[^\s#]*+(?:#\S*+)?|#(?=[A-Za-z0-9_.-]{1,64}+=)\S*+)"
)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "[::1]"})


def urls(text: str, hit: Hit) -> str:
    """URLs keep their scheme, the class of their host (``<host>``, ``<ip>``, or ``localhost``), their
    port and path (scrubbed by the other detectors); user names, passwords, query values and fragments
    are dropped. A query string after a path without a scheme loses its values too."""
    if "://" in text:
        text = _URL.sub(lambda m: _url(m, hit), text)
    if ("?" in text or "#" in text) and "=" in text:
        text = _QUERY.sub(lambda m: _query(m.group(), hit), text)
    return text


def _url(m: re.Match[str], hit: Hit) -> str:
    out = [m.group("scheme"), "://"]
    if m.group("userinfo"):
        _, colon, _ = m.group("userinfo").partition(":")
        out += [hit("user"), ":" + hit("secret") if colon else "", "@"]
    host = m.group("host") or ""
    if host and not host.startswith("<"):
        if host.lower() in _LOOPBACK:
            out.append(host)
        elif host.startswith("[") or _looks_numeric(host):
            out.append(hit("ip"))
        elif "." in host or m.group("scheme").lower() not in ("file",):
            out.append(hit("host"))
        else:
            out.append(host)
    else:
        out.append(host)
    out += [m.group("port") or "", m.group("path") or ""]
    rest = (m.group("query") or "") + (m.group("fragment") or "")
    if rest:
        out.append(_query(rest, hit))
    return "".join(out)


def _looks_numeric(host: str) -> bool:
    return all(c.isdigit() or c == "." for c in host) or host.lower().startswith("0x")


def _query(part: str, hit: Hit) -> str:
    """``?a=1&b=2#frag`` as ``?a=<value>&b=<value>#<value>``: keys are kept, values are not."""
    query, hashmark, fragment = part.partition("#")
    pieces = []
    if query.startswith("?"):
        for sep_piece in re.split(r"([&;])", query[1:]):
            if sep_piece in ("&", ";"):
                pieces.append(sep_piece)
                continue
            key, eq, value = sep_piece.partition("=")
            if eq and value and not value.startswith("<"):
                pieces.append(key + "=" + hit("value"))
            elif not eq and key and not key.startswith("<"):
                pieces.append(hit("value"))
            else:
                pieces.append(sep_piece)
        out = "?" + "".join(pieces)
    else:
        out = query
    if hashmark:
        out += "#" + (fragment if not fragment or fragment.startswith("<") else hit("value"))
    return out


# -- paths that carry a user ------------------------------------------------------------------------------

# UNC paths: \\server\share\... and //server/share/... (the server, the share and any folder below it
# can be a person's; a final file name is kept).
_UNC = re.compile(
    r"(?<![A-Za-z0-9:\\/])(?:\\\\|//)(?P<server>[^\\/\s?*:|\"<>]{1,63}+)(?P<rest>(?:[\\/][^\\/\s?*:|\"<>]{1,255}+)*+)"
)
# DOMAIN\user: an upper-case NetBIOS domain (at most 15 characters) and a name that does not go on
# as a path. Registry hives and NT AUTHORITY are not users' domains.
_DOMAIN_USER = re.compile(
    r"(?<![A-Za-z0-9_.\\/%$-])(?P<domain>[A-Za-z][A-Za-z0-9-]{1,14}+|NT AUTHORITY)\\"
    r"(?P<user>[A-Za-z][A-Za-z0-9._-]{0,62}+)(?![\\/A-Za-z0-9])"
)
# A name after a backslash that ends in one of these is a file in a relative path, not a user.
_FILE_SUFFIX = re.compile(
    r"(?i)\.(?:txt|log|py|exe|dll|sys|json|xml|csv|ini|cfg|conf|dat|tmp|md|html?|js|lnk|bat|cmd|ps1|msi|zip|pdf|docx?"
    r"|xlsx?|pptx?|png|jpe?g|gif|svg|db|sqlite|bak|yaml|yml|toml|so|h|c|cpp|cs|java|ts)$"
)
_NOT_DOMAINS = frozenset(
    {
        "hklm",
        "hkcu",
        "hkcr",
        "hku",
        "hkcc",
        "hkey",
        "nt authority",
        "builtin",
        "nt service",
        "software",
        "system",
        "windows",
        "program files",
        "temp",
        "src",
        "lib",
        "bin",
        "docs",
    }
)
# ~name (another user's home folder in shells), and escapes from a home folder to a sibling one.
_TILDE_USER = re.compile(r"(?<![A-Za-z0-9~])~(?P<user>[A-Za-z_][A-Za-z0-9._-]{0,31}+)(?=[\\/\s:'\"]|$)")
_HOME_ESCAPE = re.compile(
    r"(?i)(?P<up>(?:~|%USERPROFILE%|%HOMEPATH%|\$HOME|\$\{HOME\}|<user>)(?:[\\/]++\.\.){1,8}+[\\/]++)"
    r"(?P<user>[^\\/\s<]{1,64}+)"
)


def user_paths(text: str, hit: Hit) -> str:
    """UNC paths, ``DOMAIN\\user``, ``~name`` (``~<user>``) and ``~/../name`` (``~/../<user>``); home
    folders are the caller's."""
    if "~" in text or "%" in text or "$" in text or "<user>" in text:
        text = _HOME_ESCAPE.sub(lambda m: m.group("up") + hit("user"), text)
    if "\\\\" in text or "//" in text:
        text = _UNC.sub(lambda m: _unc(m, hit), text)
    if "\\" in text:
        text = _DOMAIN_USER.sub(lambda m: _domain_user(m, hit), text)
    if "~" in text:
        text = _TILDE_USER.sub(lambda m: "~" + hit("user"), text)
    return text


def _domain_user(m: re.Match[str], hit: Hit) -> str:
    if m.group("domain").lower() in _NOT_DOMAINS or _FILE_SUFFIX.search(m.group("user")):
        return m.group()
    return hit("user")


def _unc(m: re.Match[str], hit: Hit) -> str:
    server = m.group("server")
    if server.startswith("<") or server in ("?", "."):
        return m.group()
    sep = m.group()[0]
    parts = [p for p in re.split(r"[\\/]", m.group("rest")) if p]
    kept = parts[-1] if parts and "." in parts[-1] and len(parts) >= 2 else None
    folders = sep + "<path>" if len(parts) > (1 if kept else 0) else ""
    return sep * 2 + hit("host") + folders + (sep + kept if kept else "")


# -- e-mail addresses written to dodge filters ----------------------------------------------------------------

_OBFUSCATED_EMAIL = re.compile(
    r"(?i)[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]{0,63}+(?:[ ]*+[\[({]at[\])}]|[ ]++at[ ])[ ]*+"
    r"[A-Za-z0-9-]{1,63}+(?:(?:[ ]*+[\[({]dot[\])}]|[ ]++dot[ ]|\.)[ ]*+[A-Za-z0-9-]{1,63}+){1,4}+"
)
_DODGE_WORDS = re.compile(r"(?i)[\[({]at[\])}]|[ ]at[ ].*[ ]dot[ ]")


def obfuscated_emails(text: str, hit: Hit) -> str:
    """``alice [at] example [dot] com`` and ``alice at example dot com``."""
    if len(text) >= 10 and _DODGE_WORDS.search(text):
        text = _OBFUSCATED_EMAIL.sub(lambda m: _obfuscated(m, hit), text)
    return text


def _obfuscated(m: re.Match[str], hit: Hit) -> str:
    text = m.group().lower()
    if "[" in text or "(" in text or "{" in text or " dot " in text:
        return hit("email")
    return m.group()


# -- other machines' names ---------------------------------------------------------------------------------

#: Top-level domains that end a host name whatever the labels before them look like.
_STRONG_TLDS = _words(
    """
    com net org edu gov mil local lan internal intranet corp localdomain home arpa priv private example
    invalid uk de fr nl jp cn ru br au ca es se ch eu be at dk fi cz ie nz kr tw hk sg za mx ar gr hu ro
    tr il us biz su ua kz by lt lv ee sk si hr bg rs vn th my id ph pk eg ng ke cl pe ve domain localnet
    workgroup
    """
)
#: Top-level domains that are also words or file names: a host name must have a digit or a dash in a
#: label, or at least three labels.
_WEAK_TLDS = _words(
    """
    io dev cloud me tv co xyz online site tech ly gg nu pw top ws fm
    """
)
#: Top-level domains that are also attribute or file names (``logger.info``, ``Analyst.app``): a host name
#: must have a digit or a dash in a label.
_WEAKEST_TLDS = _words(
    """
    info int it no to app ai
    """
)
#: Never a host: file extensions that are also country domains.
_FILE_TLDS = _words(
    """
    py rs md pl so pm ps mk zip mov sh
    """
)
_REVERSE_DNS_ROOTS = _words(
    """
    com org net io de uk edu gov fr nl ch
    """
)
_FQDN = re.compile(
    r"[A-Za-z0-9](?<![A-Za-z0-9_.@<-].)[A-Za-z0-9-]{0,62}+(?:\.[A-Za-z0-9-]{1,63}+){1,10}+(?![A-Za-z0-9_@-])"
)
# Machine names that say what they are: DESKTOP-4F7K2LM, WIN-5E2K8F9A1B3, jdoe-laptop, jane's MacBook Pro.
_DEVICE_NAME = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])(?:(?:DESKTOP|LAPTOP|WIN|PC|WS|WKS|NB|MBP)-[A-Z0-9]{4,15}+"
    r"|[A-Za-z][A-Za-z0-9]{0,19}+(?:-[A-Za-z0-9]{1,20}+){0,3}?-(?:laptop|desktop|pc|mbp|macbook(?:-pro|-air)?|imac"
    r"|mac-?mini|workstation|thinkpad|surface|notebook|iphone|ipad|android|galaxy|pixel)[0-9]*+"
    r"|(?:MacBook(?:-Pro|-Air)?|iMac|iPhone|iPad)[ -](?:de|di|da|von|van|du)[ -][A-Za-z]{1,20}+"
    r"|[A-Z][a-z]{1,20}+['’]s[ -](?:MacBook(?:[ -]Pro|[ -]Air)?|iMac|Mac[ -]mini|iPhone|iPad|Laptop|PC))"
    r"(?![A-Za-z0-9_])"
)
_DEVICE_HINTS = (
    "android",
    "galaxy",
    "pixel",
    "desktop",
    "laptop",
    "win-",
    "pc",
    "ws-",
    "wks-",
    "nb-",
    "mbp",
    "mac",
    "workstation",
    "thinkpad",
    "surface",
    "notebook",
    "iphone",
    "ipad",
)


_DEVICE_HINT = _hints(*_DEVICE_HINTS)


def host_names(text: str, hit: Hit) -> str:
    """Fully qualified host names (``db-07.prod.acme.internal``) and self-describing machine names."""
    if "." in text:
        text = _FQDN.sub(lambda m: hit("host") if _is_host_name(m.group()) else m.group(), text)
    if _DEVICE_HINT.search(text.lower()):
        text = _DEVICE_NAME.sub(lambda m: hit("host"), text)
    return text


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    tld = labels[-1].lower()
    if not tld.isalpha() or len(tld) < 2 or tld in _FILE_TLDS:
        return False
    if any(not label or label[0] == "-" or label[-1] == "-" for label in labels):
        return False
    if len(labels) >= 3 and labels[0].lower() in _REVERSE_DNS_ROOTS:
        return False  # com.example.app: a bundle or package name
    if tld in _STRONG_TLDS:
        return True
    marked = any(c.isdigit() or c == "-" for label in labels[:-1] for c in label)
    if tld in _WEAK_TLDS:
        return len(labels) >= 3 or marked
    return tld in _WEAKEST_TLDS and marked


# -- national and device identifiers -------------------------------------------------------------------------

# US social security numbers, dashed or spaced (not 000, 666 or 9xx in the area, not 00 or 0000 groups).
_SSN = re.compile(r"[0-8](?<![0-9A-Za-z.+-].)[0-9]{2}(?P<s>[- ])[0-9]{2}(?P=s)[0-9]{4}(?![0-9-])")
# UK National Insurance numbers: two prefix letters, six digits (in pairs or not), a suffix A-D. Any two
# letters: the official examples (QQ 12 34 56 C) use a prefix that is never issued.
_NINO = re.compile(r"(?i)[A-Z](?<![A-Za-z0-9].)[A-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?![A-Za-z0-9])")
# An identifier named by the word before it: SSN 123456789, Passport No: 533380006, IMEI ..., S/N ...
_NAMED_ID = re.compile(
    r"(?i)(?<![A-Za-z])(?P<word>ssn|social security(?: number| no\.?)?|ss#|tin|tax[ _-]?id|nino|ni number"
    r"|national[ _-]?id|passport(?:[ _-]?(?:no\.?|number|num|nr|#|id))?|driver'?s? licen[cs]e(?: no\.?| number)?"
    r"|imei|imsi|meid|iccid|esn|serial(?:[ _-]?(?:no\.?|number|num|#))?|s/n|sn|service[ _-]?tag|asset[ _-]?tag"
    r"|device[ _-]?id|hwid|android[ _-]?id|idfa|idfv|advertising[ _-]?id|machine[ _-]?id)"
    r"(?P<sep>[ ]*+[:#=]?[ ]*+)(?P<id>[A-Za-z0-9](?:[A-Za-z0-9-]|[ ](?=[0-9])){2,40}+)"
)
_ID_HINTS = (
    "ssn",
    "social",
    "ss#",
    "tin",
    "tax",
    "nino",
    "ni number",
    "national",
    "passport",
    "licen",
    "imei",
    "imsi",
    "meid",
    "iccid",
    "esn",
    "serial",
    "s/n",
    "sn",
    "tag",
    "device",
    "hwid",
    "android",
    "idfa",
    "idfv",
    "advertising",
    "machine",
)
# Windows security identifiers of accounts: S-1-5-21-<domain>-<rid> and other long ones; the well-known
# short ones (S-1-5-18, S-1-5-32-544) name no one.
_SID = re.compile(
    r"(?i)S(?<![A-Za-z0-9].)-1-(?:5-21(?:-[0-9]{1,10}+){1,6}+|12-1(?:-[0-9]{1,10}+){1,6}+|[0-9]{1,3}(?:-[0-9]{1,10}+){4,8}+)"
)
# Decimal coordinates: lat, lon with at least three decimals, or any decimals after a word that says so.
_GEO_PAIR = re.compile(
    r"[-+0-9](?<![0-9A-Za-z.].)-?+[0-9]{1,2}\.[0-9]{3,}+°?[ ]*+[NS]?,"
    r"[ ]*+[-+]?[0-9]{1,3}\.[0-9]{3,}+°?(?:[ ]*+[EW](?![A-Za-z]))?"
)
_GEO_NAMED = re.compile(
    r"(?i)(?<![A-Za-z])(?P<word>lat(?:itude)?|lon(?:gitude)?|lng|geo|gps|coords?|coordinates|location|loc)"
    r"(?P<sep>[ ]*+[:=]?[ ]*+)(?P<val>[-+]?[0-9]{1,3}\.[0-9]{1,12}+(?:[ ]*+,[ ]*+[-+]?[0-9]{1,3}\.[0-9]{1,12}+)?)"
)
_GEO_DMS = re.compile(
    r"[0-9](?<![0-9].)[0-9]{0,2}°[ ]*+[0-9]{1,2}['′][ ]*+(?:[0-9]{1,2}(?:\.[0-9]+)?[\"″][ ]*+)?[NSEW]"
)


_ID_HINT = _hints(*_ID_HINTS)
_GEO_WORDS = ("lat", "lon", "lng", "geo", "gps", "coord", "loc")
_GEO_HINT = _hints(*_GEO_WORDS)


def national_ids(text: str, hit: Hit) -> str:
    """Social security and National Insurance numbers, named identifiers, SIDs and coordinates."""
    if "-" in text or " " in text:
        text = _SSN.sub(lambda m: hit("national_id") if _valid_ssn(m.group()) else m.group(), text)
    if len(text) >= 8:
        text = _NINO.sub(lambda m: hit("national_id"), text)
    if "S-1-" in text or "s-1-" in text:
        text = _SID.sub(lambda m: hit("national_id"), text)
    if _ID_HINT.search(text.lower()):
        text = _NAMED_ID.sub(lambda m: _named_id(m, hit), text)
    if "." in text:
        text = _GEO_PAIR.sub(lambda m: _geo_pair(m, hit), text)
        if _GEO_HINT.search(text.lower()):
            text = _GEO_NAMED.sub(lambda m: m.group("word") + m.group("sep") + hit("geo"), text)
    if "°" in text:
        text = _GEO_DMS.sub(lambda m: hit("geo"), text)
    return text


def _valid_ssn(text: str) -> bool:
    area, group, serial = text[:3], text[4:6], text[7:]
    return area not in ("000", "666") and group != "00" and serial != "0000"


#: Words naming a device's identifier rather than a person's.
_DEVICE_WORDS = (
    "imei",
    "imsi",
    "meid",
    "iccid",
    "esn",
    "serial",
    "s/n",
    "sn",
    "service",
    "asset",
    "device",
    "hwid",
    "android",
    "idfa",
    "idfv",
    "advertising",
    "machine",
)


def _named_id(m: re.Match[str], hit: Hit) -> str:
    value = m.group("id")
    word = m.group("word").lower()
    if value.startswith("<") or not any(c.isdigit() for c in value):
        return m.group()
    if word in ("sn", "tin", "esn") and not m.group("sep").strip():
        return m.group()  # too common as parts of ordinary text without a ":" or "="
    kind = "serial" if word.startswith(_DEVICE_WORDS) else "national_id"
    return m.group("word") + m.group("sep") + hit(kind)


def _geo_pair(m: re.Match[str], hit: Hit) -> str:
    numbers = re.findall(r"-?[0-9]+\.[0-9]+", m.group())
    lat, lon = (float(n) for n in numbers[:2])
    return hit("geo") if abs(lat) <= 90 and abs(lon) <= 180 else m.group()


# -- numbers that identify devices, and phone numbers in more forms -----------------------------------------------

# A run of exactly 15 digits is an IMEI or an IMSI: no counter or timestamp has that length by chance
# often enough to be worth the leak.
_FIFTEEN = re.compile(r"[0-9](?<![0-9.].)[0-9]{14}(?![0-9])")
# International numbers with a 00 prefix: 0044 20 7946 0958.
_PHONE_00 = re.compile(
    r"0(?<![0-9A-Za-z.].)0[ ]?[1-9][0-9]{0,2}(?:[ .-]?+(?:\([0-9]{1,5}+\)|[0-9]{1,5}+)){1,6}+(?![0-9])"
)
# A number named by the word before it: "tel: 4155550132", "mobile 07700 900461".
_PHONE_NAMED = re.compile(
    r"(?i)(?<![A-Za-z])(?P<word>phone|tel|telephone|mobile|mob|cell|fax|sms|whatsapp|call|contact)"
    r"(?P<sep>[ ]*+[:.=#]?[ ]*+)(?P<num>\(?\+?[0-9][0-9() .-]{5,24}+)"
)


# North American numbers written with spaces: 555 123 4567 (area codes start at 2).
_NANP_SPACED = re.compile(r"[2-9](?<![0-9A-Za-z.+-].)[0-9]{2} [0-9]{3} [0-9]{4}(?![0-9])")


_PHONE_WORDS = ("phone", "tel", "mob", "cell", "fax", "sms", "whatsapp", "call", "contact")
_PHONE_HINT = _hints(*_PHONE_WORDS)
#: Any word one of the detectors keys on: text without one skips those detectors at once.
ANY_HINT = _hints(*_AUTH_WORDS, *_SECRET_HINTS, *_DEVICE_HINTS, *_ID_HINTS, *_GEO_WORDS, *_PHONE_WORDS)


def device_and_phone_numbers(text: str, hit: Hit) -> str:
    """IMEI/IMSI-length digit runs, ``00``-prefixed international numbers and numbers named as phones."""
    if len(text) >= 15:
        text = _FIFTEEN.sub(lambda m: hit("national_id"), text)
    if "00" in text:
        text = _PHONE_00.sub(lambda m: hit("phone") if 9 <= _digits(m.group()) - 2 <= 15 else m.group(), text)
    if _PHONE_HINT.search(text.lower()):
        text = _PHONE_NAMED.sub(lambda m: _named_phone(m, hit), text)
    if " " in text:
        text = _NANP_SPACED.sub(lambda m: hit("phone"), text)
    return text


def _named_phone(m: re.Match[str], hit: Hit) -> str:
    number = m.group("num")
    kept = number.rstrip(" .-(")
    if not 7 <= _digits(kept) <= 15:
        return m.group()
    return m.group("word") + m.group("sep") + hit("phone") + number[len(kept) :]


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


# -- IPv4 addresses in other spellings ---------------------------------------------------------------------------

_HEX_IPV4 = re.compile(
    r"0(?<![0-9A-Za-z].)[xX](?:[0-9A-Fa-f]{8}(?![0-9A-Za-z])|[0-9A-Fa-f]{1,2}(?:\.0[xX][0-9A-Fa-f]{1,2}){3}(?![0-9A-Za-z]))"
)
_DASHED_IPV4 = re.compile(
    r"(?<![A-Za-z0-9_.-])(?:[A-Za-z]{1,12}+-)?(?P<a>[0-9]{1,3})[-_](?P<b>[0-9]{1,3})[-_](?P<c>[0-9]{1,3})[-_](?P<d>[0-9]{1,3})(?![0-9])"
)
_IP_BEFORE = re.compile(
    r"(?i)(?<![A-Za-z])(?:ip|ipv4|addr|address|peer|host|remote|src|dst|source|destination|connect(?:ing|ed)?|from|to"
    r"|via|server|client|gateway|gw|dns|proxy|bind|listen|route|ping|reach)\b[ :=]*+$"
)
_ADDRESS_BEFORE = re.compile(
    r"(?i)(?<![A-Za-z])(?:ip|ipv4|addr|address|peer|remote|src|dst|gateway|gw|dns|proxy|bind|listen|route|host)"
    r"\b[ :=]*+$"
)
_IP_AFTER = re.compile(r"(?i)[ :]*+(?:unreachable|refused|timed out|not reachable|port\b|:[0-9])")


# A 32-bit address as a bare number: eight hex digits (c0a80101) or a decimal integer (3232235777).
_BARE_IPV4 = re.compile(r"[0-9A-Fa-f](?<![0-9A-Za-z.:].)(?:[0-9A-Fa-f]{7}|[0-9]{8,9})(?![0-9A-Za-z.:])")


def ipv4_spellings(text: str, hit: Hit) -> str:
    """IPv4 addresses written in hex (``0xC0A80101``, ``0xc0.0xa8.0x01.0x01``, ``c0a80101``), as a decimal
    integer after a word about addresses (``ip=3232235777``), or with dashes inside a cloud host name
    (``ip-10-0-1-23``)."""
    if "0x" in text or "0X" in text:
        text = _HEX_IPV4.sub(lambda m: _hex_ipv4(m, hit), text)
    if len(text) >= 8:
        text = _BARE_IPV4.sub(lambda m: _bare_ipv4(m, hit), text)
    if "-" in text or "_" in text:
        text = _DASHED_IPV4.sub(lambda m: _dashed_ipv4(m, hit), text)
    return text


def _hex_ipv4(m: re.Match[str], hit: Hit) -> str:
    """A dotted hex address always; a bare 32-bit hex number only if it is a private or link-local address
    or the text talks about addresses, so that HRESULTs (0x80070005) and NTSTATUS codes survive."""
    value = m.group()
    if "." in value:
        return hit("ip")
    n = int(value[2:], 16)
    a, b = n >> 24, (n >> 16) & 0xFF
    private = a == 10 or (a == 172 and 16 <= b < 32) or (a == 192 and b == 168) or (a == 169 and b == 254)
    private = private or (a == 100 and 64 <= b < 128)
    before = m.string[max(0, m.start() - 16) : m.start()]
    after = m.string[m.end() : m.end() + 16]
    if private or _IP_BEFORE.search(before) or _IP_AFTER.match(after):
        return hit("ip")
    return value


def _bare_ipv4(m: re.Match[str], hit: Hit) -> str:
    """A bare number is an address only after a word about addresses, or (eight hex digits) in
    192.168/16 or 172.16/12, too unlikely for a short hash to start with."""
    value = m.group()
    before = m.string[max(0, m.start() - 16) : m.start()]
    if any(w in before.lower() for w in HASH_WORDS):
        return value
    context = _ADDRESS_BEFORE.search(before) is not None
    if len(value) == 8 and all(c in "0123456789abcdefABCDEF" for c in value) and not value.isdigit():
        n = int(value, 16)
        a, b = n >> 24, (n >> 16) & 0xFF
        return hit("ip") if context or (a == 192 and b == 168) or (a == 172 and 16 <= b < 32) else value
    if value.isdigit() and context and 1 << 24 <= int(value) < 1 << 32:
        return hit("ip")
    return value


def _dashed_ipv4(m: re.Match[str], hit: Hit) -> str:
    if all(int(m.group(g)) <= 255 for g in "abcd"):
        return hit("ip")
    return m.group()


# -- encoded forms ----------------------------------------------------------------------------------------------

_BASE64 = re.compile(r"[A-Za-z0-9+/_-](?<![A-Za-z0-9+/_=-].)[A-Za-z0-9+/_-]{11,}+={0,2}+(?![A-Za-z0-9+/=_-])")
_HEX_TEXT = re.compile(r"[0-9A-Fa-f](?<![0-9A-Za-z].)(?:[0-9A-Fa-f]{2}){5,}+[0-9A-Fa-f](?![0-9A-Za-z])")


def encoded_text(text: str, hit: Hit, scrub: Callable[[str], str]) -> str:
    """Base64 and hex runs that decode to readable text: that text is scrubbed, and the run becomes
    ``<encoded>`` if scrubbing changed it or if it holds a ``user:password`` pair."""
    if len(text) >= 12:
        text = _BASE64.sub(lambda m: _decoded(m, hit, scrub, _from_base64), text)
        text = _HEX_TEXT.sub(lambda m: _decoded(m, hit, scrub, _from_hex), text)
    return text


def _from_base64(token: str) -> str | None:
    if not any(c.isdigit() or c in "+/=" for c in token):
        return None
    padded = token.replace("-", "+").replace("_", "/")
    padded += "=" * (-len(padded) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _readable(raw)


def _from_hex(token: str) -> str | None:
    try:
        return _readable(bytes.fromhex(token))
    except ValueError:
        return None


def _readable(raw: bytes) -> str | None:
    if len(raw) < 6:
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return decoded if decoded.isprintable() else None


def _decoded(m: re.Match[str], hit: Hit, scrub: Callable[[str], str], decode: Callable[[str], str | None]) -> str:
    decoded = decode(m.group())
    if decoded is None:
        return m.group()
    if scrub(decoded) != decoded or re.search(r"[^\s:]:[^\s:]", decoded):
        return hit("encoded")
    return m.group()


# -- high-entropy tokens -----------------------------------------------------------------------------------------

#: Words before a hex or base64 run that say it is a digest of content, not an identifier.
HASH_WORDS = (
    "sha",
    "md5",
    "hash",
    "digest",
    "checksum",
    "commit",
    "rev",
    "build",
    "etag",
    "git",
    "blob",
    "tree",
    "object",
    "crc",
    "integrity",
    "ref",
    "head",
    "fingerprint",
    "signature",
    "blake",
    "xxh",
)

_MIXED_TOKEN = re.compile(r"[A-Za-z0-9+/_=-](?<![A-Za-z0-9+/_=.-].)[A-Za-z0-9+/_=-]{19,}+(?![A-Za-z0-9+/_=-])")


def random_tokens(text: str, hit: Hit) -> str:
    """Tokens of 20 or more characters mixing upper-case letters, lower-case letters and digits (two, or
    one in 30 characters or more) with the entropy and the case changes of random text (keys, session
    ids), not of CamelCase words."""
    if len(text) >= 20:
        text = _MIXED_TOKEN.sub(lambda m: hit("secret") if _random_looking(m) else m.group(), text)
    return text


def _random_looking(m: re.Match[str]) -> bool:
    token = m.group()
    before = (m.string[max(0, m.start() - 16) : m.start()] + token[:8]).lower()
    if any(w in before for w in HASH_WORDS):
        return False  # sha256-47DEQpj8HBSa+/TImW+5JCeuQeRk...: a digest in base64
    core = token.rstrip("=")
    upper = sum(c.isupper() for c in core)
    lower = sum(c.islower() for c in core)
    digits = sum(c.isdigit() for c in core)
    if upper < 2 or lower < 2 or digits < (1 if len(core) >= 30 else 2):
        return False
    classes = ["u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "o" for c in core]
    switches = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    if switches / len(core) < 0.3:
        return False
    counts: dict[str, int] = {}
    for c in core:
        counts[c] = counts.get(c, 0) + 1
    entropy = -sum(n / len(core) * math.log2(n / len(core)) for n in counts.values())
    return entropy >= 3.5
