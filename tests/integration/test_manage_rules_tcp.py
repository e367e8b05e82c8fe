"""SAS rules at run time (issue 12 item 6) on the net.tcp door, through a real ``twistd -n relayd``:
a TCP-door connection whose Send token's rule is deleted, or whose signing key is regenerated,
is closed at once as the WebSocket senders are (docs/operations.rst "Keys and rules at run time"):

* paired with a listener: the client's TCP connection is reset and the listener's leg is closed
  with relayd.access.REVOKED_CODE / REVOKED_REASON;
* still waiting for a listener, or publishing events: the client gets the framing fault
  ``EndpointAccessDenied``, then the connection closes;
* a connection signed by another rule (or the rule's other key) is untouched.

The TCP clients are raw [MC-NMF] sockets, the listener a raw Hybrid Connections listener."""

import socket
import time
from urllib.parse import quote

import pytest

from relayd import access
from relayd.wire import nmf, sas
from tests.integration.test_manage_rules import expect_close, make_rule, still_open
from tests.support.manage import call, relay_of_its_own
from tests.support.rawws import RawWS, listen

CONFIG = """
[[tcp_ports]]
listen = "tcp:0:interface=127.0.0.1"
mode = "nettcp"
"""
PRIMARY = "dGNwLWRvb3ItcHJpbWFyeS1rZXktZm9yLXRlc3Rz"
SECONDARY = "dGNwLWRvb3Itc2Vjb25kYXJ5LWtleS1mb3ItdGVzdHM="
REVOKED = (access.REVOKED_CODE, access.REVOKED_REASON)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    for proc in relay_of_its_own(tmp_path_factory, "rules-tcp", extra=CONFIG):
        proc.nettcp_port = proc.door_port("nettcp door (routed by Via)")
        yield proc


def door_client(relay, path, rule, key, end_preamble=False):
    """A net.tcp client that has sent its preamble (Duplex, binary session encoding) with a Via
    carrying a Send token of ``rule``/``key``."""
    token = sas.make_token("http://127.0.0.1/" + path, rule, key, int(time.time()) + 600)
    via = "net.tcp://127.0.0.1:%d/%s?sb-hc-token=%s" % (relay.nettcp_port, path, quote(token, safe=""))
    c = socket.create_connection(("127.0.0.1", relay.nettcp_port), timeout=10)
    c.sendall(b"\x00\x01\x00\x01\x02" + nmf.encode_via(via) + b"\x03\x08" + (b"\x0c" if end_preamble else b""))
    return c


def accept(relay, ctl):
    """The listener accepts the next offer: its rendezvous leg, open."""
    leg = RawWS(relay.port).start(ctl.recv_json()["accept"]["address"])
    assert leg.finish() == 101, leg.status
    return leg


def paired(relay, ctl, path, rule, key):
    """(client, listener's leg) of a door connection the listener took, bytes flowing both ways."""
    client = door_client(relay, path, rule, key)
    leg = accept(relay, ctl)
    assert leg.recv_message()[1].startswith(b"\x00\x01\x00\x01\x02")  # the preamble, as the client sent it
    leg.send_message(b"\x0b")  # the service's PreambleAck
    assert client.recv(1) == b"\x0b"
    return client, leg


def flows(client, leg):
    """Bytes still go both ways between ``client`` and ``leg``."""
    client.sendall(b"ping")
    got = b""
    while len(got) < 4:
        got += leg.recv_message()[1]
    leg.send_message(b"pong")
    return got == b"ping" and client.recv(4) == b"pong"


def ended(client, timeout=10):
    """Everything the relay sends ``client`` until its connection ends (EOF or reset); fails
    when it does not end within ``timeout`` seconds."""
    client.settimeout(timeout)
    got = b""
    try:
        while True:
            data = client.recv(4096)
            if not data:
                return got
            got += data
    except ConnectionResetError:
        return got
    except socket.timeout:
        raise AssertionError("the TCP connection was still open %s s after the revocation" % timeout)


def test_paired_door_connections_are_cut_when_their_rule_or_key_goes(relay):
    doomed_key = make_rule(relay, "tcp-doomed", ["Send"])["secondary_key"]
    make_rule(relay, "tcp-kept", ["Send"], primary_key=PRIMARY, secondary_key=SECONDARY)
    ctl = listen(relay)
    doomed, doomed_leg = paired(relay, ctl, "echo", "tcp-doomed", doomed_key)
    kept, kept_leg = paired(relay, ctl, "echo", "tcp-kept", PRIMARY)
    other, other_leg = paired(relay, ctl, "echo", "tcp-kept", SECONDARY)
    try:
        assert call(relay, "DELETE", "rules/tcp-doomed")[0] == 200
        assert expect_close(doomed_leg) == REVOKED
        assert ended(doomed) == b""  # reset mid-stream: no fault record inside the relayed bytes
        assert flows(kept, kept_leg) and flows(other, other_leg)
        # the kept rule's primary key, regenerated: what it signed goes, the secondary's stays
        assert call(relay, "POST", "rules/tcp-kept/regenerate", {"key_type": "primary"})[0] == 200
        assert expect_close(kept_leg) == REVOKED
        assert ended(kept) == b""
        assert flows(other, other_leg) and still_open(other_leg) and still_open(ctl)
    finally:
        for s in (doomed, kept, other):
            s.close()
        for ws in (doomed_leg, kept_leg, other_leg, ctl):
            ws.close()
        call(relay, "DELETE", "rules/tcp-kept")


def test_a_door_connection_waiting_for_its_listener_gets_a_fault(relay):
    key = make_rule(relay, "tcp-waiting", ["Send"])["primary_key"]
    ctl = listen(relay)
    client = door_client(relay, "echo", "tcp-waiting", key)
    try:
        assert "accept" in ctl.recv_json()  # offered, not accepted: the client waits for its PreambleAck
        assert call(relay, "DELETE", "rules/tcp-waiting")[0] == 200
        assert ended(client) == nmf.fault(nmf.ENDPOINT_ACCESS_DENIED)
        assert still_open(ctl)
    finally:
        client.close()
        ctl.close()


def test_a_nettcp_event_publisher_gets_a_fault_when_its_rule_goes(relay):
    assert call(relay, "PUT", "entities/tcp-feed", {"kind": "multicast"})[0] == 201
    doomed_key = make_rule(relay, "pub", ["Send"], path="tcp-feed")["primary_key"]
    kept_key = make_rule(relay, "pub-kept", ["Send"], path="tcp-feed")["primary_key"]
    doomed = door_client(relay, "tcp-feed", "pub", doomed_key, end_preamble=True)
    kept = door_client(relay, "tcp-feed", "pub-kept", kept_key, end_preamble=True)
    try:
        assert doomed.recv(1) == nmf.PREAMBLE_ACK and kept.recv(1) == nmf.PREAMBLE_ACK
        assert call(relay, "DELETE", "entities/tcp-feed/$rules/pub")[0] == 200
        assert ended(doomed) == nmf.fault(nmf.ENDPOINT_ACCESS_DENIED)
        kept.sendall(nmf.END)  # the other publisher's session goes on and ends as it should
        assert ended(kept) == nmf.END
    finally:
        doomed.close()
        kept.close()
        call(relay, "DELETE", "entities/tcp-feed")
