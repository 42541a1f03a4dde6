"""The byte transport to a real board: its USB serial port (pyserial).

Same interface as the simulator's ``SimBoard``: ``write(data)``, ``readline()`` (one
line of bytes, ``b""`` when nothing arrived within the timeout), ``close()``. Framing,
checksums and re-sends are the link's business (cellbench.link), not the transport's.
"""

from .errors import InputError

MAX_PARTIAL = 1 << 16  # longer than any frame (docs/link.md: 12288 bytes)


class SerialTransport:
    """A board on a serial port. ``timeout_s`` bounds each ``readline`` (then ``b""``)."""

    def __init__(self, port, baud=115200, timeout_s=0.5):
        import serial  # imported here so the host works without pyserial for sim-only use

        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=timeout_s,
                                         write_timeout=max(2.0, timeout_s))
        except (serial.SerialException, ValueError, OSError) as exc:
            raise InputError(f"port: cannot open {port}: {exc}") from None
        self.port = port
        self.eof = False  # a serial port never reaches end of stream; it only times out
        self._partial = b""  # the start of a line whose end had not arrived at the timeout
        # Bytes left from a previous session would look like the start of this one.
        self._serial.reset_input_buffer()

    def write(self, data):
        """Write all bytes (a framed line)."""
        self._serial.write(data)
        self._serial.flush()

    def readline(self):
        """One whole line including its newline, or b"" when none completed within the timeout.

        A line cut by the timeout is kept and completed by the next call, so the link
        never sees half a line (which would count as a checksum error and cost a re-send).
        """
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def list_ports():
    """Serial ports that look like boards: list of (device, description)."""
    from serial.tools import list_ports as lp

    return [(p.device, p.description or "") for p in lp.comports()]
