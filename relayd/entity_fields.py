"""The descriptive fields of an entity -- ``discovery``, ``display_name``, ``user_metadata`` --
and their one validation, shared by the config file (:mod:`relayd.config`), the namespace and
the management API.  Standard library only."""

DISCOVERY = ("private", "public")  # the first is the default
MAX_DISPLAY_NAME = 256
MAX_USER_METADATA = 1024  # as Azure Relay's UserMetadata
FIELDS = ("discovery", "display_name", "user_metadata")


def problem(name, value):
    """What is wrong with ``value`` for the field ``name``, or None.  The message starts with
    what the field may be (the caller names where it is)."""
    if name == "discovery":
        if value not in DISCOVERY:
            return ('must be "private" (default: not listed) or "public" (listed in the discovery feed '
                    'while a listener is online), got %r' % (value,))
        return None
    limit = MAX_DISPLAY_NAME if name == "display_name" else MAX_USER_METADATA
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        shown = value if not isinstance(value, str) else "%d characters" % len(value)
        return "must be a string of at most %d characters (or left out), got %r" % (limit, shown)
    return None
