"""The relay's limits (the ``[limits]`` table of the config file): one typed object with the
defaults, given to the switchboard and the doors.  relayd.config fills it from the file; the
model takes it from here, so it never imports the config parser.
"""

from dataclasses import dataclass

from relayd.endpoint_strings import DEFAULT_LISTEN_BACKLOG


@dataclass
class Limits:
    # Largest control-channel message a listener may send (renewToken, HTTP responses).
    control_message_max: int = 1024 * 1024
    # Handshake (HTTP upgrade request) must complete within this many seconds.
    open_handshake_timeout: float = 10.0
    # Largest HTTP request header block on the WebSocket / HTTP doors.
    max_header_bytes: int = 32 * 1024
    # Concurrent TCP connections the relay accepts in all (0 = unlimited).
    max_connections: int = 10000
    # Seconds between pings on an idle listener control channel; a missing pong closes it.
    control_ping_interval: float = 30.0
    control_ping_timeout: float = 30.0
    # Bytes of socket read size and write buffer per data leg (the per-leg memory bound).
    leg_buffer: int = 256 * 1024
    # Largest HTTP request body relayed to a listener (413 above it).
    http_max_body: int = 1 << 30
    # Largest SOAP envelope a SOAP entity accepts (parsed whole; a 413 SOAP fault above it).
    soap_max_bytes: int = 4 * 1024 * 1024
    # Listen backlog (pending-connection queue) of every listening socket: the HTTP/WebSocket
    # ports, the TCP doors and ``relayd bridge -L``, unless the endpoint string sets backlog=.
    # The kernel caps it at net.core.somaxconn (4096 on current Linux).
    listen_backlog: int = DEFAULT_LISTEN_BACKLOG
    # Bytes queued for a listener's control channel (accept/request messages, pongs) beyond
    # which the relay stops offering it senders and stops reading it.
    control_queue_max: int = 1024 * 1024
    # Seconds a control channel may stay over control_queue_max before it is closed (1008).
    control_stall_timeout: float = 10.0
    # A subscriber's (a listener of an event entity) outgoing queue: messages and bytes waiting
    # to be written to it; one more closes it (1008), see docs/events.rst "Slow subscribers".
    subscriber_queue_messages: int = 1000
    subscriber_queue_bytes: int = 1024 * 1024
    # Refused handshakes logged in full per cause (door + status) and interval (seconds);
    # the rest are counted in one summary line per cause at the end of the interval.
    refusal_log_burst: int = 10
    refusal_log_interval: float = 60.0
    # HTTP door (relaying and management): seconds a keep-alive connection may stay idle
    # between requests before the relay closes it.
    http_keepalive_timeout: float = 15.0
    # A request body must arrive within http_body_timeout seconds plus one second for every
    # http_body_min_rate bytes received (slow uploads are fine, a 1 byte/s dribble is not): 408.
    http_body_timeout: float = 20.0
    http_body_min_rate: int = 1024
    # Bytes of SOAP envelopes read before their sender is authenticated (a token only inside the
    # envelope, the RelayAccessToken header), across all connections; 503 fault above it.
    soap_unauthenticated_budget: int = 8 * 1024 * 1024
    # Seconds such an unauthenticated envelope may take to arrive whole (408 fault).
    soap_unauthenticated_timeout: float = 10.0
    # Senders waiting for a listener to accept (pending rendezvous: WebSocket senders, relayed
    # HTTP requests and TCP connections), per hybrid connection and in all.  Above either a
    # sender gets 503 with Retry-After: rendezvous_retry_after seconds.
    max_pending_rendezvous_per_entity: int = 1024
    max_pending_rendezvous: int = 8192
    rendezvous_retry_after: int = 2
    # Connectivity streams (GET /$relayd/connectivity/stream) open at once; one more gets 503.
    # 0 turns the stream off.  See docs/operations.rst "Connectivity status".
    status_watchers: int = 16
    # Entries in one page of a discovery feed (GET / and Manage listings, docs/operations.rst
    # "Discovery"); longer feeds go on in pages linked first/previous/next (?page=N).
    discovery_page_size: int = 500
