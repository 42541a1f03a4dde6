"""Live updates from the channels' threads to the page's server-sent event streams.

A channel thread calls :meth:`Hub.publish` with a JSON-able message; every subscriber
(one per open page, an asyncio queue on the server's loop) whose channel filter matches
gets it as JSON text. A subscriber that does not keep up (MAX_QUEUED messages waiting)
is never allowed to hold the channels back: its backlog is dropped and replaced by one
``{"type": "resync"}`` message, on which the page re-reads everything from the API.
A page therefore never shows a state older than the newest one published, even when
messages were dropped (a paused job must not stay "running" on the page).
"""

import asyncio
import itertools
import json

MAX_QUEUED = 4096
RESYNC = json.dumps({"type": "resync"})


class Subscriber:
    """One page's stream: an asyncio queue of JSON texts, and the channel it follows
    (None: every channel)."""

    def __init__(self, channel=None):
        self.channel = channel
        self.queue = asyncio.Queue()
        self.resyncs = 0   # how many times its backlog was dropped

    def offer(self, channel, text):
        """Queue ``text`` (of ``channel``) if this subscriber follows it; on overflow drop
        the backlog for a single resync message (on the server's loop only)."""
        if self.channel is not None and channel != self.channel:
            return
        if self.queue.qsize() >= MAX_QUEUED:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)
            self.resyncs += 1
        self.queue.put_nowait(text)

    async def get(self):
        """The next text, waiting for one."""
        return await self.queue.get()

    def drain(self):
        """Every text waiting now (no wait)."""
        return [self.queue.get_nowait() for _ in range(self.queue.qsize())]


class Hub:
    def __init__(self):
        self.loop = None
        self._subscribers = set()
        self._seq = itertools.count(1)

    def attach(self, loop):
        """The asyncio loop the subscribers live on (the HTTP server's)."""
        self.loop = loop

    def publish(self, message):
        """Send ``message`` (dict) to every subscriber; safe from any thread."""
        if self.loop is None or not self._subscribers:
            return
        text = json.dumps(dict(message, n=next(self._seq)), separators=(",", ":"))
        try:
            self.loop.call_soon_threadsafe(self._fanout, message.get("channel"), text)
        except RuntimeError:  # the loop has closed: the service is going down
            pass

    def _fanout(self, channel, text):
        for sub in list(self._subscribers):
            sub.offer(channel, text)

    def subscribe(self, channel=None):
        """A new :class:`Subscriber` following ``channel`` (None: all); on the loop."""
        sub = Subscriber(channel)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub):
        self._subscribers.discard(sub)
