"""A relay (the same RelayService ``twistd -n relayd`` runs) in a process with the garbage
collector DISABLED, logging to a file, that prints every 0.1 s how many connection objects are
still alive: ``ALIVE <protocols> <transports> <producers>``.  With cycles broken on close,
closed connections are freed by reference counting alone and the counts return to zero.

Usage: python -m tests.support.gc_relay CONFIG LOGFILE
"""

import gc
import sys


def main():
    config_path, log_path = sys.argv[1], sys.argv[2]
    from twisted.internet import reactor, task, tcp
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.protocols.policies import ProtocolWrapper

    from relayd import config, pipe
    from relayd.relay_service import RelayService
    from relayd.transports.websocket import HybridProtocol

    log_file = open(log_path, "a")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    service = RelayService(config.load(config_path), reactor)
    gc.collect()
    gc.disable()

    def report():
        if not getattr(service, "ports", None):
            return
        objects = gc.get_objects()
        counts = (
            sum(isinstance(o, HybridProtocol) for o in objects),
            sum(isinstance(o, (tcp.Server, ProtocolWrapper)) for o in objects),
            sum(isinstance(o, pipe.PauseReading) for o in objects),
        )
        print("PORT %d ALIVE %d %d %d" % ((service.ports[0].getHost().port,) + counts), flush=True)

    reactor.callWhenRunning(service.startService)
    task.LoopingCall(report).start(0.1, now=False)
    reactor.run()


if __name__ == "__main__":
    main()
