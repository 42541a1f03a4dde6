"""Line frames for the USB-serial link: ``<body>*<crc32 as 8 hex digits>\\n``.

Plain Python: runs on the board (MicroPython) and on the host (CPython). The CRC is
binascii.crc32 of the ASCII body, so a flipped bit anywhere in the line is caught.
"""

import binascii

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_SEP = const(42)  # ord("*")


def encode(body):
    """Frame an ASCII body (str) as bytes ready to write, newline included."""
    b = body.encode()
    return b + b"*%08x\n" % (binascii.crc32(b) & 0xFFFFFFFF)


def decode(line):
    """Return the body (str) of a framed line (bytes), or None if it is malformed.

    A line is malformed when it has no ``*``, a checksum that is not 8 hex digits, a
    checksum that does not match, or bytes that are not ASCII.
    """
    line = line.rstrip(b"\r\n")
    cut = line.rfind(b"*")
    if cut < 0 or len(line) - cut != 9:
        return None
    body = line[:cut]
    try:
        crc = int(line[cut + 1:], 16)
        if crc != binascii.crc32(body) & 0xFFFFFFFF:
            return None
        return body.decode("ascii")
    except (ValueError, UnicodeError):
        return None


def body_len(buf, n):
    """Length of the body of the framed line buf[:n] (no newline), or -1 if malformed.

    Same rules as decode (last '*', 8 hex digits, CRC-32 of the body, ASCII body),
    checked in place: a 7 KB MODEL line needs no copies before its JSON is parsed.
    """
    while n and (buf[n - 1] == 13 or buf[n - 1] == 10):  # as decode's rstrip
        n -= 1
    cut = n - 9
    if cut < 0 or buf[cut] != _SEP:
        return -1
    mv = memoryview(buf)
    try:
        crc = int(bytes(mv[cut + 1:n]), 16)
    except ValueError:
        return -1
    if crc != binascii.crc32(mv[:cut]) & 0xFFFFFFFF:
        return -1
    for k in range(cut):
        if buf[k] > 127:
            return -1
    return cut
