"""The lab's live feed (cellbench.lab.hub): a page that reads too slowly loses messages,
never the newest state: its backlog becomes one resync message (the page re-reads)."""

import asyncio
import json
import threading

from cellbench.lab import hub as hubmod


def _run(coro):
    return asyncio.run(coro)


async def _published(hub, messages):
    """Publish ``messages`` from another thread (as channel threads do); let them land."""
    t = threading.Thread(target=lambda: [hub.publish(m) for m in messages])
    t.start()
    t.join()
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_page_gets_its_channel_in_order():
    async def body():
        hub = hubmod.Hub()
        hub.attach(asyncio.get_running_loop())
        one, every = hub.subscribe("a"), hub.subscribe()
        await _published(hub, [{"type": "state", "channel": c, "k": k}
                               for k, c in enumerate("abab")])
        got_one = [json.loads(t) for t in one.drain()]
        got_every = [json.loads(t) for t in every.drain()]
        assert [m["k"] for m in got_one] == [0, 2]
        assert [m["k"] for m in got_every] == [0, 1, 2, 3]
        assert [m["n"] for m in got_every] == sorted(m["n"] for m in got_every)
    _run(body())


def test_a_slow_page_gets_a_resync_then_the_newest_state(monkeypatch):
    monkeypatch.setattr(hubmod, "MAX_QUEUED", 5)

    async def body():
        hub = hubmod.Hub()
        hub.attach(asyncio.get_running_loop())
        slow = hub.subscribe("a")
        states = ["running"] * 12 + ["paused"]
        await _published(hub, [{"type": "state", "channel": "a", "state": s} for s in states])
        got = [json.loads(t) for t in slow.drain()]
        assert len(got) <= 5 + 1                    # bounded: the channels never wait for it
        kinds = [m["type"] for m in got]
        assert "resync" in kinds                     # it is told it lost messages...
        after = got[kinds.index("resync") + 1:]
        assert after and after[-1]["state"] == "paused"   # ...and still gets the newest
        assert slow.resyncs >= 1
    _run(body())


def test_no_subscriber_no_work():
    hub = hubmod.Hub()
    hub.publish({"type": "state", "channel": "a"})  # no loop yet: dropped, no error
