"""Mint an IDTOKEN with HTCondor's own C++ code, for checking our derivation against it.

The PyPI wheel has no token-creating API, so this calls ``Condor_Auth_Passwd::generate_token``
in the wheel's shared library through ctypes. It builds libstdc++ (C++11 ABI) strings and a
vector by hand, which is fragile by nature: run it in a child process so a crash fails one test
rather than the suite.

    CONDOR_CONFIG=/pool/condor_config python htcondor_mint.py SUBJECT LIFETIME [AUTHZ ...]

prints the token, signed with the key POOL, or with the key $ANNEX_MINT_KEY_ID names (the file
of that name in SEC_PASSWORD_DIRECTORY). Exit 3 means this library has no generate_token of the known signature.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# HTCondor 24.x/25.x: generate_token(const string& id, const string& key_id,
#   const vector<string>& authz, long lifetime, bool capability, string& token, int ident,
#   CondorError* err, const classad::ClassAd* ad)
_SYMBOL = (
    "_ZN18Condor_Auth_Passwd14generate_tokenERKNSt7__cxx1112basic_stringIcSt11char_traitsIcE"
    "SaIcEEES7_RKSt6vectorIS5_SaIS5_EElbRS5_iP11CondorErrorPKN7classad7ClassAdE"
)
_NO_SYMBOL = 3


class _StdString(ctypes.Structure):
    # libstdc++ std::string: data pointer, length, then a 16-byte union (inline buffer or capacity).
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t), ("local", ctypes.c_char * 16)]


class _StdVector(ctypes.Structure):
    _fields_ = [("begin", ctypes.c_void_p), ("end", ctypes.c_void_p), ("cap", ctypes.c_void_p)]


_keep_alive: list[object] = []


def _fill(target: _StdString, value: bytes) -> None:
    if len(value) < 16:
        target.local = value
        target.data = ctypes.addressof(target) + _StdString.local.offset
    else:
        heap = ctypes.create_string_buffer(value)
        _keep_alive.append(heap)
        target.data = ctypes.addressof(heap)
        ctypes.memmove(
            ctypes.addressof(target) + _StdString.local.offset, len(value).to_bytes(8, "little"), 8
        )
    target.size = len(value)


def _library() -> ctypes.CDLL:
    import htcondor2  # loading the bindings initialises the configuration in the library

    libs = Path(htcondor2.__file__).resolve().parent.parent / "htcondor.libs"
    return ctypes.CDLL(str(next(libs.glob("libcondor_utils_*.so"))))


def main(argv: list[str]) -> int:
    subject, lifetime, authz = argv[0].encode(), int(argv[1]), [a.encode() for a in argv[2:]]
    lib = _library()
    try:
        generate = lib[_SYMBOL]
    except AttributeError:
        return _NO_SYMBOL
    generate.restype = ctypes.c_bool
    generate.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long, ctypes.c_bool, ctypes.c_void_p,
                                                 ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    ident, key_id, token = _StdString(), _StdString(), _StdString()
    _fill(ident, subject)
    _fill(key_id, os.environ.get("ANNEX_MINT_KEY_ID", "POOL").encode())
    _fill(token, b"")
    items = (_StdString * max(1, len(authz)))()
    for slot, value in zip(items, authz):
        _fill(slot, value)
    start = ctypes.addressof(items)
    end = start + ctypes.sizeof(_StdString) * len(authz)
    vector = _StdVector(start, end, end)
    ok = generate(ctypes.addressof(ident), ctypes.addressof(key_id), ctypes.addressof(vector),
                  lifetime, False, ctypes.addressof(token), 0, None, None)
    if not ok:
        print("generate_token failed", file=sys.stderr)
        return 1
    print(ctypes.string_at(token.data, token.size).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
