"""An HTTP exchange as :mod:`relayd.traffic` counts it: a live connection record (door "http")
from the moment it is routed to a listener, body bytes counted as they flow (request body up,
response body down), the status it was answered with (once), one end line."""

from relayd import traffic
from relayd.traffic import HTTP_REQUESTS


class Counted:
    """Mixed into :class:`relayd.transports.http.exchange.Exchange` (``door``, ``client``,
    ``entity``, ``id``); the door's ``traffic`` is the relay's :class:`relayd.traffic.Traffic`
    (None: nothing is counted)."""

    conn = None  # the relayd.traffic.Connection once routed
    http_status = None  # the status it was answered with (relay or listener)
    routed = False  # a record was opened: its end line comes when it closes

    def count_open(self):
        registry = getattr(self.door, "traffic", None)
        if registry is not None and self.conn is None:
            self.conn = registry.open("http", self.entity.path, self.client.transport.getPeer(), self.id)
            self.routed = True

    def answered_with(self, status):
        """The request is answered with ``status`` (the first call counts): per entity and status."""
        if self.http_status is None:
            self.http_status = status
            registry = getattr(self.door, "traffic", None)
            entity = getattr(self, "entity", None)
            if registry is not None:
                registry.count(HTTP_REQUESTS, entity and entity.path, status)
                if not self.routed and entity is not None and status >= 400:  # refused before it was routed
                    registry.refused(False, entity.path, status)
                if not self.routed and registry.log_end is not None:  # answered by the relay: its end line now
                    registry.log_end("http", entity.path if entity else self.target.split("?", 1)[0][:200],
                                     traffic.peer_text(self.client.transport.getPeer()), status,
                                     getattr(self, "body_progress", 0), 0,
                                     max(0.0, self.door.clock.seconds() - self.began), "-")
            if self.conn is not None:
                self.conn.set_status(status)

    def count_close(self):
        """The exchange is over: the end line, its bytes into the totals."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close(self.http_status)
