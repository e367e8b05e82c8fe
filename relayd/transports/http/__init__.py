"""The HTTP door -- Hybrid Connections HTTP request relaying: ``http(s)://relay/{path}[/suffix][?query]``.

Wire protocol (Azure Relay Hybrid Connections, "Request operation"):

* Any method but CONNECT, and no Upgrade, on an HC entity path (no ``$hc``) becomes a
  ``request`` for one listener (balanced).  Small requests (a known body of at most 64 kB)
  go over the listener's control channel: the ``request`` JSON text message, then the body
  as ONE binary message.  Every such message carries an ``address`` the listener may use
  to upgrade the request to a rendezvous (``sb-hc-action=request``), e.g. to answer with a
  large response.
* Larger, chunked or unknown-length bodies go by rendezvous: the control message carries only
  ``address`` and ``id``; the listener connects there and the relay sends the full
  ``request`` JSON followed by the body, streamed as the fragments of one binary message.
* The listener answers ``{"response": {requestId, statusCode, statusDescription,
  responseHeaders, body}}`` followed, when ``body`` is true, by binary message(s); an empty
  binary message after ``body: false`` is tolerated.  A rendezvous socket, once made, serves
  every later request of the same client HTTP connection and closes with it.
* Headers: hop-by-hop and framing headers are stripped both ways, ``Via`` is kept and
  extended with the relay's host, ``sb-hc-*`` query parameters and the relay's token are
  stripped.  Errors: 404 unknown path, 401/403 auth, 405 CONNECT, 400 Upgrade, 413 body
  over the limit, 502 no listener, 504 no response in time (per entity), 431 head too big
  (the front door).

Bodies stream in both directions with backpressure; the relay holds at most 64 kB of a
control-channel request body and a transport buffer's worth of anything else.

Modules: :mod:`~relayd.transports.http.door` (the factory and the control-channel response
router), :mod:`~relayd.transports.http.connection` (one client connection, keep-alive, deadlines),
:mod:`~relayd.transports.http.exchange` (one request/response; :mod:`.upload` its request body,
:mod:`.responses` its response state machine and error writing), :mod:`.request` (target and
headers), :mod:`.policy` (what an entity kind changes) with :mod:`.soap` (``kind = "soap"``).
HTTP/1.1 framing itself is :mod:`relayd.wire.http1`.
"""
