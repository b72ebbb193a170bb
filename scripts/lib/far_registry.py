#!/usr/bin/env python3
"""A far registry for benchmarks: a reverse proxy in front of a local
docker-registry that answers every request only after a fixed delay, as a
registry one round trip away does (any number of requests wait at once).
It counts the requests it forwards, the ranged ones among them, and the
bytes it sends back.

    far_registry.py UPSTREAM_PORT PORT DELAY_MS

    GET /_stats   {"requests": N, "ranges": N, "bytes": N}
    GET /_reset   zero the counters

Prints "ready" on stdout once it listens on 127.0.0.1:PORT.
"""

import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORWARDED = ("Accept", "Range", "Authorization", "User-Agent")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.requests = self.ranges = self.bytes = 0

    def add(self, ranged, sent):
        with self.lock:
            self.requests += 1
            self.ranges += 1 if ranged else 0
            self.bytes += sent


def main():
    upstream, port, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    stats = Stats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply_json(self, value):
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self, method):
            if self.path == "/_stats":
                with stats.lock:
                    return self.reply_json(
                        {"requests": stats.requests, "ranges": stats.ranges, "bytes": stats.bytes}
                    )
            if self.path == "/_reset":
                stats.reset()
                return self.reply_json({})
            time.sleep(delay_ms / 1000.0)
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
            headers = {k: self.headers[k] for k in FORWARDED if self.headers.get(k)}
            conn.request(method, self.path, headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status)
            length = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            body = resp.read() if length is None else None
            self.send_header("Content-Length", str(len(body)) if body is not None else length)
            self.end_headers()
            sent = 0
            if method != "HEAD":
                if body is not None:
                    self.wfile.write(body)
                    sent = len(body)
                else:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
            conn.close()
            stats.add("Range" in self.headers, sent)

        def do_GET(self):
            self.forward("GET")

        def do_HEAD(self):
            self.forward("HEAD")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
