"""The store's writer thread: the blocking SQLite calls of run-time changes (management API,
``create_on_listen``) run on one dedicated thread, never on the reactor's.

:class:`StoreWriter` is a service (a child of the relay's ``MultiService``): started with the
relay, it runs each :meth:`run` call on its one thread, in the order they were made, and
returns a Deferred that fires, on the reactor thread, once the call returned -- when the write
is durable -- or fails with its exception.  Stopping it lets the queued writes finish, then
closes the store on that thread.  The store is read only at start-up, before the reactor runs
(:class:`relayd.namespace.Namespace`).  Under a fake clock (a ``task.Clock`` as the reactor,
the in-memory test harness) there is no thread to hand results back from: writes run at once."""

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

THREAD_NAME = "relayd-store"


class StoreWriter(service.Service):
    def __init__(self, store, reactor):
        self.store = store
        self.reactor = reactor
        self.pool = ThreadPool(1, 1, name=THREAD_NAME)
        self.threaded = hasattr(reactor, "callFromThread")

    def startService(self):
        super().startService()
        if self.threaded:
            self.pool.start()

    def run(self, call, *args):
        """``call(*args)`` on the writer thread; a Deferred of its result."""
        if not (self.running and self.threaded):
            return defer.maybeDeferred(call, *args)  # before start / after stop: nothing else uses the store
        return threads.deferToThreadPool(self.reactor, self.pool, call, *args)

    def stopService(self):
        super().stopService()
        if not self.threaded:
            self.store.close()
            return
        self.pool.callInThread(self.store.close)
        self.pool.stop()  # joins the thread once the queued writes are done
