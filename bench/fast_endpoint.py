"""A fast HTTP/1.1 endpoint for the recovery benchmarks, in its own process (uvloop).

Answers 200 `{"ok":true}` with keep-alive (paths under /flaky/ answer 503 twice first;
paths under /outage/ answer 503 until `POST /control/up`), and counts per path the
requests and the peak of requests in flight (`GET /stats`, with `while_down`: the requests
/outage/ paths received while down).
Usage: python -m bench.fast_endpoint PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvloop

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
in_flight: dict[str, int] = {}
peak: dict[str, int] = {}
count: dict[str, int] = {}
outage = {"down": True, "while_down": 0}


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ", 2)[1]
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await reader.readexactly(length)
            if path == "/control/up":
                outage["down"] = False
                writer.write(OK)
                continue
            if path == "/stats":
                body = json.dumps({"count": count, "peak": peak, **outage}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                continue
            in_flight[path] = in_flight.get(path, 0) + 1
            peak[path] = max(peak.get(path, 0), in_flight[path])
            count[path] = count.get(path, 0) + 1
            await asyncio.sleep(0)  # let concurrent requests overlap, as a real server would
            in_flight[path] -= 1
            flaky = path.startswith("/flaky/") and count[path] <= 2
            down = path.startswith("/outage/") and bool(outage["down"])
            outage["while_down"] += down
            writer.write(UNAVAILABLE if flaky or down else OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
