"""Entity names: the one rule for what an entity path may be, owned by the model.

The config file, the namespace (management API, create-on-listen), the management site and
the CLI all check paths with :func:`validate_entity_path`.  Pure: no Twisted, no Autobahn.
"""

# Entity names: ASCII letters, digits and these, in segments joined by '/'.  ASCII only, so that
# two names never fold onto one (entity paths are case-insensitive: 'K' U+212A lower()s to 'k'),
# and never a '.' or '..' segment, which a server or a token check could resolve upwards.
MAX_ENTITY_PATH = 260
ENTITY_NAME_PUNCTUATION = "-._~"
_ENTITY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + ENTITY_NAME_PUNCTUATION)


def validate_entity_path(path):
    """Return an error string for a bad entity path, else None.

    A path is one or more segments joined by ``/``; a segment is ASCII letters, digits,
    ``-``, ``.``, ``_`` and ``~``, and is neither ``.`` nor ``..``; the whole path is at most
    :data:`MAX_ENTITY_PATH` characters.  (``$`` is not in the set: ``$hc`` and ``$relayd``
    are relayd's own paths.)
    """
    if not isinstance(path, str) or not path:
        return "must be a non-empty path such as 'echo' or 'orders/eu'"
    if len(path) > MAX_ENTITY_PATH:
        return "must be at most %d characters, got %d" % (MAX_ENTITY_PATH, len(path))
    for ch in path:
        if ch != "/" and ch not in _ENTITY_CHARS:
            shown = ("U+%04X %r" % (ord(ch), ch)) if not ch.isascii() or not ch.isprintable() else repr(ch)
            return ("may contain only ASCII letters, digits, '-', '.', '_', '~' and '/' between segments, "
                    "found %s" % shown)
    segments = path.split("/")
    if "" in segments:
        return "must not have leading, trailing or empty segments ('/x', 'x/', 'a//b')"
    if "." in segments or ".." in segments:
        return "must not have a '.' or '..' segment (use the resolved path, e.g. 'echo' for 'x/../echo')"
    return None
