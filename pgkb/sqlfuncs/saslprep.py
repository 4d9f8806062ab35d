"""SASLprep (RFC 4013): the normalisation SCRAM applies to passwords, as PostgreSQL applies it.

libpq prepares a password with SASLprep before deriving its SCRAM proof, and PostgreSQL's server
does the same when it builds a verifier, so the endpoint must too, or a password with a character
SASLprep maps (a no-break space, a soft hyphen, a full-width or compatibility form) could never log
in. As in PostgreSQL, a pure-ASCII password is used as is, and one that SASLprep prohibits
(control characters, unassigned code points, bad bidirectional text) is used as is too.
"""

from __future__ import annotations

import stringprep
import unicodedata

_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space (mapped to SPACE first, so never seen here)
    stringprep.in_table_c21_c22,  # control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogates
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties / deprecated
    stringprep.in_table_c9,  # tagging characters
    stringprep.in_table_a1,  # unassigned in Unicode 3.2
)


def saslprep(password: str) -> str:
    """The string SCRAM hashes for `password` (PostgreSQL's pg_saslprep, with its fallbacks)."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    if any(check(c) for c in prepared for check in _PROHIBITED):
        return password
    if any(stringprep.in_table_d1(c) for c in prepared) and (
        any(stringprep.in_table_d2(c) for c in prepared)
        or not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
    ):
        return password
    return prepared
