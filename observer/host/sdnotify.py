"""sd_notify(3) without libsystemd: service state and watchdog pings for systemd.

systemd passes $NOTIFY_SOCKET to a Type=notify service: an AF_UNIX datagram socket, a path
or an abstract address written with a leading '@'. Each message is newline-separated
KEY=value pairs:

    READY=1                       startup finished (probes attached, accounts seeded)
    RELOADING=1 + MONOTONIC_USEC  a reload began (systemd 253+ needs the timestamp for
                                  Type=notify-reload; Type=notify takes it too); READY=1 ends it
    STOPPING=1                    shutting down: cleanup follows
    WATCHDOG=1                    alive; due every $WATCHDOG_USEC (feed at half of it)
    STATUS=text                   one line for `systemctl status`

Sending never blocks and never raises: a full or absent socket drops the message (counted),
and without $NOTIFY_SOCKET every call is a no-op returning False.
"""

from __future__ import annotations

import os
import socket
import time

ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as a sendto() address: an absolute path, or '@name' for the
    abstract namespace. Anything else (relative paths, vsock: addresses) is unsupported."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_usec(environ, pid: int) -> int | None:
    """The watchdog timeout in microseconds when it is meant for process `pid`: systemd sets
    $WATCHDOG_PID to the main process, so a child that inherited the variables ignores them."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None


class Notifier:
    """One service's channel to systemd. `clock` is CLOCK_MONOTONIC in seconds (tests pass
    their own)."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None,
                 clock=time.monotonic):
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.clock = clock
        self.sent = 0
        self.dropped = 0
        self.last_ping: float | None = None
        self.sock = None
        if address is not None:
            self.sock = socket.socket(socket.AF_UNIX,
                                      socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ=None, unset: bool = True) -> "Notifier":
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID; with `unset` they are
        removed from the environment, so that hooks and other children do not inherit them."""
        env = os.environ if environ is None else environ
        notifier = cls(socket_address(env.get("NOTIFY_SOCKET")), watchdog_usec(env, os.getpid()))
        if unset:
            for key in ENV:
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    def send(self, **fields) -> bool:
        """notify(READY=1, STATUS="...") -> 'READY=1\\nSTATUS=...'. True when sent."""
        if self.sock is None:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            self.sock.sendto(message.encode("utf-8", "backslashreplace"), self.address)
        except OSError:  # EAGAIN (queue full), ENOENT/ECONNREFUSED (no systemd listening)
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def reloading(self, status: str | None = None) -> bool:
        fields = {"RELOADING": 1, "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def stopping(self, status: str | None = None) -> bool:
        fields = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def extend_watchdog(self, usec: int) -> bool:
        """A new watchdog timeout for the rest of the run (WATCHDOG_USEC=, systemd 236+)."""
        if self.watchdog_interval is None or usec <= self.watchdog_usec:
            return False
        if not self.send(WATCHDOG_USEC=int(usec)):
            return False
        self.watchdog_usec = int(usec)
        return True

    def watchdog(self) -> bool:
        """WATCHDOG=1 now."""
        ok = self.send(WATCHDOG=1)
        if ok:
            self.last_ping = self.clock()
        return ok

    def feed(self) -> bool:
        """WATCHDOG=1 when half the timeout has passed since the last ping; call it from the
        main loop as often as it likes. True when a ping went out."""
        interval = self.watchdog_interval
        if interval is None:
            return False
        if self.last_ping is not None and self.clock() - self.last_ping < interval:
            return False
        return self.watchdog()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _one_line(value) -> str:
    """A value must not break the KEY=value framing."""
    return str(value).replace("\n", " ")
