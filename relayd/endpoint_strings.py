"""Listen endpoint strings (``tcp:``, ``tcp6:``, ``ssl:``, ``unix:``; Twisted's server endpoint
syntax) parsed and checked with errors that name the option and the fix, and relayd's server TLS
context for ``ssl:``.  Used by the config file (``listen``, ``tcp_ports[].listen``), by
``relayd.tap`` to start the ports, and for the listen backlog default of ``relayd bridge -L``.
"""

from dataclasses import dataclass, field

DEFAULT_LISTEN = "tcp:9090:interface=127.0.0.1"
# Twisted's own default listen backlog is 50: under connection bursts SYNs overflow and clients
# wait for a 1 s retransmit.
DEFAULT_LISTEN_BACKLOG = 1024
MAX_BACKLOG = 65535

# The keys each endpoint type accepts (Twisted's server endpoint syntax); sslmethod is refused:
# relayd's TLS context always speaks TLS 1.2 or later.  reuseport=1 is relayd's own: the port is
# bound with SO_REUSEPORT (relayd.reuseport), shared by the workers of ``relayd serve --workers``.
_ENDPOINT_KEYS = {
    "tcp": {"port", "interface", "backlog", "reuseport"},
    "tcp6": {"port", "interface", "backlog", "reuseport"},
    "ssl": {"port", "interface", "backlog", "privateKey", "certKey", "extraCertChain", "dhParameters", "reuseport"},
    "unix": {"address", "mode", "backlog", "lockfile"},
}
_ENDPOINT_EXAMPLES = {
    "tcp": "tcp:9090:interface=127.0.0.1",
    "tcp6": "tcp6:9090:interface=\\:\\:1",
    "ssl": "ssl:9443:privateKey=key.pem:certKey=cert.pem",
    "unix": "unix:/run/relayd/relayd.sock",
}


@dataclass
class ListenSpec:
    """A parsed listen endpoint string (``tcp:``, ``tcp6:``, ``ssl:`` or ``unix:``)."""

    kind: str
    description: str
    port: int | None = None  # tcp, tcp6, ssl
    address: str | None = None  # unix
    interface: str | None = None
    backlog: int | None = None  # None: limits.listen_backlog
    options: dict = field(default_factory=dict)  # the other key=value options, as given

    def with_backlog(self, default):
        """The endpoint string with ``backlog=`` added unless it sets one."""
        if self.backlog is not None:
            return self.description
        return "%s:backlog=%d" % (self.description, default)

    @property
    def reuseport(self):
        return self.options.get("reuseport") == "1"

    def display(self):
        """host:port (or the socket path) for messages."""
        if self.kind == "unix":
            return self.address
        host = self.interface or ("::" if self.kind == "tcp6" else "0.0.0.0")
        return "%s:%d" % ("[%s]" % host if ":" in host else host, self.port)


def _split_endpoint(description):
    """Twisted's endpoint syntax: fields separated by unescaped ``:``, ``\\`` escapes the next
    character, a field with an unescaped ``=`` is ``key=value``.  -> (args, kwargs)."""
    fields, current, key = [], [], None
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            fields.append((key, "".join(current)))
            current, key = [], None
        elif ch == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(ch)
    fields.append((key, "".join(current)))
    args = [value for key, value in fields if key is None]
    kwargs = {}
    for key, value in fields:
        if key is not None:
            if key in kwargs:
                raise ValueError("%s= is given twice" % key)
            kwargs[key] = value
    return args, kwargs


def parse_listen(description):
    """Parse and check a listen endpoint string; ValueError says what is wrong and what to write."""
    if not isinstance(description, str) or ":" not in description:
        raise ValueError("must be a Twisted endpoint string such as %r, got %r" % (DEFAULT_LISTEN, description))
    args, kwargs = _split_endpoint(description)
    kind = args.pop(0)
    if kind not in _ENDPOINT_KEYS:
        raise ValueError("endpoint type %r is not supported; use tcp:, tcp6:, ssl: or unix: (e.g. %r)"
                         % (kind, DEFAULT_LISTEN))
    example = _ENDPOINT_EXAMPLES[kind]
    if kind == "ssl" and "sslmethod" in kwargs:
        raise ValueError("sslmethod= is not supported: relayd always negotiates TLS 1.2 or later")
    for key in kwargs:
        if key not in _ENDPOINT_KEYS[kind]:
            raise ValueError("%s: unknown option %s=; %s: endpoints take %s (e.g. %r)" % (
                description, key, kind, ", ".join(sorted(_ENDPOINT_KEYS[kind])), example))
    positional = "address" if kind == "unix" else "port"
    if args and positional in kwargs:
        raise ValueError("%s: the %s is given twice" % (description, positional))
    if len(args) > 1:
        raise ValueError("%s: too many fields (%r); expected e.g. %r" % (description, args[1:], example))
    value = args[0] if args else kwargs.pop(positional, None)
    kwargs.pop(positional, None)
    if not value:
        raise ValueError("%s: no %s; expected e.g. %r" % (description, positional, example))
    spec = ListenSpec(kind=kind, description=description)
    if kind == "unix":
        spec.address = value
    else:
        if not value.isdigit() or not 0 <= int(value) <= 65535:
            raise ValueError("%s: port %r is not a number from 0 to 65535" % (description, value))
        spec.port = int(value)
        interface = kwargs.pop("interface", None)
        if interface is not None:
            import ipaddress

            try:
                ipaddress.ip_address(interface)
            except ValueError:
                raise ValueError("%s: interface=%s is not an IP address (tcp6 addresses escape their "
                                 "colons: interface=\\:\\:1)" % (description, interface))
            spec.interface = interface
    backlog = kwargs.pop("backlog", None)
    if backlog is not None:
        if not backlog.isdigit() or not 1 <= int(backlog) <= MAX_BACKLOG:
            raise ValueError("%s: backlog=%s is not a number from 1 to %d" % (description, backlog, MAX_BACKLOG))
        spec.backlog = int(backlog)
    if kind == "unix" and "mode" in kwargs:
        try:
            int(kwargs["mode"], 8)
        except ValueError:
            raise ValueError("%s: mode=%s is not an octal file mode such as 660" % (description, kwargs["mode"]))
    if kwargs.get("reuseport", "1") != "1":
        raise ValueError("%s: reuseport= must be 1 (SO_REUSEPORT: processes of the same user share the port); "
                         "leave it out for a port of this process alone" % description)
    if kind == "unix" and kwargs.get("lockfile", "1") not in ("0", "1"):
        raise ValueError("%s: lockfile= must be 0 or 1" % description)
    spec.options = kwargs
    if kind == "ssl":
        tls_options(spec)  # the key and certificate files must be there and match
    return spec


def _read_pem(spec, key, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError("%s: %s=%s cannot be read: %s" % (spec.description, key, path, e.strerror or e))


def tls_options(spec):
    """The server TLS context of an ``ssl:`` :class:`ListenSpec`: its key and certificate (and
    chain), TLS 1.2 or later, and ALPN answered with ``http/1.1``.

    Twisted 26.10 installs an ALPN callback on every server context and, with no protocols
    configured, answers a client's ALPN offer with a fatal alert, so curl, browsers and
    ``openssl s_client -alpn`` could not connect; naming the protocol relayd speaks fixes that
    on every Twisted version.  ValueError names the file and what is wrong with it."""
    from OpenSSL import SSL, crypto
    from twisted.internet import ssl

    private_key = spec.options.get("privateKey", "server.pem")
    cert_key = spec.options.get("certKey") or private_key
    key_pem = _read_pem(spec, "privateKey", private_key)
    cert_pem = _read_pem(spec, "certKey", cert_key)
    try:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    except crypto.Error:
        raise ValueError("%s: certKey=%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                         % (spec.description, cert_key))
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error:
        raise ValueError("%s: privateKey=%s holds no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)"
                         % (spec.description, private_key))
    chain = None
    if spec.options.get("extraCertChain"):
        path = spec.options["extraCertChain"]
        text = _read_pem(spec, "extraCertChain", path)
        blocks = [b"-----BEGIN CERTIFICATE-----" + part.split(b"-----END CERTIFICATE-----")[0]
                  + b"-----END CERTIFICATE-----" for part in text.split(b"-----BEGIN CERTIFICATE-----")[1:]]
        try:
            chain = [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
        except crypto.Error:
            chain = []
        if not chain:
            raise ValueError("%s: extraCertChain=%s holds no PEM certificates" % (spec.description, path))
    dh = None
    if spec.options.get("dhParameters"):
        from twisted.python.filepath import FilePath

        _read_pem(spec, "dhParameters", spec.options["dhParameters"])
        dh = ssl.DiffieHellmanParameters.fromFile(FilePath(spec.options["dhParameters"]))
    options = ssl.CertificateOptions(
        privateKey=key, certificate=certificate, extraCertChain=chain, dhParameters=dh,
        acceptableProtocols=[b"http/1.1"], raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()
    except SSL.Error as e:
        raise ValueError("%s: privateKey=%s does not match the certificate in certKey=%s (%s)"
                         % (spec.description, private_key, cert_key, e))
    return options
