"""Explicit state machines as transition tables: the one check they all use.

A machine names its states (short strings, so that logs and tests read them) and lists, for
each state, the states it may go to::

    CONNECTING, OPEN, CLOSED = "connecting", "open", "closed"
    TRANSITIONS = {CONNECTING: {OPEN, CLOSED}, OPEN: {CLOSED}, CLOSED: {CLOSED}}

    def _to(self, state):
        self.state = states.step(TRANSITIONS, "bridge tunnel", self.state, state)

A move the table does not allow is a bug in relayd, not an event of the network: it raises.
Used by the TCP door (:mod:`relayd.transports.tcp`), the HTTP exchange
(:mod:`relayd.transports.http.upload`, :mod:`relayd.transports.http.responses`), the bridge
tunnel (:mod:`relayd.client.bridge.tunnel`) and the client listener
(:mod:`relayd.client.listener`).
"""


class TransitionError(RuntimeError):
    """A state machine was asked for a move its transition table does not allow."""


def step(table, machine, current, new):
    """``new`` if ``table[current]`` allows it, else raise :class:`TransitionError` naming
    ``machine`` and the move."""
    if new not in table[current]:
        raise TransitionError("%s: %s -> %s" % (machine, current, new))
    return new
