#!/usr/bin/env python3
"""An external fleetbus tool in another language: read the event bus as the read-only `tap` user.

Uses only `nats-py` (with its nkeys extra) and `msgpack`:

    python -m venv venv && venv/bin/pip install 'nats-py[nkeys]' msgpack

What it does, printing one JSON object per line on stdout:

1. connects as `tap` with its NKey seed file (`<state>/nats/tap.nk`); fleetbus gives every role
   its own inbox prefix, so the connection uses `_INBOX.tap`;
2. (with --try-forbidden) tries what tap must not do — publish a command on `fleet.cmd.>`, publish
   an event on `fleet.evt.>`, subscribe to credential events on `fleet.sec.>` — and reports each
   refusal the server sends (`{"kind": "forbidden", ...}`);
3. replays the EVENTS stream from a stream sequence through an ordered consumer
   (`{"kind": "replay", ...}`), stopping after --count events or when caught up;
4. subscribes to `fleet.evt.>` live, prints `{"kind": "ready"}`, and prints the next --live
   events (`{"kind": "live", ...}`).

Envelopes are decoded with plain msgpack, by the documented field names (see schemas/README or
schemas/json/): `id`, `time`, `source`, `actor {kind, name, role?}`, `causation?`, `schema`,
`event {domain, body {type, data}}`.

Exit codes: 0 on success, 1 when the server could not be reached or something timed out.
"""

import argparse
import asyncio
import json
import sys

import msgpack
import nats
from nats.js import api


def out(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def summarize(kind, msg, seq=None):
    """Decode an envelope with plain msgpack and keep the documented fields."""
    try:
        env = msgpack.unpackb(msg.data, raw=False)
    except Exception as e:  # a tool must survive a bad message
        return {"kind": kind, "subject": msg.subject, "stream_seq": seq, "error": f"undecodable: {e}"}
    event = env.get("event", {})
    body = event.get("body", {})
    return {
        "kind": kind,
        "subject": msg.subject,
        "stream_seq": seq,
        "id": env.get("id"),
        "time": env.get("time"),
        "source": env.get("source"),
        "actor": env.get("actor", {}).get("name"),
        "causation": env.get("causation"),
        "schema": env.get("schema"),
        "domain": event.get("domain"),
        "type": body.get("type"),
        "data": body.get("data"),
    }


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="nats://127.0.0.1:4222")
    p.add_argument("--seed", required=True, help="tap's NKey seed file (<state>/nats/tap.nk)")
    p.add_argument("--subject", default="fleet.evt.>", help="subject filter for replay and live")
    p.add_argument("--from-seq", type=int, default=1, help="first EVENTS stream sequence to replay")
    p.add_argument("--count", type=int, default=0, help="replay at most this many (0: until caught up)")
    p.add_argument("--live", type=int, default=0, help="then print this many live events")
    p.add_argument("--try-forbidden", action="store_true", help="check that tap's forbidden operations are refused")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    errors = []

    async def on_error(e):
        errors.append(str(e))

    try:
        nc = await nats.connect(
            servers=[args.server],
            nkeys_seed=args.seed,
            inbox_prefix="_INBOX.tap",
            error_cb=on_error,
            connect_timeout=args.timeout,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    except Exception as e:
        print(f"tap_replay: cannot connect to {args.server} as tap: {e}", file=sys.stderr)
        return 1

    try:
        if args.try_forbidden:
            await check_forbidden(nc, errors, args.timeout)
        await replay(nc, args)
        if args.live:
            await live(nc, args)
    except asyncio.TimeoutError:
        print("tap_replay: timed out", file=sys.stderr)
        return 1
    finally:
        try:
            await nc.close()
        except Exception:
            pass
    return 0


async def wait_for_error(errors, needle, timeout):
    """The server refuses by sending -ERR 'Permissions Violation …' asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for e in errors:
            if "permissions violation" in e.lower() and needle in e:
                return e
        await asyncio.sleep(0.02)
    return None


async def check_forbidden(nc, errors, timeout):
    attempts = [
        ("publish", "fleet.cmd.host.remove"),
        ("publish", "fleet.evt.host.web-1.removed"),
        ("subscribe", "fleet.sec.>"),
    ]
    for op, subject in attempts:
        if op == "publish":
            await nc.publish(subject, msgpack.packb({"forged": True}))
        else:
            await nc.subscribe(subject)
        await nc.flush(timeout=timeout)
        err = await wait_for_error(errors, subject, min(timeout, 3.0))
        out({"kind": "forbidden", "op": op, "subject": subject, "refused": err is not None, "error": err})


async def replay(nc, args):
    js = nc.jetstream()
    # Name the stream: looking it up by subject needs $JS.API.STREAM.NAMES, which tap lacks.
    info = await js.stream_info("EVENTS")
    last = info.state.last_seq
    if args.from_seq > last:
        out({"kind": "caught_up", "last_seq": last, "replayed": 0})
        return
    sub = await js.subscribe(
        args.subject,
        stream="EVENTS",
        ordered_consumer=True,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=args.from_seq,
        ),
    )
    n = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=min(args.timeout, 2.0))
            except nats.errors.TimeoutError:
                break  # nothing more matches the filter
            seq = msg.metadata.sequence.stream
            out(summarize("replay", msg, seq))
            n += 1
            if (args.count and n >= args.count) or msg.metadata.num_pending == 0 or seq >= last:
                break
    finally:
        await sub.unsubscribe()
    out({"kind": "caught_up", "last_seq": last, "replayed": n})


async def live(nc, args):
    sub = await nc.subscribe(args.subject)
    await nc.flush(timeout=args.timeout)
    out({"kind": "ready"})
    for _ in range(args.live):
        msg = await sub.next_msg(timeout=args.timeout)
        out(summarize("live", msg))
    await sub.unsubscribe()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
