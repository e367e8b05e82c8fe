"""In-place payload (un)masking with Autobahn's compiled NVX XOR routine, else pure Python.

``_nvx_xormasker`` is the top-level cffi module Autobahn builds for its ``XorMaskerNvx``; it is a
private name, pinned by tests/unit/test_wsframe.py (in-place result equal to the pure fallback at
many lengths and phases).  Autobahn's own masker copies every payload in and out; here the C
routine runs on the caller's buffer (``ffi.from_buffer``), and no object outlives the call.
"""

from relayd.wire import wsframe

try:  # pragma: no branch - which one depends on how Autobahn was built
    from _nvx_xormasker import ffi as _ffi, lib as _lib
except ImportError:  # Autobahn built without its C extension
    _ffi = _lib = None

# Up to this many bytes the pure-Python XOR is faster than the three cffi calls (measured on the
# 2-core VM, phase 1: 64 B 1.8 us pure vs 2.1 us NVX; 128 B 2.0 vs 2.2; 256 B 2.3 vs 2.1;
# 4 KiB 7.7 vs 1.5; 64 KiB 191 vs 2.6).
PURE_MAX = 128

HAVE_NVX = _lib is not None


def _nvx_xor(view, mask, phase=0):
    n = len(view)
    if not n:
        return
    shift = phase & 3
    if shift:
        mask = bytes(mask[shift:]) + bytes(mask[:shift])
    data = _ffi.from_buffer(view, require_writable=True)  # before the masker: it may raise
    masker = _lib.nvx_xormask_new(bytes(mask))
    _lib.nvx_xormask_process(masker, data, n)
    _lib.nvx_xormask_free(masker)


def xor_in_place(view, mask, phase=0):
    """XOR the writable buffer ``view`` with the 4-byte ``mask`` in place, the mask rotated by
    ``phase`` (payload bytes of this frame already done).  Same result as
    :func:`relayd.wire.wsframe.xor_mask`."""
    if _lib is None or len(view) <= PURE_MAX:
        wsframe.xor_mask(view, mask, phase)
    else:
        _nvx_xor(view, mask, phase)
