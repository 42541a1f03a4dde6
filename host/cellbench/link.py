"""The host end of the USB-serial link (docs/link.md is the format; firmware/link.py the board).

Lines are framed by the firmware's own ``frame`` module. The host sends commands and
waits for ``OK <cmd> [json]`` or ``ERR <cmd> <field> <message>``; meanwhile the board
streams records ``R <seq> ...`` and events ``E <seq> <KIND> {json}``, which share one
sequence (from 0 at boot, never reused). :meth:`Link.messages` yields them in sequence
order exactly once: a gap or a line with a bad checksum makes the host ask for a re-send
(``SEND <from_seq>``), duplicates are dropped, and ``ACK <seq>`` goes out regularly so
the board can free its ring (it holds every unacknowledged line, and pauses the run with
a FULL event rather than drop one).
"""

import json
import time

from . import fw

# The fields of an ``R`` line: seq, then the firmware's record fields (firmware/record.py).
RECORD_FIELDS = ("seq",) + tuple(fw.module("record").FIELDS)
# Firmware from before the estimator's slow states (issue 14) sends the record without
# its last four fields: a run on such a board is read (and resumed) with them -1, "none".
SLOW_FIELDS = ("cap_nAh", "cap_std_nAh", "r_mohm", "r_std_mohm")
assert RECORD_FIELDS[-len(SLOW_FIELDS):] == SLOW_FIELDS
# Commands whose repetition does no harm, re-sent when their reply is lost. START is
# re-sent only when the board said it could not read our line ("ERR ? frame ...").
RETRY_SAFE = ("ID", "STATUS", "LOAD", "MODEL", "STOP")
GARBLED = "?"  # the cmd of the board's reply to a line it could not decode
# Events outside the sequence: written once at boot, never held in the ring (no SEND or
# ACK), and their seq jumps past everything sent before the reset. Delivered at once.
OUT_OF_BAND = ("INTERRUPTED",)
# Longest single blocking read (Transport.readline's timeout): short, so reply and idle
# deadlines are kept.
READ_SLICE_S = 0.5


PROBE_QUIET_S = 3.0  # wall seconds without a line before the host probes with SEND


def _oldest_held(message):
    """N from the board's "freed by ACK; oldest held is N" (docs/link.md), else None."""
    head, sep, tail = message.rpartition("oldest held is ")
    try:
        return int(tail.strip()) if sep else None
    except ValueError:
        return None


class LinkError(Exception):
    """The board answered ERR, stopped answering, or sent something unparseable.

    ``cmd``, ``field`` and ``message`` are the parts of an ERR reply (field "" otherwise).
    """

    def __init__(self, cmd, field, message):
        super().__init__(f"{cmd}: {field + ': ' if field else ''}{message}")
        self.cmd, self.field, self.message = cmd, field, message


def parse_record(body):
    """``R seq t_ms ...`` -> dict of ints keyed by RECORD_FIELDS; None if malformed.
    A record of older firmware, without the SLOW_FIELDS, gets them as -1."""
    parts = body.split()
    n = len(parts) - 1
    if n not in (len(RECORD_FIELDS), len(RECORD_FIELDS) - len(SLOW_FIELDS)) or parts[0] != "R":
        return None
    try:
        rec = dict(zip(RECORD_FIELDS, map(int, parts[1:])))
    except ValueError:
        return None
    for key in RECORD_FIELDS[n:]:
        rec[key] = -1
    return rec


def parse_event(body):
    """``E seq KIND [json]`` -> {"seq", "kind", "data"} (data None when absent); None if malformed."""
    parts = body.split(" ", 3)
    if len(parts) < 3 or parts[0] != "E":
        return None
    try:
        seq = int(parts[1])
        data = json.loads(parts[3]) if len(parts) > 3 and parts[3].strip() else None
    except ValueError:
        return None
    return {"seq": seq, "kind": parts[2], "data": data}


def parse_reply(body):
    """``OK cmd [json]`` -> ("OK", cmd, value); ``ERR cmd field msg`` -> ("ERR", cmd, (field, msg))."""
    head, _, rest = body.partition(" ")
    cmd, _, tail = rest.partition(" ")
    if head == "OK":
        tail = tail.strip()
        try:
            return "OK", cmd, (json.loads(tail) if tail else None)
        except ValueError:
            return "OK", cmd, tail  # a plain-text value
    if head == "ERR":
        field, _, msg = tail.partition(" ")
        return "ERR", cmd, (field, msg)
    return None


class Link:
    """Framed commands and an exactly-once, in-order stream of records and events.

    ``transport``: a cellbench.transport.Transport (readline(timeout_s), write, eof,
    close). An empty read means "nothing yet" unless the transport is at ``eof``.
    ``first_seq``: the seq the stream starts at; None: no stream is followed until
    :meth:`reset_sequence` or :meth:`resend_from` says where it starts (lines before
    that are the board's business with an earlier host, neither gaps nor losses).
    ``reply_timeout_s``: how long a command waits for its OK/ERR.
    ``ack_every``: acknowledge after this many new messages (and at least each second).
    """

    def __init__(self, transport, reply_timeout_s=5.0, ack_every=32, resend_wait_s=1.0,
                 retries=2, first_seq=0):
        self.transport = transport
        self.frame = fw.module("frame")
        self.reply_timeout_s = reply_timeout_s
        self.ack_every = ack_every
        self.resend_wait_s = resend_wait_s
        self.retries = retries
        self.next_seq = first_seq  # the next sequence number the host needs (None: none yet)
        # The first seq not yet handed over and consumed: ACKs never go past it, so a host
        # killed after an ACK has logged everything it acknowledged (the board keeps the rest).
        self.delivered_seq = 0
        self.stats = {"crc_errors": 0, "gaps": 0, "duplicates": 0, "resends": 0,
                      "retries": 0, "garbled_sent": 0, "housekeeping_errors": 0, "lost": 0}
        self._pending = []         # in-order (kind, message) not yet yielded
        self._replies = []         # (status, cmd, value) not yet claimed by a command
        # delivered_seq when the last ACK went out. A new stream starts one behind its first
        # seq: what precedes it is the caller's already, and that ACK is owed too.
        self._acked_to = -1
        self._last_ack_s = time.monotonic()
        # The outstanding SEND, if any: when it went out, whether its OK came back, and the
        # current wait before it is repeated (doubling: a slow host never floods the board).
        self._resend_at = None     # when the last SEND went out (None: none outstanding)
        self._resend_answered = False
        self._resend_wait = resend_wait_s
        self._last_line_s = time.monotonic()
        self._probe_s = self._last_line_s  # when the stream was last probed (see _maybe_resend)
        self._garbled = False      # the board said it could not decode a line of ours
        self._noise = []           # the last unframed lines read (see _last_words)

    # ------------------------------------------------------------ commands

    def send(self, body):
        """Frame and write one line (``body`` without newline); LinkError if the port is gone."""
        try:
            self.transport.write(self.frame.encode(body))
        except OSError as exc:  # BrokenPipeError (sim ended), SerialException (unplugged)
            said = self._last_words()
            text = f"cannot write to the board: {exc}" + (f"; it said: {said}" if said else "")
            raise LinkError(body.split(" ", 1)[0], "", text) from None

    def _last_words(self):
        """The last unframed line a board that has ended printed (a traceback's last line)."""
        for _ in range(10):  # a process that closed its stdin may take a moment to exit
            if self.at_end():
                break
            time.sleep(0.05)
        else:
            return ""
        for _ in range(200):
            try:
                line = self.transport.readline()
            except OSError:
                break
            if not line:
                break
            self._note_noise(line)
        return self._noise[-1][:200] if self._noise else ""

    def _note_noise(self, line):
        """Keep the last few unframed lines (a crashed board's traceback) for error messages."""
        text = line.decode("ascii", "replace").strip()
        if text and self.frame.decode(line) is None:
            self._noise = (self._noise + [text])[-3:]

    def command(self, name, *args, timeout_s=None):
        """Send ``name args...`` and return the value of its OK reply (parsed JSON or None).

        Records and events arriving meanwhile are kept for :meth:`messages`. The command
        is sent again (up to ``retries`` times) when its reply does not come and repeating
        it is harmless, or when the board reported an undecodable line meanwhile. Raises
        LinkError with the board's field and message on ERR, or when no reply comes.
        """
        for attempt in range(self.retries + 1):
            self._garbled = False
            try:
                return self._command_once(name, args, timeout_s)
            except LinkError as exc:
                again = (name in RETRY_SAFE or self._garbled) and not self.at_end()
                if exc.field or not again or attempt == self.retries:
                    raise
                self.stats["retries"] += 1
        raise AssertionError("unreachable")

    def _command_once(self, name, args, timeout_s):
        self.send(" ".join([name] + [str(a) for a in args]))
        deadline = time.monotonic() + (timeout_s or self.reply_timeout_s)
        while True:
            for k, (status, cmd, value) in enumerate(self._replies):
                if cmd == name:
                    del self._replies[k]
                    if status == "ERR":
                        raise LinkError(name, value[0], value[1])
                    return value
            if self._garbled:
                # Our line may be the one the board could not read: give its reply a
                # moment (another line may have been garbled), then send again.
                deadline = min(deadline, time.monotonic() + 0.5)
            if time.monotonic() > deadline:
                raise LinkError(name, "", "no reply from the board (timeout)")
            if self.at_end():
                said = self._last_words()
                raise LinkError(name, "", "the board closed the link"
                                + (f"; it said: {said}" if said else ""))
            self._pump()

    def reset_sequence(self, first_seq):
        """Expect the stream to continue at ``first_seq`` (the START reply's seq)."""
        self.next_seq = int(first_seq)
        self.delivered_seq = self.next_seq
        self._pending.clear()
        self._resend_done()
        self._acked_to = self.next_seq - 1

    def resend_from(self, first_seq):
        """Continue the stream at ``first_seq`` with everything the board still holds from
        there (a host reattaching after a crash): SEND first_seq, then live messages."""
        self.reset_sequence(first_seq)
        self._ask_resend()

    # ------------------------------------------------------------ the stream

    def messages(self, idle_timeout_s=None):
        """Yield ("record", dict) and ("event", dict) in sequence order, each exactly once.

        Records are dicts of ints keyed by RECORD_FIELDS; events are {"seq", "kind",
        "data"}. Stops at the end of the stream or, with ``idle_timeout_s``, after that
        long without a new message.
        """
        last = time.monotonic()
        while True:
            while self._pending:
                last = time.monotonic()
                kind, msg = self._pending.pop(0)
                yield kind, msg
                # The caller asked for the next one: it has dealt with (logged) this one.
                if msg.get("kind") not in OUT_OF_BAND:
                    self.delivered_seq = msg["seq"] + 1
            if self.at_end():
                return
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
            # ACK what was taken even when no line comes: a board whose ring is full sends
            # nothing until an ACK frees it.
            self._maybe_ack()
            self._pump()

    def at_end(self):
        """True once the transport can deliver nothing more (Transport.eof)."""
        return self.transport.eof

    def consumed(self, seq):
        """The caller has dealt with message ``seq`` without asking for the next one (it
        stopped at an end event): let the next ACK cover it."""
        self.delivered_seq = max(self.delivered_seq, int(seq) + 1)

    def acknowledge(self):
        """ACK everything consumed from :meth:`messages` so far (the board frees those
        slots). Messages received but not yet consumed stay held on the board."""
        if self.delivered_seq > 0:
            self.send(f"ACK {self.delivered_seq - 1}")
            self._acked_to = self.delivered_seq
        self._last_ack_s = time.monotonic()

    # ------------------------------------------------------------ reading

    def _readline(self):
        try:
            return self.transport.readline(timeout_s=READ_SLICE_S)
        except TimeoutError:  # the simulator's blocking read gave up: nothing arrived
            return b""
        except OSError as exc:  # checked after TimeoutError, which is an OSError too
            raise LinkError("link", "", f"cannot read from the board: {exc}") from None

    def _pump(self):
        """Read one line and file it; send SEND / ACK as the stream's state asks."""
        line = self._readline()
        if not line:
            if not self.at_end():
                time.sleep(0.002)  # a serial read already waited; this only stops a spin
            self._maybe_resend()
            return
        self._last_line_s = time.monotonic()
        body = self.frame.decode(line)
        if body is None:
            self._note_noise(line)
            self.stats["crc_errors"] += 1
            self._ask_resend()
            return
        if body.startswith(("R ", "E ")):
            self._file_message(body)
        else:
            reply = parse_reply(body)
            if reply is not None:
                self._file_reply(reply)
        self._maybe_ack()

    def _file_reply(self, reply):
        status, cmd, value = reply
        if cmd == GARBLED:
            self.stats["garbled_sent"] += 1
            self._garbled = True
            if self._resend_at is not None and not self._resend_answered:
                self._resend_at = 0.0  # maybe our SEND was the garbled line: repeat it now
                self._resend_wait = self.resend_wait_s
            return
        if cmd in ("SEND", "ACK"):
            # Housekeeping needs no answer. An ERR is counted; a SEND for slots already
            # freed means they are gone: accept the loss and go on from the oldest held.
            if cmd == "SEND" and self._resend_at is not None:
                # Every line the board writes after this reply comes from the re-send
                # cursor, in order: a gap seen from now on is a new loss.
                self._resend_answered = True
            if status == "ERR":
                self.stats["housekeeping_errors"] += 1
                oldest = _oldest_held(value[1]) if cmd == "SEND" else None
                if oldest is not None and self.next_seq is not None and oldest > self.next_seq:
                    self.stats["lost"] += oldest - self.next_seq
                    self.next_seq = oldest
                    self._resend_done()
            return
        self._replies.append(reply)

    def _file_message(self, body):
        msg = parse_record(body) if body[0] == "R" else parse_event(body)
        if msg is None:
            raise LinkError(body.split(" ", 1)[0], "", f"malformed line: {body[:60]!r}")
        seq = msg["seq"]
        if msg.get("kind") in OUT_OF_BAND:
            # The board was reset: hand it over now, not as a gap to fill (nothing held on
            # the board fills it); the caller decides what a reset means for its run.
            self._pending.append(("event", msg))
            return
        if self.next_seq is None:
            return  # no stream followed yet: the SEND that starts ours fetches it again
        if seq < self.next_seq:
            self.stats["duplicates"] += 1
            return
        if seq > self.next_seq:
            if self._resend_at is None or self._resend_answered:
                self.stats["gaps"] += 1
            self._ask_resend()
            return  # it comes again, in order, after the re-send
        self.next_seq = seq + 1
        if self._resend_at is not None:
            # Only the re-send can fill a gap (later lines of the old stream are all past
            # it), even when its OK was lost: the re-send is arriving in order.
            self._resend_done()
        self._pending.append(("record" if body[0] == "R" else "event", msg))

    def _ask_resend(self):
        """SEND from the first missing seq, at most one outstanding at a time.

        Lines read between a SEND and its OK were written before the board saw it (a slow
        host reads a backlog of them): their gaps are not new losses and ask nothing. A gap
        after the OK is a new loss and asks at once (SEND is idempotent: it only moves the
        board's cursor). An unanswered SEND is repeated only when the line has gone quiet
        for ``resend_wait_s``, or after a wait that doubles each time (its request or reply
        was lost), so a host slower than the board never floods it with re-sends.
        """
        if self.next_seq is None:
            return  # nothing to ask for before a stream is followed
        now = time.monotonic()
        if self._resend_at is not None and not self._resend_answered:
            quiet = now - self._last_line_s > self.resend_wait_s
            waited = now - self._resend_at
            if not (waited > self._resend_wait or (quiet and waited > self.resend_wait_s)):
                return
            self._resend_wait = min(2 * self._resend_wait, 60.0)
        self.stats["resends"] += 1
        self._resend_at = now
        self._resend_answered = False
        self.send(f"SEND {self.next_seq}")

    def _resend_done(self):
        self._resend_at = None
        self._resend_answered = False
        self._resend_wait = self.resend_wait_s

    def _maybe_resend(self):
        # Nothing arrived: if a re-send is outstanding (its request or reply may be lost
        # too), ask again once it has waited long enough (see _ask_resend).
        if self._resend_at is not None and not self._resend_answered:
            self._ask_resend()
        elif time.monotonic() - max(self._last_line_s, self._probe_s) > PROBE_QUIET_S:
            # A lost last line leaves no later line to show the gap: once the stream has
            # been quiet a while, ask from the next seq; the board re-sends what is newer,
            # or nothing (SEND is idempotent).
            self._probe_s = time.monotonic()
            self._resend_done()
            self._ask_resend()

    def _owed(self):
        """Messages taken by the caller since the last ACK (plus one for what precedes a
        stream that has had no ACK yet).

        Counted from what was taken, not from what arrived: an ACK sent while messages
        wait unread (during a command) covers none of them and must not settle them.
        """
        if self.delivered_seq <= 0:
            return 0
        return self.delivered_seq - self._acked_to

    def _maybe_ack(self):
        owed = self._owed()
        if owed > 0 and (owed >= self.ack_every or time.monotonic() - self._last_ack_s > 1.0):
            self.acknowledge()
