"""Password hashing (argon2id) and the password policy.

The policy follows current guidance for clinical systems: length over composition rules, no passwords
that are the user's own name or a well-known weak one; what is wrong is said in plain words.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()

# The most common choices in breach lists, and the ones a hospital user is likely to pick.
_WEAK = {
    "password",
    "password1",
    "password123",
    "passw0rd",
    "qwerty",
    "qwertyuiop",
    "letmein",
    "welcome",
    "welcome1",
    "123456789012",
    "iloveyou",
    "admin",
    "administrator",
    "changeme",
    "hospital",
    "radiology",
    "xray",
    "pacs",
    "nhs",
    "monkey",
    "dragon",
    "football",
    "sunshine",
    "princess",
    "trustno1",
}

MAX_LENGTH = 256  # argon2 hashes anything, but a megabyte "password" is a denial of service, not a secret


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when the password matches; a malformed or empty stored hash never matches."""
    if not stored_hash or len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


# Burn the same time for an unknown user name as for a wrong password, so timing does not reveal accounts.
_DUMMY_HASH = _HASHER.hash("imex-timing-equaliser")


def burn_time(password: str) -> None:
    verify_password(_DUMMY_HASH, password)


def policy_problems(password: str, *, username: str = "", full_name: str = "", min_length: int = 12) -> list[str]:
    """What is wrong with a new password, in words a user can act on; empty when it is acceptable."""
    problems: list[str] = []
    if len(password) < min_length:
        problems.append(f"use at least {min_length} characters (a short phrase is easiest to remember)")
    if len(password) > MAX_LENGTH:
        problems.append(f"use at most {MAX_LENGTH} characters")
    lowered = password.lower()
    core = "".join(ch for ch in lowered if ch.isalnum())
    if lowered in _WEAK or core in _WEAK or core.rstrip("0123456789") in _WEAK:
        problems.append("this password is among the most commonly used ones; choose another")
    elif len(set(password)) < 4:
        problems.append("use more different characters")
    names = [username.lower()] + [part.lower() for part in full_name.split() if len(part) >= 3]
    if any(name and name in lowered for name in names):
        problems.append("do not include your user name or your name")
    return problems
