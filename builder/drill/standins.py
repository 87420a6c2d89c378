"""Loopback stand-ins for the outside world a drill needs: an identity provider and a service.

Both are ``ThreadingHTTPServer``s on 127.0.0.1 with an OS-chosen port, served
from a daemon thread and stopped cleanly with ``stop()``. The identity
provider issues opaque tokens to known client ids and can be stopped to
simulate the outage. The service accepts identity-provider tokens on its
normal route and, on its break-glass route, only a bearer token whose
sha256 equals an enrolled public part (``sha256:<hex>``), as enrolment sets
it up. Neither ever logs a token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs

TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
NORMAL_PATH = "/api/deploy"
BREAKGLASS_PATH = "/breakglass/deploy"


class _Server:
    """A loopback HTTP server in a thread; subclasses provide the handler."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.stand_in = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._running = False
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        """Stop serving and release the port; calling it twice is harmless."""
        if self._running:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._running = False
        self._httpd.server_close()

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self.calls.append((path, status))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server_version = "breakglass-standin"

    def log_message(self, format: str, *args: Any) -> None:
        # the default writes request lines to stderr; the drill keeps its own record
        pass

    def _stand_in(self) -> Any:
        return self.server.stand_in  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, 65536)) if length > 0 else b""

    def _reply(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode("utf-8")
        # record before replying so that a caller who saw the reply also sees the record
        self._stand_in().record(self.path, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _bearer(self) -> str | None:
        value = self.headers.get("Authorization") or ""
        return value[7:].strip() if value.startswith("Bearer ") else None


class _IdentityHandler(_Handler):
    def do_POST(self) -> None:
        idp: IdentityProvider = self._stand_in()
        if self.path != TOKEN_PATH:
            self._reply(404, {"error": "not_found"})
            return
        client_id = _client_id(self._body(), self.headers.get("Content-Type") or "")
        if client_id is None or client_id not in idp.client_ids:
            self._reply(401, {"error": "invalid_client"})
            return
        self._reply(200, {"access_token": idp.issue(), "token_type": "Bearer", "expires_in": 300})


def _client_id(body: bytes, content_type: str) -> str | None:
    text = body.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            value = json.loads(text).get("client_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    values = parse_qs(text).get("client_id")
    return values[0] if values else None


class IdentityProvider(_Server):
    """Issues opaque bearer tokens to ``client_ids`` on ``POST /token``."""

    def __init__(self, client_ids: Iterable[str]) -> None:
        super().__init__(_IdentityHandler)
        self.client_ids = frozenset(client_ids)
        self._issued: set[str] = set()

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._issued.add(token)
        return token

    def issued(self, token: str) -> bool:
        """Whether this provider issued ``token``: the service's introspection call."""
        with self._lock:
            return token in self._issued


class _ServiceHandler(_Handler):
    def do_POST(self) -> None:
        service: ProtectedService = self._stand_in()
        self._body()
        token = self._bearer()
        if self.path == NORMAL_PATH:
            ok = token is not None and service.identity.issued(token)
        elif self.path == BREAKGLASS_PATH:
            ok = token is not None and service.enrolled(token)
        else:
            self._reply(404, {"error": "not_found"})
            return
        if ok:
            self._reply(200, {"deployed": True, "route": self.path})
        else:
            self._reply(401, {"error": "unauthorized"})


class ProtectedService(_Server):
    """Accepts identity-provider tokens on the normal route, enrolled tokens on the break-glass one.

    ``enrolled_publics`` are public parts ``sha256:<hex>`` of break-glass
    tokens, exactly as the enrolment file lists them.
    """

    def __init__(self, identity: IdentityProvider, enrolled_publics: Iterable[str]) -> None:
        super().__init__(_ServiceHandler)
        self.identity = identity
        self.enrolled_publics = frozenset(enrolled_publics)

    @property
    def normal_url(self) -> str:
        return self.base_url + NORMAL_PATH

    @property
    def breakglass_url(self) -> str:
        return self.base_url + BREAKGLASS_PATH

    def enrolled(self, token: str) -> bool:
        public = "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()
        return any(hmac.compare_digest(public, p) for p in self.enrolled_publics)
