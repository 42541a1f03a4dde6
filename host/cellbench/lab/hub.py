"""Live updates from the channels' threads to the page's server-sent event streams.

A channel thread calls :meth:`Hub.publish` with a JSON-able message; every subscriber
(one per open page, an asyncio queue on the server's loop) gets it as
(channel id, JSON text). A subscriber
that does not keep up (MAX_QUEUED messages waiting) loses messages rather than holding
the channels back; its page re-reads the state when it notices (``seq`` jumps).
"""

import asyncio
import itertools
import json

MAX_QUEUED = 4096


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
        for queue in list(self._subscribers):
            if queue.qsize() < MAX_QUEUED:
                queue.put_nowait((channel, text))

    def subscribe(self):
        queue = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue):
        self._subscribers.discard(queue)
