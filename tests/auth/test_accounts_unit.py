"""Passwords, second-factor codes and permissions, without a hub."""

from __future__ import annotations

import pyotp
import pytest

from imex.auth import passwords, totp
from imex.auth.permissions import BUILTIN_ROLES, PERMISSIONS, Principal, parse_permissions
from imex.auth.secrets_box import SecretBox, load_secret


def test_argon2_hash_verifies_only_the_right_password():
    stored = passwords.hash_password("a long passphrase here")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "a long passphrase here")
    assert not passwords.verify_password(stored, "a long passphrase herE")
    assert not passwords.verify_password("", "anything")
    assert not passwords.verify_password("not a hash", "anything")


def test_password_policy_explains_each_problem():
    assert passwords.policy_problems("short", min_length=12)[0].startswith("use at least 12")
    assert any("commonly used" in p for p in passwords.policy_problems("password1234", min_length=8))
    assert any("user name" in p for p in passwords.policy_problems("jsmith-is-my-name", username="jsmith"))
    assert any("different characters" in p for p in passwords.policy_problems("aaaaaaaaaaaaaaaa"))
    assert passwords.policy_problems("correct horse battery staple", username="jsmith") == []


def test_totp_accepts_current_code_once_and_neighbours_only():
    secret = totp.new_secret()
    now = 1_800_000_000.0
    code = pyotp.TOTP(secret).at(now)
    step = totp.accepted_step(secret, code, None, now=now)
    assert step == int(now // 30)
    assert totp.accepted_step(secret, code, step, now=now) is None  # replay refused
    previous = pyotp.TOTP(secret).at(now - 30)
    assert totp.accepted_step(secret, previous, None, now=now) == step - 1  # one step of drift
    assert totp.accepted_step(secret, pyotp.TOTP(secret).at(now - 120), None, now=now) is None
    assert totp.accepted_step(secret, "12345", None, now=now) is None
    assert totp.accepted_step(secret, "abcdef", None, now=now) is None


def test_qr_code_is_an_svg_of_the_provisioning_uri():
    uri = totp.provisioning_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "jsmith")
    assert (
        uri.startswith("otpauth://totp/") and "secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP" in uri and "issuer=imex" in uri
    )
    svg = totp.qr_svg(uri)
    assert svg.lstrip().startswith("<svg") and "<script" not in svg


def test_secret_box_round_trip_and_wrong_key(tmp_path):
    secret = load_secret("", tmp_path)
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_secret("", tmp_path) == secret  # made once, then reused
    box = SecretBox(secret)
    sealed = box.seal("JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.open(sealed) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        SecretBox("another key").open(sealed)


def test_builtin_roles_use_known_permissions_and_principal_checks():
    for _, (_, granted) in BUILTIN_ROLES.items():
        assert set(granted) <= set(PERMISSIONS)
    viewer = Principal(1, "v", 1, "RYJ", parse_permissions(" ".join(BUILTIN_ROLES["viewer"][1]) + " bogus"))
    assert viewer.can("transfers.view") and not viewer.can("transfers.manage")
    assert "bogus" not in viewer.permissions
    admin = Principal(2, "a", 1, "RJZ", frozenset({"system.admin"}))
    assert admin.can("audit.view") and admin.is_system_admin
