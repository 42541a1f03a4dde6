"""The board's side of the link: framed lines in, commands parsed and dispatched, replies
and ring lines out (docs/link.md).

Link reads bytes from the port into one line buffer, checks each line's frame in place
(frame.body_len), parses the command's arguments and hands plain values to the run's
controller.Controller; its answer becomes the OK reply, its refusal (CommandError) the
ERR reply. Link never raises out of feed(): a command that fails in any way gets an ERR
reply and leaves the state and the current unchanged. output() writes the replies, then
the ring's records and events from the cursor SEND set. main.py only owns the clock and
the serial port.

Units: uV, nA (> 0 charges the cell), ms, nAh, uWh, ppm; all integers on the link.
"""

import binascii
import json

import controller
import frame
import record
from controller import CommandError

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


FW_VERSION = "0.1.0"
_LINK_VERSION = const(1)
MAX_LINE = const(12288)   # longest framed line (a model file is 5-8 KB, a 35-step LOAD 1 KB)
SEND_BURST = const(16)    # ring lines written per output() call: a re-send never stalls a tick
_NAME_MAX = const(16)     # longest command name looked up


# Command arguments arrive as memoryviews into the line buffer (see Link.feed).

def _text(arg):
    return bytes(arg).decode().strip()


def _int_arg(text, field):
    try:
        return int(text)
    except ValueError:
        raise CommandError(field, "must be an integer")


def _seq_arg(arg, field):
    n = _int_arg(_text(arg), field)
    if n < 0:
        raise CommandError(field, "must be >= 0")
    return n


def _no_arg(arg):
    if _text(arg):
        raise CommandError("args", "takes no arguments")


def _json_arg(arg):
    try:
        return json.loads(bytes(arg))  # one copy of the text; no str made from it
    except ValueError:
        raise CommandError("json", "not valid JSON")


class Link:
    """Commands in, replies and records out, for one controller.Controller.

    line: a bytearray(MAX_LINE) line buffer (main.py allocates it first thing: growing a
    bytearray byte by byte would reallocate it again and again and chop the heap).
    """

    def __init__(self, ctl, line=None):
        self.ctl = ctl
        self.cursor = 0          # next seq to write to the link
        self.replies = []        # framed reply lines waiting for output()
        self._line = line if line is not None else bytearray(MAX_LINE)
        self._n = 0
        self._skip = False       # discarding the rest of an overlong line
        self._cmds = {"ID": self._id, "LOAD": self._load, "MODEL": self._model,
                      "START": self._start, "PAUSE": self._pause, "RESUME": self._resume,
                      "STOP": self._stop, "STATUS": self._status, "SEND": self._send,
                      "ACK": self._ack, "SET": self._set, "HIST": self._hist,
                      "RECOVER": self._recover}
        if ctl.interrupted is not None:
            # An unfinished run found at boot: said once, not held in the ring.
            self._reply("E %d INTERRUPTED %s" % (ctl.boot_seq, json.dumps(ctl.interrupted)))

    # ------------------------------------------------------------ input

    def feed(self, data):
        """Take raw bytes from the port; handle every complete line in them."""
        for c in data:
            if c == 10:
                if self._skip:
                    self._reply("ERR ? frame line too long")
                elif self._n:
                    self._line_done()
                self._n = 0
                self._skip = False
            elif not self._skip:
                if self._n >= len(self._line):
                    self._skip = True
                    self._n = 0
                else:
                    self._line[self._n] = c
                    self._n += 1

    def handle(self, line):
        """Handle one framed line (bytes, newline optional) as if it came through feed()."""
        self._n = 0
        self._skip = False
        self.feed(line if line.endswith(b"\n") else line + b"\n")

    def _line_done(self):
        # Never raises: a failure (e.g. MemoryError on a long line) is refused with ERR.
        try:
            self._dispatch()
        except Exception as ex:
            try:
                self._reply("ERR ? internal " + repr(ex)[:60].replace("\n", " "))
            except Exception:
                pass

    def _dispatch(self):
        buf = self._line
        end = frame.body_len(buf, self._n)
        if end < 0:
            self._reply("ERR ? frame checksum")
            return
        cut = 0
        while cut < end and buf[cut] != 32:
            cut += 1
        mv = memoryview(buf)
        name = bytes(mv[:min(cut, _NAME_MAX)]).decode()
        arg = mv[cut + 1:end] if cut < end else mv[end:end]
        fn = self._cmds.get(name) if cut <= _NAME_MAX else None
        if fn is None:
            shown = name if 0 < len(name) <= 12 and name.isalpha() else "?"
            self._reply("ERR %s cmd unknown command" % shown)
            return
        try:
            out = fn(arg)
            self._reply("OK " + name if out is None else "OK %s %s" % (name, json.dumps(out)))
        except CommandError as ex:
            self._reply("ERR %s %s %s" % (name, ex.args[0], ex.args[1]))
        except Exception as ex:  # a bug must not end the loop or touch the run
            self._reply("ERR %s internal %s" % (name, repr(ex)[:80].replace("\n", " ")))

    def _reply(self, body):
        self.replies.append(frame.encode(body))

    # ------------------------------------------------------------ commands

    def _id(self, arg):
        _no_arg(arg)
        ctl = self.ctl
        b = ctl.board
        return {"board": b.id, "fw": FW_VERSION, "link": _LINK_VERSION,
                "calibration": b.calibration_id, "tick_ms": b.tick_ms,
                "max_uV": b.max_uV, "min_uV": b.min_uV, "max_nA": b.max_nA,
                "range_max_nA": b.range_max_nA, "capacity": ctl.ring.cap,
                "fields": " ".join(record.FIELDS), "interrupted": ctl.interrupted}

    def _load(self, arg):
        self.ctl.check_idle()
        table = _json_arg(arg)
        return self.ctl.load(table, binascii.crc32(arg) & 0x3FFFFFFF)

    def _model(self, arg):
        ctl = self.ctl
        ctl.free_empty_ring()
        factory = estimator_class()
        # An estimator that reads the text itself (ekf.Ekf.from_json) keeps only its
        # tables: the whole parsed document would be ~30 KB of objects at once.
        compact = getattr(factory, "from_json", None)
        model = None if compact else _json_arg(arg)
        if model is not None and not isinstance(model, dict):
            raise CommandError("json", "must be a JSON object")
        est = None
        if factory is not None:
            try:
                est = compact(arg) if compact else factory(model)  # refuse a bad model now
            except Exception as ex:
                field = getattr(ex, "field", "model")  # cellmodel.JsonError: "json"
                raise CommandError(field, ex.args[0] if field == "json" else repr(ex)[:80])
        return ctl.set_estimator(est, model)

    def _start(self, arg):
        _no_arg(arg)
        return self.ctl.start()

    def _recover(self, arg):
        _no_arg(arg)
        return self.ctl.recover()

    def _pause(self, arg):
        _no_arg(arg)
        self.ctl.pause()

    def _resume(self, arg):
        _no_arg(arg)
        self.ctl.resume()

    def _stop(self, arg):
        _no_arg(arg)
        return self.ctl.stop()

    def _status(self, arg):
        _no_arg(arg)
        return self.ctl.status()

    def _send(self, arg):
        n = _seq_arg(arg, "from_seq")
        r = self.ctl.ring
        if n > r.head:
            raise CommandError("from_seq", "beyond the next seq %d" % r.head)
        if n < r.tail:
            raise CommandError("from_seq", "freed by ACK; oldest held is %d" % r.tail)
        self.cursor = n
        return {"from": n, "to": r.head - 1}

    def _ack(self, arg):
        out = self.ctl.ack(_seq_arg(arg, "seq"))
        if self.cursor < self.ctl.ring.tail:
            self.cursor = self.ctl.ring.tail
        return out

    def _set(self, arg):
        """SET <i_nA> [<for_ms>]: force a current outside runs (Controller.set_current)."""
        self.ctl.check_idle()
        parts = _text(arg).split()
        if not 1 <= len(parts) <= 2:
            raise CommandError("args", "SET <i_nA> [<for_ms>]")
        i_nA = _int_arg(parts[0], "i_nA")
        for_ms = _int_arg(parts[1], "for_ms") if len(parts) > 1 else controller.SET_MS
        return self.ctl.set_current(i_nA, for_ms)

    def _hist(self, arg):
        """HIST <V|I> <n>: histogram of n raw conversions of one channel (calibration)."""
        self.ctl.check_idle()
        parts = _text(arg).split()
        if len(parts) != 2 or parts[0] not in ("V", "I"):
            raise CommandError("args", "HIST <V|I> <n>")
        return self.ctl.hist(parts[0], _int_arg(parts[1], "n"))

    # ------------------------------------------------------------ output

    def output(self, burst=SEND_BURST):
        """Framed lines to write now: replies first, then up to ``burst`` ring lines."""
        out = self.replies
        self.replies = []
        r = self.ctl.ring
        if self.cursor < r.tail:
            self.cursor = r.tail
        n = 0
        while self.cursor < r.head and n < burst:
            out.append(frame.encode(r.line(self.cursor)))
            self.cursor += 1
            n += 1
        return out


def estimator_class():
    """ekf.Ekf if firmware/ekf.py is present, else None (the SoC fields stay -1)."""
    try:
        import ekf
    except ImportError:
        return None
    return getattr(ekf, "Ekf", None)
