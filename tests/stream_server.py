"""A real MPEG-TS-over-HTTP camera on loopback, for the watch tests and bench/live.py.

``python tests/stream_server.py FILE [--port P] [--rate BYTES_PER_S] [--die-after BYTES] [--loop]``
serves FILE to each GET as a progressive ``video/mp2t`` stream (paced at ``--rate``, or as fast as
the client reads), prints ``PORT <n>`` once listening, and with ``--die-after`` kills its own
process (``os._exit``, no goodbye) after sending that many bytes: a camera dying mid-stream.
``--loop`` repeats the file forever (an endless camera). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 188 * 64


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="bytes per second (0: as fast as read)")
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--loop", action="store_true")
    args = parser.parse_args(argv)
    data = args.file.read_bytes()
    sent_total = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            t0 = time.monotonic()
            sent = 0
            while True:
                for i in range(0, len(data), CHUNK):
                    piece = data[i : i + CHUNK]
                    if args.die_after and sent_total[0] + len(piece) > args.die_after:
                        os._exit(0)
                    try:
                        self.wfile.write(piece)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    sent += len(piece)
                    sent_total[0] += len(piece)
                    if args.rate:
                        ahead = sent / args.rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                if not args.loop:
                    return

        def log_message(self, *a) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
