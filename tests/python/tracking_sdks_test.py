"""Drive the gateway's tracking API with Segment's and RudderStack's Python libraries.

The script configures the public ``segment-analytics-python`` and
``rudder-sdk-python`` packages with the gateway as their host and an API key
as their write key, and lets each library batch, compress and send the calls
the way it does for any backend. Each library runs the same scenario for its
own shopper. The end-to-end test ``tests/tracking_sdks.rs`` then reads the
profiles and checks that every call landed exactly once.

Scenario, for a prefix ``P`` (one per run of a library):

- anonymous ``P-anon``: one page ``Home``, one screen ``Catalog`` and one
  ``Product Viewed`` track call for product ``p-0``;
- user ``P-user``: one identify call with traits ``email`` and ``plan``,
  120 ``Product Viewed`` track calls for products ``p-1`` to ``p-120`` (more
  than the 100 messages a library puts in one batch), two screen calls
  ``Cart``, one page ``Checkout``, one group call placing the user in
  ``P-acme`` with traits ``name`` and ``employees``, one alias call from
  ``P-anon`` to ``P-user``, and one ``Order Completed`` track call with
  revenue 99.5.

Runs, with ``R`` the run id:

- ``seg-R``: Segment's module-level client (``analytics.write_key``,
  ``analytics.host``), without gzip, which is its default;
- ``rud-R``: RudderStack's module-level client (``rudder_analytics.write_key``,
  ``rudder_analytics.dataPlaneUrl``), which gzips every request by default;
- ``retry-R``: a Segment ``Client`` with ``gzip=True`` pointed at a local
  proxy in front of the gateway. The proxy forwards the first request and
  then answers 500 instead of the gateway's reply, so the library sends the
  same batch again after the gateway stored it.

Both libraries post every batch to ``/v1/batch`` with the write key as the
HTTP Basic user name.

Requirements: the packages pinned in ``.ci/requirements.txt``. ``.ci/run``
installs them into a virtualenv and exports its interpreter as
``RTIM_PYTHON``.

Environment:

- ``RTIM_GATEWAY_URL``: base URL of the gateway, such as ``http://127.0.0.1:8080``.
- ``RTIM_API_KEY``: an API key with the ``write`` scope.
- ``RTIM_RUN_ID``: a token that makes the shopper ids of this run unique.

The script prints one line per check and closes with ``N passed, M failed``.
It exits 0 when every check passed, 1 when a check failed and 2 when the
environment is incomplete.
"""

from __future__ import annotations

import http.server
import os
import sys
import threading
import traceback
import urllib.error
import urllib.request
from typing import Callable

import rudderstack.analytics as rudder_analytics
import segment.analytics as analytics
from segment.analytics import Client as SegmentClient

REQUIRED_ENV = ("RTIM_GATEWAY_URL", "RTIM_API_KEY", "RTIM_RUN_ID")
# Products viewed by the identified user: more than one library batch of 100.
USER_VIEWS = 120
# Seconds the proxy waits for the gateway's reply.
PROXY_TIMEOUT_SECONDS = 30.0
# Headers the proxy passes on to the gateway.
FORWARDED_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "User-Agent")


class UsageError(Exception):
    """A problem with the environment, not with the gateway."""


def read_environment() -> dict[str, str]:
    """Return the required variables, or raise ``UsageError`` naming the missing ones."""
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise UsageError(f"missing environment variables: {', '.join(missing)}. See the module docstring.")
    return {name: os.environ[name] for name in REQUIRED_ENV}


def run_scenario(client, prefix: str) -> None:
    """Make the scenario's calls for ``prefix`` through ``client``, a library client or module."""
    anonymous_id = f"{prefix}-anon"
    user_id = f"{prefix}-user"
    client.page(anonymous_id=anonymous_id, name="Home", properties={"path": "/"})
    client.screen(anonymous_id=anonymous_id, name="Catalog")
    client.track(
        anonymous_id=anonymous_id,
        event="Product Viewed",
        properties={"product_id": "p-0", "price": 10.0, "category": "phones"},
    )
    client.identify(user_id=user_id, traits={"email": f"{prefix}@example.com", "plan": "gold"})
    for number in range(1, USER_VIEWS + 1):
        client.track(
            user_id=user_id,
            event="Product Viewed",
            properties={"product_id": f"p-{number}", "price": 10.0, "category": "phones"},
        )
    client.screen(user_id=user_id, name="Cart")
    client.screen(user_id=user_id, name="Cart")
    client.page(user_id=user_id, name="Checkout")
    client.group(user_id=user_id, group_id=f"{prefix}-acme", traits={"name": "Acme", "employees": 42})
    client.alias(previous_id=anonymous_id, user_id=user_id)
    client.track(user_id=user_id, event="Order Completed", properties={"order_id": f"{prefix}-o1", "revenue": 99.5})


class FailFirstProxy(http.server.ThreadingHTTPServer):
    """Forwards POST requests to the gateway and records them.

    The reply to the first request is replaced by a 500 after the gateway
    handled it, as when a response is lost on the way back, so the client
    sends the same batch again.
    """

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        # (path, Content-Encoding, gateway status, status sent to the client) per request.
        self.requests: list[tuple[str, str, int, int]] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FailFirstProxy

    def do_POST(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name: self.headers[name] for name in FORWARDED_HEADERS if self.headers.get(name)}
        request = urllib.request.Request(self.server.upstream + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=PROXY_TIMEOUT_SECONDS) as response:
                status, reply = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, reply = error.code, error.read()
        with self.server.lock:
            first = not self.server.requests
            sent = 500 if first else status
            encoding = self.headers.get("Content-Encoding", "")
            self.server.requests.append((self.path, encoding, status, sent))
        if first:
            reply = b'{"detail": "reply dropped by the test proxy"}'
        self.send_response(sent)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature fixed by the base class)
        """Keep request lines out of the test output."""


def build_checks(env: dict[str, str]) -> list:
    """Return the checks as ``(name, function)`` pairs, in the order they run."""
    gateway = env["RTIM_GATEWAY_URL"].rstrip("/")
    key = env["RTIM_API_KEY"]
    run_id = env["RTIM_RUN_ID"]
    errors: list[str] = []

    def record_error(error, batch) -> None:
        errors.append(f"{error} ({len(batch)} messages)")

    def segment_module() -> None:
        analytics.write_key = key
        analytics.host = gateway
        analytics.on_error = record_error
        run_scenario(analytics, f"seg-{run_id}")
        analytics.flush()
        analytics.shutdown()
        assert not errors, f"Segment's library reported errors: {errors}"

    def rudderstack_module() -> None:
        rudder_analytics.write_key = key
        rudder_analytics.dataPlaneUrl = gateway
        rudder_analytics.on_error = record_error
        run_scenario(rudder_analytics, f"rud-{run_id}")
        rudder_analytics.flush()
        rudder_analytics.shutdown()
        assert not errors, f"RudderStack's library reported errors: {errors}"

    def segment_retry_with_gzip() -> None:
        proxy = FailFirstProxy(gateway)
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        try:
            client = SegmentClient(key, host=proxy.url, gzip=True, on_error=record_error)
            run_scenario(client, f"retry-{run_id}")
            client.flush()
            client.shutdown()
        finally:
            proxy.shutdown()
        assert not errors, f"Segment's library reported errors: {errors}"
        requests = proxy.requests
        assert len(requests) >= 3, f"expected at least two batches and one resend, got {requests}"
        assert all(path == "/v1/batch" for path, *_ in requests), f"paths: {requests}"
        assert all(encoding == "gzip" for _, encoding, *_ in requests), f"encodings: {requests}"
        assert all(status == 200 for _, _, status, _ in requests), f"gateway statuses: {requests}"
        assert requests[0][3] == 500, f"the first reply was not replaced: {requests}"
        print(f"     proxy saw {len(requests)} requests, the first reply replaced by a 500", flush=True)

    return [
        ("Segment module client, uncompressed", segment_module),
        ("RudderStack module client, gzip", rudderstack_module),
        ("Segment client resends a batch whose reply was lost, gzip", segment_retry_with_gzip),
    ]


def run_checks(checks: list[tuple[str, Callable[[], None]]]) -> int:
    """Run every check and print one line for each, then a summary. Return the number of failures."""
    passed = 0
    failed = 0
    for name, check in checks:
        try:
            check()
        except AssertionError as error:
            failed += 1
            print(f"FAIL {name}: {error}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}: unexpected error", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main() -> int:
    try:
        env = read_environment()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if run_checks(build_checks(env)) else 0


if __name__ == "__main__":
    sys.exit(main())
