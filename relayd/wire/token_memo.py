"""A bounded memo of SAS tokens whose signature :func:`relayd.wire.sas.verify_token` has checked.

Senders and listeners re-use one token for many connections; remembering which key signed a
given token text spares the parse and the HMAC on the next connection with the identical
text.  Nothing else is skipped: expiry, scope and rights are checked on every use.  Pure,
standard library only.
"""

TOKEN_MEMO_SIZE = 256  # tokens whose signature is remembered (at most ~10 KB each)


class VerifiedSignatures:
    """A bounded memo of token texts whose signature has been checked: token -> (parsed token,
    the key that signed it).  It spares :func:`relayd.wire.sas.verify_token` only the parse and the HMAC of the
    *identical* token text, and only while that key still belongs to a rule named ``skn``;
    expiry, scope and rights are checked on every use.  Only valid, unexpired tokens are
    remembered; when full, the oldest entry goes (tokens are re-used by the same client, so
    recent ones matter)."""

    def __init__(self, size=TOKEN_MEMO_SIZE):
        if not isinstance(size, int) or size < 1:
            raise ValueError("the token memo needs a size of at least 1, not %r" % (size,))
        self.size = size
        self._entries = {}

    def __len__(self):
        return len(self._entries)

    def __repr__(self):  # never the tokens or keys
        return "<VerifiedSignatures %d/%d>" % (len(self._entries), self.size)

    def get(self, token, now):
        """(parsed token, key) for ``token`` if remembered and not expired at ``now``, else None."""
        entry = self._entries.get(token)
        if entry is not None and entry[0].se < now:
            del self._entries[token]  # verify_token parses it again and says it expired
            return None
        return entry

    def remember(self, token, parsed, key):
        entries = self._entries
        entries.pop(token, None)
        while len(entries) >= self.size:
            del entries[next(iter(entries))]
        entries[token] = (parsed, key)
