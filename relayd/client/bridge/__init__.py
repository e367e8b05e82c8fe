"""``relayd bridge``: publish local services through the relay and reach remote ones, like
Azure Relay Bridge (azbridge), laid out as azbridge lays it out: one forwarder per module over
one shared pump.

* :mod:`relayd.client.bridge.tcp_remote` -- ``-R``: :class:`~.tcp_remote.RemoteForwarder`, a
  listener on an entity whose relayed connections are connected to a local TCP service or
  Unix socket (azbridge's ``TcpRemoteForwarder``).
* :mod:`relayd.client.bridge.tcp_local` -- ``-L``: :class:`~.tcp_local.LocalForwarder`, a local
  TCP port or Unix socket whose connections become relay sender connections (azbridge's
  ``TcpLocalForwardBridge``).
* ``-H``: :class:`relayd.client.http.HttpForwarder`, the HTTP side of the listener SDK.
* :mod:`relayd.client.bridge.tunnel` -- the shared pump: a :class:`~.tunnel.Tunnel` splices one
  relayed connection with one local stream, with half-close and reset propagation (azbridge's
  ``StreamPump``).
* :mod:`relayd.client.bridge.forwarder` -- :class:`~.forwarder.IForwarder`, what the command
  asks of each forwarder (azbridge's ``IRemoteForwarder``).
* :mod:`relayd.client.bridge.cli` -- the command: options, ``--config``, start and stop.
"""
