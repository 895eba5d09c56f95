"""httpx's client API over aiohttp's connection pool.

httpx's own transport (httpcore on anyio) costs about 1 ms of CPU per request here, and
its pool does work quadratic in its size; through this transport a request costs about
0.26 ms (`python bench/http_client.py`). On a 2-core machine that runs the broker, the
stand-ins and every service, that is the difference between the sync being bound by its
HTTP client and not. The rest of Ferry keeps httpx's API (`httpx.Response`,
`httpx.HTTPStatusError`, auth flows, redirects), so only the wire underneath changes.

aiohttp's failures are translated to httpx's, so `shared.retry` sees what it always saw:
timeouts, connection errors and broken responses are `httpx.TransportError`s (transient).
A response body larger than `max_body_bytes` is refused as `ResponseTooLarge` (permanent).
What httpx's transport took from the environment, this one takes too: the proxies of
`HTTP(S)_PROXY`/`NO_PROXY` (httpx ignores them once it is given a transport) and the CA
bundle httpx trusts (certifi, or `SSL_CERT_FILE`).
"""

from __future__ import annotations

import ssl
import urllib.request

import aiohttp
import httpx
import yarl

from shared.retry import PermanentError

MAX_BODY_BYTES = 64 * 1024 * 1024  # a page of full dataset listings is a few MB at most
# Below the 5 s an idle connection is kept by uvicorn (AIoD's server) and by httpx: a request
# never goes out on a connection the server is closing.
KEEPALIVE_SECONDS = 4.0
CHUNK_BYTES = 64 * 1024


class ResponseTooLarge(PermanentError):
    """The peer sent a body larger than the client accepts."""


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one `aiohttp.ClientSession`, opened on first use (it needs
    the running loop) and closed by `aclose`. Redirects, auth and decompression stay
    httpx's: aiohttp sends the request as built and hands back the bytes as received."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_body_bytes: int = MAX_BODY_BYTES,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self.verify = verify
        self._session: aiohttp.ClientSession | None = None
        # Asked once per (scheme, host): aiohttp's own `trust_env` asks on every request,
        # which doubles the CPU a request costs.
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            verify = httpx.create_ssl_context() if self.verify is True else self.verify
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, keepalive_timeout=KEEPALIVE_SECONDS, ssl=verify
            )
            # No cookie jar: every request carries what httpx put on it, nothing more.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body (Ferry sends none): read it whole
            body = await request.aread()
        try:
            async with self._opened().request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # httpx has quoted it already
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                data=body or None,
                allow_redirects=False,
                auto_decompress=False,
                proxy=self._proxy_for(request.url),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # waiting for a pooled connection, and more
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as response:
                content = await self._read(response)
                return httpx.Response(
                    response.status,
                    headers=response.raw_headers,
                    stream=httpx.ByteStream(content),
                    request=request,
                    extensions={
                        "http_version": b"HTTP/1.1",
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
                    },
                )
        except aiohttp.ClientError as exc:
            raise _translated(exc, request) from exc
        except TimeoutError as exc:  # a timeout aiohttp did not wrap: its `connect` (the pool)
            raise httpx.PoolTimeout("no connection free in time", request=request) from exc

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy the environment names for `url` (`HTTP(S)_PROXY`, less `NO_PROXY`)."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            # In the standard library on every platform, missing from its type stubs.
            bypass = urllib.request.proxy_bypass_environment(url.host, proxies)  # type: ignore[attr-defined]
            self._proxies[key] = None if bypass else proxies.get(url.scheme)
        return self._proxies[key]

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise ResponseTooLarge(
                f"the response declares {declared} bytes; at most {self.max_body_bytes}"
                " are accepted"
            )
        parts: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ResponseTooLarge(
                    f"the response is larger than the {self.max_body_bytes} bytes accepted"
                )
            parts.append(chunk)
        return b"".join(parts)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _translated(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """The httpx error that httpx's own transport would have raised for `exc`."""
    message = str(exc) or type(exc).__name__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        kind = httpx.RemoteProtocolError
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind = httpx.ReadError
    else:
        kind = httpx.NetworkError
    return kind(message, request=request)
