"""``twistd relayd``: its options, read with the config file, and ``makeService``.

Only what the options need is imported here (twistd's usage, :mod:`relayd.config`): a mistake in
the options or the config file is reported before the relay's parts are imported.  The service
tree itself is :mod:`relayd.relay_service`.
"""

import sys

from twisted.python import usage

from relayd import config, logs


class Options(usage.Options):
    synopsis = "[--config relayd.toml] [--listen ENDPOINT ...] [--data-dir DIR] [-v|-q] [--log-format text|json]"
    longdesc = (
        "Run the relay.  With no options it listens on 127.0.0.1:9090, keeps its state in "
        "the default data directory and creates a namespace root key on first start "
        "(show it with: relayd key show)."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file (see docs/configuration.rst)"],
        ["data-dir", "d", None, "state directory (default: $RELAYD_DATA_DIR or ~/.local/share/relayd)"],
        ["public-url", None, None, "base URL clients use to reach the relay, e.g. wss://relay.example.com"],
        ["log-format", None, "text", "text (twistd's lines) or json (one object per line); see docs/operations.rst"],
        ["worker", None, None, "worker I of relayd serve --workers: shared ports, node_url's port + I"],
    ]
    optFlags = [
        ["create-on-listen", None, "create an unknown hybrid connection when a listener with a Manage token listens on it"],
        ["verbose", "v", "log debug lines too"],
        ["quiet", "q", "log warnings and errors only"],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint):
        """Twisted server endpoint to listen on (repeatable), e.g. tcp:9090:interface=127.0.0.1"""
        self["listen"].append(endpoint)

    def postOptions(self):
        try:
            if self["verbose"] and self["quiet"]:
                raise config.ConfigError("-q and -v contradict each other; give one of them")
            if self["log-format"] not in logs.FORMATS:
                raise config.ConfigError("--log-format %s: use one of %s"
                                         % (self["log-format"], ", ".join(logs.FORMATS)))
            if self["config"]:
                settings = config.load(self["config"])
            else:
                settings = config.parse({}, "<defaults>")
            overrides = {}
            if self["listen"]:
                overrides["listen"] = self["listen"]
            if self["public-url"]:
                overrides["public_url"] = self["public-url"]
            if overrides:
                merged = config.parse({"relay": overrides}, "command line")
                for key in overrides:
                    setattr(settings, key, getattr(merged, key))
            if self["data-dir"]:
                settings.data_dir = self["data-dir"]
            if self["create-on-listen"]:
                settings.create_on_listen = True
            if self["worker"] is not None:  # one of relayd serve --workers N: its own node port and id
                from relayd.workers import worker_settings

                settings = worker_settings(settings, self["worker"])
        except config.ConfigError as e:
            # The message and status 1 here rather than a UsageError: twistd 24.3 (still supported) exits
            # with status 0 after a UsageError, and the option listing would bury the message.
            print("%s: %s" % (" ".join(sys.argv[0:2]), e), file=sys.stderr, flush=True)
            raise SystemExit(1)
        self.settings = settings


def _report_startup_errors():
    """Uncaught StartupError (twistd re-raises what startService raised): the message on stderr
    instead of a traceback; the exit status stays 1."""
    from relayd.relay_service import StartupError

    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, StartupError):
            print("relayd: %s" % value, file=sys.__stderr__, flush=True)
        else:
            previous(kind, value, tb)

    sys.excepthook = hook


def makeService(options):
    """The relay, under a :class:`relayd.logs.LoggedService` that hands twistd relayd's log
    observer (levels, format, no factory noise) on twistd's own log file."""
    from relayd.relay_service import RelayService

    _report_startup_errors()
    observer = logs.observer_for_twistd(getattr(options, "parent", None),
                                        logs.level_for(options["verbose"], options["quiet"]),
                                        options["log-format"])
    return logs.LoggedService(RelayService(options.settings), observer)
