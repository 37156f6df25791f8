"""Identity rules: municipality codes, pupil pseudonyms, registration ids (design.md section 3)."""
from __future__ import annotations

import re

MUNICIPALITY_CODE = re.compile(r"^GM\d{4}$")
REGISTRATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Ids of schools, groups, arrangements and pupil refs travel in URLs: same safe alphabet.
SLUG_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def is_municipality_code(value: str) -> bool:
    # fullmatch, not match: in Python `$` also matches before a trailing newline ("GM0984\n").
    return bool(MUNICIPALITY_CODE.fullmatch(value))


def is_valid_bsn(value: str) -> bool:
    """True when `value` is a 9-digit string passing the BSN 11-check (elfproef).

    Weights 9..2 for the first eight digits and -1 for the last; the sum must be a multiple of 11 and not 0.
    """
    if len(value) != 9 or not (value.isascii() and value.isdigit()):
        return False
    digits = [int(c) for c in value]
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1))) - digits[8]
    return total % 11 == 0 and total != 0


def pupil_ref_problem(ref: str) -> str | None:
    """Why a pupil ref is unacceptable, or None. Refs are the school's pseudonyms, never a BSN."""
    if not SLUG_ID.fullmatch(ref):
        return "pupil_ref must be 1-64 characters of A-Z a-z 0-9 . _ : -"
    if is_valid_bsn(ref):
        return "pupil_ref looks like a BSN (9 digits passing the 11-check); use a pseudonym, never a BSN"
    return None
