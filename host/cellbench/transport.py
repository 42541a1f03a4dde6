"""The byte transport to a real board: its USB serial port (pyserial).

Same interface as the simulator's ``SimBoard``: ``write(data)``, ``readline()`` (one
line of bytes, ``b""`` when nothing arrived within the timeout), ``close()``. Framing,
checksums and re-sends are the link's business (cellbench.link), not the transport's.
"""

from .errors import InputError


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
        # Bytes left from a previous session would look like the start of this one.
        self._serial.reset_input_buffer()

    def write(self, data):
        """Write all bytes (a framed line)."""
        self._serial.write(data)
        self._serial.flush()

    def readline(self):
        """One line including its newline, a partial line, or b"" after the timeout."""
        return self._serial.readline()

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
