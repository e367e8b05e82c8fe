"""``relayd publish PATH [DATA|-]`` and ``relayd subscribe PATH`` (docs/events.rst).

``relayd publish`` sends DATA as one event; with ``-`` (or no DATA) it reads stdin and sends
each line as one event (without its line ending), in order, or all of stdin as one event with
``--raw``.  It prints ``delivered to N`` for each event and stops at the first refusal, with a
message naming the cause (exit status 1).

``relayd subscribe`` listens on an event entity and writes each event to stdout followed by a
newline, or as its bytes only with ``--raw``; it says ``relayd subscribe: online on PATH`` on
stderr and runs until SIGINT or SIGTERM (exit status 0).  A 401/403/404 before it was ever
online ends it with status 1.

Twisted is imported only when one of these commands runs (``relayd token`` stays light).
"""

import sys

LINE_TYPE = "text/plain; charset=utf-8"
RAW_TYPE = "application/octet-stream"
FATAL_BEFORE_ONLINE = (401, 403, 404)


def add_parsers(sub, add_connection_args, add_verbosity_args):
    p = sub.add_parser("publish", help="publish events to an event entity (stdin: one per line)")
    p.add_argument("path")
    p.add_argument("data", nargs="?", default="-", help="the event; - (the default) reads stdin")
    p.add_argument("--raw", action="store_true", help="all of stdin is one event (not one per line)")
    p.add_argument("--content-type", help="default: %s per line, %s with --raw" % (LINE_TYPE, RAW_TYPE))
    add_connection_args(p)
    add_verbosity_args(p)
    p.set_defaults(func=publish_main)

    p = sub.add_parser("subscribe", help="print the events of an event entity, one per line")
    p.add_argument("path")
    p.add_argument("--raw", action="store_true", help="write each event's bytes as they are (no newline)")
    add_connection_args(p)
    add_verbosity_args(p)
    p.set_defaults(func=subscribe_main)


def _err(args, name, message, always=False):
    if always or getattr(args, "verbosity", 0) >= 0:
        print("relayd %s: %s" % (name, message), file=sys.stderr, flush=True)


def _events(args, stdin):
    """The events to publish, lazily: DATA, all of stdin (--raw) or each line of it."""
    if args.data != "-":
        yield args.data.encode("utf-8")
    elif args.raw:
        yield stdin.read()
    else:
        for line in stdin:
            yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


def _run(coroutine_fn):
    from twisted.internet import defer, reactor

    from twisted.internet.error import ReactorNotRunning

    outcome = {}

    def stop(_):
        try:
            reactor.stop()
        except ReactorNotRunning:  # already stopping (SIGINT, SIGTERM)
            pass

    def go():
        d = defer.ensureDeferred(coroutine_fn(reactor))
        d.addCallbacks(lambda code: outcome.setdefault("code", code),
                       lambda f: (print("relayd: unexpected error: %s" % f.getTraceback(), file=sys.stderr),
                                  outcome.setdefault("code", 1)))
        d.addBoth(stop)

    reactor.callWhenRunning(go)
    reactor.run()
    return outcome.get("code", 0)


def publish_main(args, stdin=None):
    from relayd.client.connection_string import ConnectionInfo

    info = ConnectionInfo.from_args(args)
    path = info.resolve_path(args.path)
    stdin = stdin or sys.stdin.buffer
    content_type = args.content_type or (RAW_TYPE if args.raw else LINE_TYPE)

    async def run(reactor):
        from relayd.client.events import Publisher, PublishError

        publisher = Publisher(reactor, info)
        try:
            for event in _events(args, stdin):
                try:
                    delivered = await publisher.publish(path, event, content_type)
                except PublishError as e:
                    _err(args, "publish", "%s: %s" % (path, e), always=True)
                    return 1
                except Exception as e:
                    _err(args, "publish", "cannot publish to %s at %s: %s"
                         % (path, info.http_base(), e), always=True)
                    return 1
                print("delivered to %d" % delivered, flush=True)
            return 0
        finally:
            await publisher.close()

    return _run(run)


def subscribe_main(args, stdout=None):
    from relayd.client.connection_string import ConnectionInfo

    info = ConnectionInfo.from_args(args)
    path = info.resolve_path(args.path)
    out = stdout or sys.stdout.buffer
    suffix = b"" if args.raw else b"\n"

    def on_event(body, content_type):
        out.write(body + suffix)
        out.flush()

    async def run(reactor):
        from twisted.internet import defer
        from relayd.client.events import subscriber

        fatal = defer.Deferred()
        state = {"online": False}

        def on_status(status, detail):
            if status == "online" and not state["online"]:
                state["online"] = True
                _err(args, "subscribe", "online on %s" % path)
            elif status == "error":
                if not state["online"] and detail.status in FATAL_BEFORE_ONLINE and not fatal.called:
                    fatal.callback(detail)
                else:
                    _err(args, "subscribe", "control channel: %s (retrying)" % (detail,))

        listener = subscriber(info, path, on_event, reactor=reactor, on_status=on_status)
        stopping, stopped = defer.Deferred(), defer.Deferred()

        def shutting_down():  # SIGINT / SIGTERM: the reactor waits for the listener to stop
            stopping.callback(None)
            return stopped

        trigger = reactor.addSystemEventTrigger("before", "shutdown", shutting_down)
        listener.start().addErrback(lambda f: f.trap(defer.CancelledError))
        result, index = await defer.DeferredList([fatal, stopping], fireOnOneCallback=True, consumeErrors=True)
        await listener.stop()
        if index == 0:
            reactor.removeSystemEventTrigger(trigger)
            _err(args, "subscribe", "cannot subscribe to %s: %s" % (path, result), always=True)
            return 1
        stopped.callback(None)
        return 0

    return _run(run)
