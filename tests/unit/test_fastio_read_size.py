"""relayd.fastio's read size (issue 10 item 3): when that much is waiting in the socket, one
read takes up to 1 MiB (the data legs' reads; 256 KiB reads cost a quarter more relay CPU per
GB streamed on the 2-core bench machine: more reactor turns, system calls and wake-ups per
byte).  Real loopback sockets in the test's reactor; the read sizes are what ``on_read`` got."""

import socket

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.support.waits import wait_for
from tests.unit.test_fastio import connect  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(60)

READ_SIZE = 1 << 20  # what docs/protocol.rst documents for one read of a data leg
WAITING = 3 * READ_SIZE  # bytes made to wait in the socket before it is read


@pytest_twisted.ensureDeferred
async def test_a_read_takes_up_to_1_mib_when_that_much_waits(connect):  # noqa: F811
    pair = await connect()
    transport = pair.leg.transport
    # room in the kernel for all of it, so the reads are bounded by fastio's buffer alone
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * WAITING)
    transport.stopReading()
    data = bytes(range(256)) * (WAITING // 256)
    await threads.deferToThread(pair.peer.sendall, data)
    transport.startReading()
    await wait_for(lambda: sum(map(len, pair.leg.received)) == WAITING, timeout=30)
    assert pair.leg.data() == data
    assert [len(r) for r in pair.leg.received] == [READ_SIZE] * 3
