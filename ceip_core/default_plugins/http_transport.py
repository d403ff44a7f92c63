"""The HTTPS transport (``https://ceip.example.com``): batches POSTed to the receiving service.

Reports go to ``<base URL>/v1/reports`` and deletion requests to ``<base URL>/v1/deletions``, each as the
gzip batch body of docs/wire-format.md. The service answers per item, and the answers become per-item
results for the spool: accepted or duplicate (ack), rejected with a reason (removed, never retried), or
left out of the answer (retried). Whole-request failures map by meaning, not by habit:

- 408, 429, 5xx, timeouts, refused or reset connections, TLS failures: the service did not take the
  batch this time, so every item is retried (after ``Retry-After`` when the service says so);
- 404, 405 and redirects: the URL does not lead to a receiving service; retried, because a
  misconfigured URL must not destroy the queue;
- 413 ``too-many-items`` with the service's ``limit``: the batch is sent again at once, split into
  batches of that many (the uploader sends at most ``wire.MAX_BATCH_ITEMS``, the service's default, so
  this happens only with a service configured lower); items are never refused for a batch's size;
- any other 4xx: the service refuses this body for good (``{"error": reason}``), so the items are rejected.

Options ride on the URL, so that one string configures a destination (``ceip config set upload-url``):

- ``?ca=/path/ca.pem`` trusts that CA file instead of the system's CAs (a private CA, a test
  certificate). Certificate verification itself cannot be switched off.
- Plain ``http://`` is refused unless the host is loopback or the URL says ``?allow_http=1``: reports
  must not cross a network unencrypted by accident. The check happens when the transport is made,
  before anything connects.
- ``?proxy=http://proxy.example:3128`` sends through that HTTP proxy (for https, a ``CONNECT`` tunnel:
  TLS runs end to end inside it and the proxy sees only the host name). Without it the standard
  environment applies: ``HTTPS_PROXY``/``https_proxy`` (``HTTP_PROXY`` for plain http) and
  ``NO_PROXY``/``no_proxy``, as curl and pip read them. Machines in companies often reach the outside
  only through a proxy; a proxy that fails or refuses the tunnel is a delivery problem (retried).

aiohttp is imported on first use, not with this module: every process that loads the plugins (sealing,
in the product's process) imports this module, and only uploaders need the HTTP client.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, urlsplit

import orjson

from ceip_core import wire
from ceip_core.hookspecs import hookimpl
from ceip_core.transport import Batch, BatchItem, Outcome, SendResult, TransportFactory
from ceip_core.vendor_policy import VendorPolicy
from ceip_core.version import __version__

if TYPE_CHECKING:
    import ssl

    import aiohttp

log = logging.getLogger(__name__)

#: Where each kind of item is posted, below the base URL.
PATHS = {"deletion": "/v1/deletions", "report": "/v1/reports"}
#: Where the vendor's kill switch and sampling policy is read.
POLICY_PATH = "/v1/policy"
#: URL query options this transport understands.
OPTIONS = ("ca", "allow_http", "proxy")
#: Statuses after which the same batch may succeed later.
RETRY_STATUSES = frozenset({404, 405, 408, 429})
#: Longest ``Retry-After`` honoured (the backoff's own ceiling); a service cannot park a queue for years.
MAX_RETRY_AFTER_S = 3600.0
#: Largest answer read from the service; a larger one is treated as unreadable.
MAX_ANSWER_BYTES = 4 << 20
#: Longest reason kept from the service: reasons become drop counter names.
MAX_REASON_CHARS = 64
#: Seconds one request may take in all (connect, send up to 1 MiB, wait for the durable commit).
DEFAULT_TIMEOUT_S = 120.0


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ca_context(path: str) -> ssl.SSLContext:
    """A client TLS context that trusts only the CA certificate(s) in the PEM file ``path``. Raises
    ValueError naming the file and what is wrong with it, in words (not OpenSSL's "PEM lib")."""
    import ssl

    where = f"the CA file {path} (?ca= in the upload URL)"
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{where} is a folder: give the CA certificate's PEM file") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        found = " (it holds a private key, not a certificate)" if b"PRIVATE KEY-----" in text else ""
        raise ValueError(
            f"{where} holds no PEM certificate{found}: it must contain a '-----BEGIN CERTIFICATE-----' block"
        )
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # OpenSSL says only "PEM lib"
        raise ValueError(f"{where} holds a damaged certificate: cut short, or not the base64 of one") from None


def proxy_of(where: str, proxy: str) -> str:
    """``proxy`` checked as an HTTP proxy URL (``http://HOST[:PORT]``; a bare ``HOST:PORT`` means that,
    as curl takes it); ValueError naming ``where`` otherwise."""
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(
            f"{where} ({proxy!r}) is not an HTTP proxy URL: give http://HOST:PORT "
            f"(an https:// destination is tunnelled through it with CONNECT, TLS end to end)"
        )
    return proxy


def env_proxy(destination: SplitResult) -> str | None:
    """The proxy the standard environment names for ``destination``: ``HTTPS_PROXY`` or ``https_proxy``
    (``HTTP_PROXY`` for http), unless ``NO_PROXY``/``no_proxy`` exempts its host. Read here with the
    standard library rather than by aiohttp's ``trust_env``, which would also send ``~/.netrc``
    credentials to the receiving service: an account name must never leave with the reports."""
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(destination.scheme)
    if not proxy or urllib.request.proxy_bypass(destination.netloc):  # reads NO_PROXY, as proxies are set
        return None
    return proxy_of(f"{destination.scheme.upper()}_PROXY in the environment", proxy)


class HttpTransport:
    """Sends batches to one receiving service over one aiohttp session (made on first use)."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        options = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"unknown option {', '.join(unknown)} in {url!r} (known: {', '.join(OPTIONS)})")
        allow_http = options.get("allow_http", ["0"])[-1].lower() in ("1", "true", "yes")
        ca = options.get("ca", [None])[-1]
        self.host = parts.hostname
        self.base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        option = options.get("proxy", [None])[-1]
        self.proxy = proxy_of(f"the proxy in {url!r}", option) if option is not None else env_proxy(parts)
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            import ssl  # ssl and email load when a transport is made: sealing loads this module, sends nothing

            if "allow_http" in options:
                raise ValueError(f"allow_http applies to http:// URLs only: {url!r}")
            # With a CA file, only that CA is trusted; without one, the system's CAs are.
            self._ssl = ca_context(ca) if ca else ssl.create_default_context()
        elif ca is not None:
            raise ValueError(f"a CA file applies to https:// URLs only: {url!r}")
        elif not is_loopback(self.host) and not allow_http:
            raise ValueError(
                f"refusing plain http to {self.host}: reports would cross the network unencrypted. "
                f"Use https://, or add ?allow_http=1 to the URL if that network is trusted"
            )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The transport's one session, made inside the running event loop on first use."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"ceip/{__version__}"},
            )
        return self._session

    # -- the Transport contract ---------------------------------------------------------------------

    async def send(self, batch: Batch) -> Sequence[SendResult]:
        """Post deletion requests first, then reports: a report never overtakes a deletion request
        (the spool also holds back reports of a pair with a deletion request queued)."""
        results: list[SendResult] = []
        for kind, path in PATHS.items():
            items = [i for i in batch.items if i.kind == kind]
            if items:
                results.extend(await self._post(path, Batch(items)))
        unknown = [i for i in batch.items if i.kind not in PATHS]
        results.extend(SendResult(i.item_id, Outcome.REJECTED, f"unknown-kind-{i.kind}") for i in unknown)
        return results

    async def flush(self, timeout: float | None = None) -> bool:
        return True  # nothing is buffered: send returns when the service has answered

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the vendor policy ----------------------------------------------------------------------------

    async def fetch_policy(self) -> VendorPolicy | None:
        """The service's kill switch and sampling policy; the empty policy from a service that has none
        (404); None when it cannot be had now."""
        import aiohttp

        try:
            async with self._client().get(self.base + POLICY_PATH, allow_redirects=False, proxy=self.proxy) as resp:
                if resp.status == 404:
                    return VendorPolicy(checked=time.time())
                if resp.status != 200:
                    log.info("no vendor policy from %s: HTTP %d", self.base, resp.status)
                    return None
                return VendorPolicy.from_answer(orjson.loads(await _read_answer(resp)), time.time())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.info("no vendor policy from %s: %s", self.base, _describe(exc))
            return None

    # -- one request ----------------------------------------------------------------------------------

    async def _post(self, path: str, batch: Batch) -> list[SendResult]:
        import aiohttp

        headers = {"Content-Encoding": "gzip", "Content-Type": wire.CONTENT_TYPE}
        try:
            async with self._client().post(
                self.base + path, data=batch.body(), headers=headers, allow_redirects=False, proxy=self.proxy
            ) as resp:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                answer = await _read_answer(resp)
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            reason = _describe(exc)
            log.info("upload to %s failed, will retry: %s", self.base, reason)
            return batch.results(Outcome.RETRY, reason)
        if 200 <= status < 300:
            return _per_item(batch, answer)
        if status == 413 and (limit := _item_limit(answer)) is not None and limit < len(batch.items):
            # A service that takes fewer items per batch than the uploader sends: the same items in
            # smaller batches pass, so they are neither refused for good nor retried as they were.
            items = list(batch.items)
            results: list[SendResult] = []
            for start in range(0, len(items), limit):
                results.extend(await self._post(path, Batch(items[start : start + limit])))
            return results
        reason = _error_reason(status, answer)
        if status in RETRY_STATUSES or status >= 500 or 300 <= status < 400:
            log.info("upload to %s answered HTTP %d (%s), will retry", self.base + path, status, reason)
            return batch.results(Outcome.RETRY, reason, retry_after)
        log.warning("upload to %s refused for good, HTTP %d: %s", self.base + path, status, answer[:300])
        return batch.results(Outcome.REJECTED, reason)


async def _read_answer(resp: aiohttp.ClientResponse) -> bytes:
    """The answer body, refusing one larger than :data:`MAX_ANSWER_BYTES`."""
    answer = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        answer += chunk
        if len(answer) > MAX_ANSWER_BYTES:
            raise ValueError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
    return bytes(answer)


def _per_item(batch: Batch, answer: bytes) -> list[SendResult]:
    """Map ``{"results": [{"id", "status", "reason"}]}`` onto the batch; what it leaves out is retried."""
    try:
        rows = orjson.loads(answer)["results"]
        if not isinstance(rows, list):
            raise TypeError("results is not a list")
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        log.warning("unreadable answer from the receiving service (%s); the batch will be retried", exc)
        return batch.results(Outcome.RETRY, "unreadable-answer")
    by_id = {row["id"]: row for row in rows if isinstance(row, dict) and isinstance(row.get("id"), str)}
    return [_result_of(item, by_id.get(item.item_id)) for item in batch.items]


def _result_of(item: BatchItem, row: dict[str, object] | None) -> SendResult:
    status = row.get("status") if row is not None else None
    if status in ("accepted", "duplicate"):
        return SendResult(item.item_id, Outcome.ACCEPTED)
    if status == "rejected" and row is not None:
        return SendResult(item.item_id, Outcome.REJECTED, _short(row.get("reason")) or "rejected")
    return SendResult(item.item_id, Outcome.RETRY, "missing-from-answer")


def _error_reason(status: int, answer: bytes) -> str:
    """The service's machine-readable ``error`` if it gave one, else ``http-<status>``."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        doc = None
    error = _short(doc.get("error")) if isinstance(doc, dict) else None
    return error or f"http-{status}"


def _item_limit(answer: bytes) -> int | None:
    """The most items per batch, from a ``too-many-items`` answer; None from any other."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("error") != "too-many-items":
        return None
    limit = doc.get("limit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else None


def _short(value: object) -> str | None:
    return value[:MAX_REASON_CHARS] if isinstance(value, str) and value else None


def _describe(exc: BaseException) -> str:
    """A failure in words a person can act on; certificate problems say so plainly."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"{type(exc).__name__}: {exc}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date), capped at
    :data:`MAX_RETRY_AFTER_S`; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


@hookimpl
def ceip_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    register("https", HttpTransport)
    register("http", HttpTransport)


__all__ = ["HttpTransport", "ca_context", "env_proxy", "is_loopback", "parse_retry_after", "proxy_of"]
