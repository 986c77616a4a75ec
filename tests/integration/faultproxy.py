"""A small TCP proxy that injects real network faults between the collector and PostgreSQL.

``FaultProxy(upstream)`` listens on 127.0.0.1:<port> and forwards to ``upstream``. Faults:

* :meth:`refuse` -- stop listening: new connections get ECONNREFUSED (established ones live on);
* :meth:`cut` -- reset every established connection (RST, as a crashed middlebox or server);
* :meth:`blackhole` -- accept new connections and keep the established ones, but forward
  nothing in either direction (a frozen network path: no error, no answer);
* :meth:`heal` -- back to forwarding (listening again on the same port).

The upstream can change (:attr:`upstream`), e.g. after a container restart maps a new port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time


def _rst(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []
        self._closed = False
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    # -- control ------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def refuse(self) -> None:
        with self._lock:
            self.mode = "refuse"
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() and stops listening
            listener.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, set()
            held, self._held = self._held, []
        for a, b in pairs:
            _rst(a)
            _rst(b)
        for s in held:
            _rst(s)

    def blackhole(self) -> None:
        with self._lock:
            self.mode = "blackhole"
        if self._listener is None:
            self._listen()

    def heal(self) -> None:
        with self._lock:
            self.mode = "pass"
            held, self._held = self._held, []
        for s in held:
            _rst(s)  # clients that connected into the black hole see a reset, then reconnect
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self.refuse()
        self.cut()

    @property
    def connections(self) -> int:
        return len(self._pairs)

    # -- plumbing -----------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed (refuse/close)
            if self._closed:
                _rst(client)
                return
            if self.mode == "blackhole":
                with self._lock:
                    self._held.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _rst(client)  # upstream down: the client sees a reset, as with a dead server
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        peer = {client: server, server: client}
        try:
            while pair in self._pairs:
                if self.mode == "blackhole":
                    time.sleep(0.05)  # hold everything: the bytes stay in the kernel buffers
                    continue
                readable, _, _ = select.select([client, server], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs.discard(pair)
            _rst(client)
            _rst(server)
