"""Servers on 127.0.0.1 that break HTTP or TF Serving's answers, for the tests and the
reliability probes of the ``predict`` client. Standard library only, so that a probe starts
one in a moment:

    python -m tests.bad_servers KIND URL_FILE   # serves KIND (see REPLIES) until killed,
                                                # after writing its URL to URL_FILE
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import sys
import threading

GOOD_ROW = {"probabilities": [0.5, 0.25, 0.25], "classes": [0, 1], "class_names": ["a", "b"]}


class RawServer:
    """A TCP server on 127.0.0.1 (random port, own thread) that reads each request and
    answers with ``reply(connection, stopped)``, whatever that sends."""

    def __init__(self, reply):
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so that the loop sees ``stopped`` soon
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(10)
        self.listener.close()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            with connection:
                connection.settimeout(10)
                try:
                    read_request(connection)
                    self.reply(connection, self.stopped)
                except OSError:  # the client gave up: what a test wants to see
                    pass


def read_request(connection) -> bytes:
    """One HTTP request's body, read after its head (Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536) or b"\r\n\r\n"
    head, body = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += connection.recv(65536)
    return body


def answer(body: bytes, length: int | None = None):
    """A reply sending one HTTP answer (``length``: the Content-Length announced)."""
    length = len(body) if length is None else length
    return lambda connection, stopped: connection.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode() + body)


def predictions(*rows) -> bytes:
    """A predict answer's body holding ``rows``."""
    return json.dumps({"predictions": list(rows)}).encode()


def trickle(connection, stopped, seconds: float = 6.0):
    """An answer announced whole, then sent one byte every 0.1 s for ``seconds``."""
    count = int(seconds * 10)
    connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {count}\r\n\r\n".encode())
    for _ in range(count):
        if stopped.wait(0.1):
            return
        connection.sendall(b" ")


def flood(connection, stopped):
    """An answer without a length, 8 MB of it."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    for _ in range(128):
        connection.sendall(b"[" * 65536)


REPLIES = {
    "close": lambda connection, stopped: None,
    "not_http": lambda connection, stopped: connection.sendall(b"SSH-2.0-OpenSSH_9\r\n"),
    "short_body": answer(b'{"predictions"', length=1000),
    "nested": answer(b"[" * 100_000 + b"]" * 100_000),
    "huge": answer(b"{}", length=300_000_000),
    "flood": flood,
    "trickle": functools.partial(trickle, seconds=60.0),
    "bad_predictions": answer(predictions({**GOOD_ROW, "classes": [0, 7]})),
}


def main(kind: str, url_file: str) -> None:
    """Serves ``REPLIES[kind]`` until killed, after writing its URL to ``url_file``."""
    with RawServer(REPLIES[kind]) as server:
        with open(url_file + ".tmp", "w") as handle:
            handle.write(server.url)
        os.rename(url_file + ".tmp", url_file)
        server.thread.join()


if __name__ == "__main__":
    main(*sys.argv[1:])
