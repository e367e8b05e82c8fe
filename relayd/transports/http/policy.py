"""What an entity kind changes in HTTP relaying: a policy object per kind, plugged into the
HTTP door (``HttpDoor(policies=...)``), asked by each exchange through these interfaces.

An entity of kind ``hybrid`` has no policy: requests and responses are relayed as they are.
Kinds with their own rules (``soap``: :mod:`relayd.transports.http.soap`) provide an
:class:`IKindPolicy`; it gives each exchange on such an entity an :class:`IRequestPolicy`.
"""

from zope.interface import Attribute, Interface


class IKindPolicy(Interface):
    """The rules of one entity kind, shared by all its exchanges."""

    kind = Attribute("The entity kind this policy serves (the ``kind`` of the entity's config).")

    def for_request(exchange, query):
        """The :class:`IRequestPolicy` for one exchange on an entity of this kind (``query``:
        the request target's raw query string)."""

    def fault_version(head):
        """For a request in this kind's format (e.g. a SOAP POST), the format version its
        relay-side errors must use even when no entity matched; else None."""

    def fault(version, status, message, addressing):
        """The error document for ``status``/``message`` in ``version`` of this kind's format,
        an object with ``status``, ``content_type`` and ``body`` (bytes)."""


class IRequestPolicy(Interface):
    """One exchange's rules.  The exchange calls these; the policy calls back only the
    exchange's policy-facing methods (``head_token``, ``sender_known``, ``authorize``,
    ``limit_body_time``, ``forward_body``, ``refuse``, ``refuse_and_close``, ``answer_fault``,
    ``gone``)."""

    fault_version = Attribute("The version relay-side errors of this request use (None: JSON).")
    collecting = Attribute("True while the policy reads the request body whole before routing.")
    rewrites = Attribute("True when the response body is rewritten whole (``rewrite``).")
    max_rewritten = Attribute("The largest response body ``rewrite`` accepts (bytes).")

    def reads_body_first():
        """True when the body must be read whole (``collect``) before the request is routed."""

    def collect(length):
        """Start reading the body whole (``length``: the declared length, or None)."""

    def data(data):
        """Bytes of the body read whole."""

    def complete():
        """The body read whole is complete: check it, then ``exchange.forward_body``."""

    def rewrite(payload, headers):
        """The response body to send for ``payload`` (whole)."""

    def addressing():
        """Keyword arguments relating an error document to the request (e.g. RelatesTo)."""

    def release():
        """The exchange is over: give back what it holds and let go of the exchange."""
