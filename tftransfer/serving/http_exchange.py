"""One HTTP request to a model server, within an overall deadline and a size cap, every
failure of the transport one sentence (``UserError``).

``urllib``'s timeout applies to each socket operation: a server sending one byte a second
held ``predict --timeout 3`` for 91 s, and a 300 MB body was read whole. Here the deadline
covers the whole exchange (connecting, sending, the status line, the headers and the body:
each read waits at most for the time left), the body is read up to ``max_bytes``, and a
connection closed without an answer, a status line that is not HTTP or a body shorter than
announced are named as such instead of ending in a traceback.

Standard library only (``http.client``), so that ``predict`` starts fast. Proxies from the
environment are not used: the client talks to the server it is given.
"""

from __future__ import annotations

import http.client
import io
import math
import socket
import time
import urllib.parse
from dataclasses import dataclass

from tftransfer.errors import UserError

_CHUNK = 1 << 16


class Unreachable(UserError):
    """No connection to the server could be made (refused, unknown host, timed out)."""


@dataclass(frozen=True)
class Answer:
    """A server's answer: its HTTP status and its whole body."""

    status: int
    body: bytes


def check_timeout(timeout) -> float:
    """``timeout`` as seconds, which must be a finite number above 0 (``--timeout``)."""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--timeout must be a finite number of seconds above 0, got "
                        f"{timeout!r}.")
    return seconds


def exchange(url: str, body: bytes | None, timeout: float, max_bytes: int) -> Answer:
    """Sends one request (GET without ``body``, else a JSON POST) and reads the answer.

    Args:
      url: ``http://`` or ``https://`` URL.
      body: the JSON request body, or None.
      timeout: seconds for the whole exchange (``check_timeout``).
      max_bytes: the largest body accepted.

    Returns:
      The status and body, whatever the status (the caller reads error answers).

    Raises:
      Unreachable: no connection could be made.
      UserError: the server did not answer in time, closed the connection, did not speak
        HTTP, sent less than it announced or more than ``max_bytes``.
    """
    seconds = check_timeout(timeout)
    deadline = time.monotonic() + seconds
    parts = urllib.parse.urlsplit(url)
    connection = _connection(parts, url, deadline)
    try:
        return _request(connection, parts, body, deadline, max_bytes)
    except (TimeoutError, socket.timeout):
        raise UserError(f"{url} did not answer within {seconds:g}s (--timeout, for the whole "
                        f"answer).") from None
    except http.client.IncompleteRead as error:
        raise UserError(f"{url} closed the connection after {len(error.partial)} of the "
                        f"{len(error.partial) + (error.expected or 0)} bytes it announced; "
                        f"the answer is cut short.") from None
    except http.client.RemoteDisconnected:
        raise UserError(f"{url} closed the connection without answering; is it TF Serving's "
                        f"REST API (port 8501 by default)?") from None
    except http.client.HTTPException as error:  # a bad status line, too long a header, ...
        raise UserError(f"{url} did not answer in HTTP ({type(error).__name__}: "
                        f"{str(error)[:80]!r}); is it TF Serving's REST API?") from None
    except OSError as error:  # reset by the peer, a broken pipe, ...
        raise UserError(f"The connection to {url} failed ({error.strerror or error}).") from None
    finally:
        connection.close()


def _connection(parts, url: str, deadline: float) -> http.client.HTTPConnection:
    """An open connection to the URL's host, made within the deadline."""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{url} is not an http:// or https:// URL of a server.")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        connection = kind(parts.hostname, parts.port, timeout=_left(deadline))
        connection.connect()
    except (TimeoutError, socket.timeout):
        raise Unreachable(f"Cannot reach {url} (no connection within the timeout); is the "
                          f"server running?") from None
    except ValueError as error:  # a port that is not a number
        raise UserError(f"{url} is not a usable URL ({error}).") from None
    except OSError as error:
        raise Unreachable(f"Cannot reach TF Serving at {url} ({_reason(error)}); is the "
                          f"server running?") from None
    connection.response_class = _bounded_response(deadline)
    return connection


def _request(connection, parts, body, deadline: float, max_bytes: int) -> Answer:
    url = urllib.parse.urlunsplit(parts)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.sock.settimeout(_left(deadline))  # sendall's timeout covers the whole body
    connection.request("GET" if body is None else "POST", path, body=body, headers=headers)
    response = connection.getresponse()
    announced = response.getheader("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise _too_large(url, f"announced {int(announced):,} bytes", max_bytes)
    data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(url, f"sent more than {max_bytes:,} bytes", max_bytes)
    if response.length:  # read(amt) returns a short body as it is
        raise http.client.IncompleteRead(data, response.length)
    return Answer(response.status, data)


def _too_large(url: str, what: str, max_bytes: int) -> UserError:
    return UserError(f"{url} {what}, more than an answer to this request may have "
                     f"({max_bytes:,} bytes); refused without reading it whole.")


def _bounded_response(deadline: float):
    """An ``HTTPResponse`` class whose every socket read waits at most until ``deadline``."""

    class BoundedResponse(http.client.HTTPResponse):
        def __init__(self, sock, *args, **kwargs):
            super().__init__(sock, *args, **kwargs)
            # The socket's own reader, kept: it holds the socket open for the response
            # after the connection lets go of it (an answer with "Connection: close").
            raw = self.fp.detach()
            self.fp = io.BufferedReader(_DeadlineReader(raw, sock, deadline), _CHUNK)

    return BoundedResponse


class _DeadlineReader(io.RawIOBase):
    """A socket reader (``raw``) whose every read is given only the time left until the
    deadline."""

    def __init__(self, raw, sock, deadline: float):
        super().__init__()
        self.raw, self.sock, self.deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.sock.settimeout(_left(self.deadline))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _left(deadline: float) -> float:
    """Seconds left until ``deadline``; a timeout once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline has passed")
    return left


def _reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return str(error.strerror or error)
