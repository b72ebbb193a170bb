#!/usr/bin/env python3
"""A far HTTP chunk store for benchmarks: serves a dir store (GET /hh/hex)
and answers every request only after a fixed delay, as a store one round
trip away does; any number of requests wait at once (as S3 or a CDN allow).
It counts the chunk requests it answers and the bytes it sends.

    far_store.py ROOT PORT DELAY_MS

    GET /hh/<64 hex>   the blob, or 404
    GET /_stats        {"requests": N, "bytes": N, "in_flight_max": N}
    GET /_reset        zero the counters
    GET /_delay/<ms>   change the delay

Prints "ready" on stdout once it listens on 127.0.0.1:PORT.
"""

import asyncio
import json
import os
import re
import sys
import time

CHUNK = re.compile(rb"^/([0-9a-f]{2})/([0-9a-f]{64})$")


class Far:
    def __init__(self, root, delay_ms):
        self.root = root
        self.delay = delay_ms / 1000.0
        # FAR_LOG=PATH: one line per chunk request (start time, end time,
        # name), to see which fetches wait on which.
        self.log = open(os.environ["FAR_LOG"], "a") if os.environ.get("FAR_LOG") else None
        self.reset()

    def reset(self):
        self.requests = 0
        self.bytes = 0
        self.in_flight = 0
        self.in_flight_max = 0

    def open(self, shard, name):
        """The blob's file, open, or None."""
        if name[:2] != shard:
            return None
        try:
            return open(os.path.join(self.root, shard.decode(), name.decode()), "rb")
        except OSError:
            return None

    async def answer(self, path):
        """The status, and the body: bytes, or an open file to send."""
        m = CHUNK.match(path)
        if m:
            self.requests += 1
            start = time.monotonic()
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            body = self.open(m.group(1), m.group(2))
            if body is None:
                return 404, b""
            self.bytes += os.fstat(body.fileno()).st_size
            if self.log:
                print("%.3f %.3f %s" % (start, time.monotonic(), m.group(2).decode()),
                      file=self.log, flush=True)
            return 200, body
        if path == b"/_stats":
            stats = {"requests": self.requests, "bytes": self.bytes,
                     "in_flight_max": self.in_flight_max}
            return 200, json.dumps(stats).encode()
        if path == b"/_reset":
            self.reset()
            return 200, b"{}"
        if path.startswith(b"/_delay/"):
            self.delay = int(path[len(b"/_delay/"):]) / 1000.0
            return 200, b"{}"
        return 404, b""

    async def serve(self, reader, writer):
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].split(b" ")
                if len(line) < 2 or line[0] not in (b"GET", b"HEAD"):
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                status, body = await self.answer(line[1])
                reason = b"OK" if status == 200 else b"Not Found"
                if isinstance(body, bytes):
                    size = len(body)
                else:
                    size = os.fstat(body.fileno()).st_size
                writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, size))
                if isinstance(body, bytes):
                    if line[0] == b"GET":
                        writer.write(body)
                    await writer.drain()
                else:
                    # Zero-copy: the store's own CPU must not be what the
                    # benchmark measures.
                    with body:
                        await writer.drain()
                        if line[0] == b"GET":
                            await loop.sendfile(writer.transport, body)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


async def main():
    root, port, delay_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    far = Far(root, delay_ms)
    server = await asyncio.start_server(far.serve, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
