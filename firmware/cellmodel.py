"""The cell model as the board reads it: a MODEL line's JSON text to the few members the
SoC filter (ekf.py) uses, with every number list as an array of the port's floats.

A model file is 5-9 KB of JSON; parsed whole by the json module it would be tens of KB of
objects on a heap the run has fragmented. read_model walks the text once and keeps only
what MODEL_KEYS names (docs/design.md gives the model format; docs/estimator.md what the
filter does with it). Plain Python: runs under MicroPython and CPython (host tests).
Loaded for MODEL only: ekfsetup.read imports it and ekf._setup drops it after, so the
reader's bytecode holds no heap while a run goes on.
"""

import gc

from circuit import MICROPYTHON, floats


class JsonError(ValueError):
    """The MODEL text is not valid JSON (or not a JSON object); ``field`` is the link's
    ERR field for it."""

    field = "json"


# What the filter reads of a model (docs/design.md): ALL keeps a value whole (lists of
# numbers become float arrays), a dict keeps only the listed members of an object, and
# everything else (provenance, fade, sim_*, ...) is checked and skipped, keeping nothing
# (its few numbers are parsed to check them and dropped at once).
ALL = 1
MODEL_KEYS = {"capacity_Ah": ALL, "r0_ohm": ALL, "rc": ALL, "hysteresis": ALL,
              "coulombic_efficiency": ALL, "estimator": ALL, "butler_volmer": ALL,
              "model_error": {"soc": ALL, "c_rate": ALL, "sigma_V": ALL, "look_tau_s": ALL},
              "ocv": {"soc": ALL, "voltage_V": ALL, "charge_V": ALL, "discharge_V": ALL}}
_WS = b" \t\r\n"
_NUM = b"+-0123456789.eE"


class _Reader:
    """A JSON reader over bytes (or a memoryview of a line buffer) that builds only
    what a ``keep`` pattern asks for. Numbers go through float() / int() of their text,
    as json.loads does, so the values are the same."""

    def __init__(self, buf):
        self.b = buf
        self.k = 0
        self.n = len(buf)

    def fail(self, what="not valid JSON"):
        raise JsonError(what)

    def peek(self):
        b, k, n = self.b, self.k, self.n
        while k < n and b[k] in _WS:
            k += 1
        self.k = k
        if k >= n:
            self.fail()
        return b[k]

    def expect(self, c):
        if self.peek() != c:
            self.fail()
        self.k += 1

    def value(self, keep):
        c = self.peek()
        if c == 123:  # {
            return self.obj(keep)
        if c == 91:   # [
            return self.arr(keep)
        if c == 34:   # "
            return self.string(keep)
        if c in _NUM:
            return self.number(keep)
        for word, v in ((b"true", True), (b"false", False), (b"null", None)):
            if bytes(self.b[self.k:self.k + len(word)]) == word:
                self.k += len(word)
                return v if keep else None
        self.fail()

    def obj(self, keep):
        self.k += 1
        out: dict = {}  # stays empty when skipped
        if self.peek() == 125:
            self.k += 1
            return out if keep else None
        while True:
            if self.peek() != 34:
                self.fail()
            key = self.string(ALL if keep else None)
            self.expect(58)  # :
            sub = keep if keep == ALL else (keep.get(key) if keep else None)
            v = self.value(sub)
            if sub:
                out[key] = v
            c = self.peek()
            self.k += 1
            if c == 125:
                return out if keep else None
            if c != 44:
                self.fail()

    def arr(self, keep):
        self.k += 1
        if keep and self.peek() in _NUM:
            return self.numbers()
        out: list = []  # stays empty when skipped
        if self.peek() == 93:
            self.k += 1
            return out if keep else None
        while True:
            v = self.value(keep)
            if keep:
                out.append(v)
            c = self.peek()
            self.k += 1
            if c == 93:
                return out if keep else None
            if c != 44:
                self.fail()

    def numbers(self):
        """A kept list that starts with a number, straight into a float array: counted
        first, allocated once (no list, no float objects kept), so MODEL needs no block
        larger than the table itself even on a heap the run has fragmented. Such a list
        must hold only numbers (a model's tables do); anything else is refused."""
        b, k, n = self.b, self.k, self.n
        count = 1
        while k < n and b[k] != 93:
            if b[k] == 44:
                count += 1
            k += 1
        out = floats(count)
        for j in range(count):
            if self.peek() not in _NUM:
                self.fail()
            out[j] = self.number(ALL)
            c = self.peek()
            self.k += 1
            if c != (93 if j == count - 1 else 44):
                self.fail()
        return out

    def string(self, keep):
        b, k, n = self.b, self.k + 1, self.n
        start = k
        esc = False
        while k < n and b[k] != 34:
            if b[k] == 92:  # backslash: the next byte is escaped
                esc = True
                k += 1
            k += 1
        if k >= n:
            self.fail()
        self.k = k + 1
        if not keep:
            return None
        text = bytes(b[start:k])
        if esc:
            import json  # rare (keys and kept strings are plain ASCII): let json decode it
            return json.loads(b'"' + text + b'"')
        return text.decode()

    def number(self, keep):
        b, k, n = self.b, self.k, self.n
        start = k
        while k < n and b[k] in _NUM:
            k += 1
        self.k = k
        text = bytes(b[start:k])  # parsed even when skipped: that checks it (garbage only)
        try:
            v = float(text) if (b"." in text or b"e" in text or b"E" in text) else int(text)
        except ValueError:
            self.fail()
        return v if keep else None


def read_model(text, keep=MODEL_KEYS):
    """The members of the model JSON ``text`` (bytes-like) that the filter uses, as a
    small dict whose number lists are float arrays; JsonError if the text is not one
    JSON object. A 9 KB model file costs a few KB this way instead of tens as a dict."""
    if isinstance(text, str):
        text = text.encode()
    # Collect first: MicroPython then allocates from the bottom of the heap, so the
    # tables go into the lowest holes, not wherever the last ticks' garbage left off.
    # (CPython has no such heap: a collection there only costs time, in every test.)
    if MICROPYTHON:
        gc.collect()
    r = _Reader(text)
    if r.peek() != 123:
        r.fail("must be a JSON object")
    out = r.obj(keep)
    while r.k < r.n and r.b[r.k] in _WS:
        r.k += 1
    if r.k != r.n:
        r.fail()
    return out
