"""A small IMDSv2 server on 127.0.0.1 for the bootstrap tests.

It stands in for EC2's instance metadata service, which cannot run here. It behaves like IMDSv2
with metadata tags enabled, as far as the bootstrap uses it: ``PUT /latest/api/token`` with a TTL
header issues a session token; every ``GET`` must carry a token it issued (401 otherwise); it
serves ``meta-data/instance-id``, ``meta-data/ami-id`` (when given) and ``meta-data/tags/instance/<key>``, and 404 for the rest.
Tags can be changed while it runs, as ``condor_annex extend`` changes the expiry tag, and tag reads
can be made to fail (HTTP 500) as a metadata service in trouble answers.
"""

from __future__ import annotations

import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/latest/api/token"
TAGS_PREFIX = "/latest/meta-data/tags/instance/"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
AMI_ID_PATH = "/latest/meta-data/ami-id"


class FakeImds:
    def __init__(self, instance_id: str, tags: dict[str, str], ami_id: str | None = None) -> None:
        self.instance_id = instance_id
        self.ami_id = ami_id  # meta-data/ami-id; None: 404
        self.tags = dict(tags)
        self.issued: set[str] = set()
        self.refused_gets = 0  # GETs without a valid session token (IMDSv1 style)
        self.served_gets = 0
        self.failing_tags = False  # answer tag reads with 500
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeImds":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _lookup(self, path: str) -> str | None:
        with self._lock:
            if path == INSTANCE_ID_PATH:
                return self.instance_id
            if path == AMI_ID_PATH:
                return self.ami_id
            if path.startswith(TAGS_PREFIX):
                return self.tags.get(urllib.parse.unquote(path[len(TAGS_PREFIX):]))
            return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _reply(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != TOKEN_PATH or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    self._reply(400)
                    return
                token = secrets.token_urlsafe(32)
                with imds._lock:
                    imds.issued.add(token)
                self._reply(200, token)

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with imds._lock:
                    valid = token in imds.issued
                    if not valid:
                        imds.refused_gets += 1
                if not valid:
                    self._reply(401)
                    return
                if imds.failing_tags and self.path.startswith(TAGS_PREFIX):
                    self._reply(500)
                    return
                value = imds._lookup(self.path)
                if value is None:
                    self._reply(404)
                    return
                with imds._lock:
                    imds.served_gets += 1
                self._reply(200, value)

        return Handler
