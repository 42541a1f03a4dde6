"""Line frames for the USB-serial link: ``<body>*<crc32 as 8 hex digits>\\n``.

Plain Python: runs on the board (MicroPython) and on the host (CPython). The CRC is
binascii.crc32 of the ASCII body, so a flipped bit anywhere in the line is caught.
"""

import binascii

SEP = 42  # ord("*")


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
