"""URL path rules shared by the relay (token scopes) and the bridge (``-H`` targets).

A dot segment (``.`` or ``..``) is one once percent-decoded, however deeply (``%2e%2e``,
``%252e%252e``), and also when a decoded ``%2f`` or a backslash splits it off: servers that
normalise paths treat all of these alike, so relayd never lets one through where it could widen
a scope or climb out of a base path.
"""

from urllib.parse import unquote

# Percent-decoding rounds before giving up (``%25`` nests): enough for any real client.
MAX_DECODE_ROUNDS = 4
DOT_SEGMENTS = (".", "..")


def fully_decoded(text):
    """``text`` percent-decoded until it no longer changes (``%252e`` -> ``%2e`` -> ``.``), bounded."""
    for _ in range(MAX_DECODE_ROUNDS):
        plain = unquote(text)
        if plain == text:
            break
        text = plain
    return text


def has_dot_segment(path):
    """True when a segment of ``path`` is ``.`` or ``..`` once percent-decoded (``%2e%2e``,
    ``%252e``), also when a decoded ``%2f`` or a backslash splits off such a segment."""
    return any(seg in DOT_SEGMENTS for seg in fully_decoded(path).replace("\\", "/").split("/"))
