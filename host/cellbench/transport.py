"""The byte transport to a board: one declared interface, and a real board's serial port.

Every transport (a USB serial port here, the simulated board's process and a detached
simulated board in cellbench.sim) is a :class:`Transport`, as mpremote's transports are:
``readline(timeout_s)``, ``write(data)``, ``eof``, ``close()``. Framing, checksums and
re-sends are the link's business (cellbench.link), not the transport's.
"""

from abc import ABC, abstractmethod

from .errors import InputError

MAX_PARTIAL = 1 << 16  # longer than any frame (docs/link.md: 12288 bytes)


class Transport(ABC):
    """A line-oriented byte stream to a board.

    ``readline(timeout_s)`` returns one whole line including its newline; when none
    completed within ``timeout_s`` seconds it returns ``b""`` or raises TimeoutError (both
    mean "nothing yet"). ``eof`` is True once the stream can deliver nothing more (the
    board's process ended); a serial port never reaches it. ``write(data)`` writes all
    bytes or raises OSError. ``close()`` may be called twice.
    """

    @abstractmethod
    def readline(self, timeout_s=None) -> bytes:
        """One line with its newline; b"" (or TimeoutError) when none came in ``timeout_s``."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Write all of ``data`` (one or more framed lines)."""

    # True once nothing more can arrive (an attribute or a property of the transport).
    eof = False

    @abstractmethod
    def close(self) -> None:
        """Release the stream; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Interruptible(Transport):
    """A board's transport that turns a requested pause or stop into KeyboardInterrupt at
    the session's next read: the one point where every message taken from the link has
    been logged (the link reads only once the caller asked for the next message) and
    nothing is half done. A KeyboardInterrupt raised anywhere else (in the middle of
    writing a row) could leave the log one row short of its count, or lose a record the
    board then frees.

    ``armed`` while the session follows a run; ``request`` is what was asked ("pause",
    "stop", "ctrl-c"). The interrupt is raised once, so the session's own PAUSE/STOP and
    the reads that follow go through. Everything else (reply_timeout_s, stderr_text,
    truth_path, ...) is the wrapped transport's.
    """

    def __init__(self, inner):
        self.inner = inner
        self.armed = False
        self.request = None

    def readline(self, timeout_s=None):
        if self.armed and self.request:
            self.armed = False
            raise KeyboardInterrupt(self.request)
        return self.inner.readline(timeout_s)

    def write(self, data):
        self.inner.write(data)

    @property
    def eof(self):
        return self.inner.eof

    def __getattr__(self, name):  # only for names not found on self
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def close(self):
        self.inner.close()


class SerialTransport(Transport):
    """A board on a serial port. ``timeout_s`` bounds a ``readline`` given no timeout.

    ``eof`` stays False: a serial port never reaches end of stream, it only times out."""

    def __init__(self, port, baud=115200, timeout_s=0.5):
        import serial  # imported here so the host works without pyserial for sim-only use

        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=timeout_s,
                                         write_timeout=max(2.0, timeout_s))
        except (serial.SerialException, ValueError, OSError) as exc:
            raise InputError(f"port: cannot open {port}: {exc}") from None
        self.port = port
        self.timeout_s = timeout_s
        self._partial = b""  # the start of a line whose end had not arrived at the timeout
        # Bytes left from a previous session would look like the start of this one.
        self._serial.reset_input_buffer()

    def write(self, data):
        """Write all bytes (a framed line)."""
        self._serial.write(data)
        self._serial.flush()

    def readline(self, timeout_s=None):
        """One whole line including its newline, or b"" when none completed within the timeout.

        A line cut by the timeout is kept and completed by the next call, so the link
        never sees half a line (which would count as a checksum error and cost a re-send).
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        if self._serial.timeout != limit:
            self._serial.timeout = limit
        data = self._serial.readline()
        if not data.endswith(b"\n"):
            self._partial += data
            if len(self._partial) > MAX_PARTIAL:  # noise with no newline: let the link see it
                data, self._partial = self._partial, b""
                return data
            return b""
        line, self._partial = self._partial + data, b""
        return line

    def close(self):
        """Close the port; safe to call twice."""
        if self._serial.is_open:
            self._serial.close()


def list_ports():
    """Serial ports that look like boards: list of (device, description)."""
    from serial.tools import list_ports as lp

    return [(p.device, p.description or "") for p in lp.comports()]
