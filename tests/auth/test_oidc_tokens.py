"""The ID token checks, with tokens signed here (joserfc) and the provider's key set given directly: the
signature must be the provider's, the issuer the configured one, the audience must contain the client,
the token must be current and carry the sign-in's nonce."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from joserfc.jwk import KeySet

from imex.auth import oidc
from imex.auth.oidc_config import parse_providers
from oidctools import CLIENT_ID, new_key, provider_table, sign

ISSUER = "https://login.kings.example"
PROVIDER = parse_providers([provider_table("kings", ISSUER)], env={})["kings"]
KEY = new_key("kings-1")
KEYS = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})
NOW = 1_900_000_000


def claims(**overrides):
    base = {"iss": ISSUER, "sub": "u-1", "aud": CLIENT_ID, "iat": NOW, "exp": NOW + 300, "nonce": "n-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def check(token: str, nonce: str = "n-1", **kwargs):
    return oidc.validate_id_token(PROVIDER, token, nonce, keys=KEYS, algorithms=("RS256",), now=NOW, **kwargs)


def refused(token: str, nonce: str = "n-1") -> str:
    with pytest.raises(oidc.TokenRefused) as exc:
        check(token, nonce)
    return str(exc.value)


def test_a_right_token_gives_its_claims():
    assert check(sign(claims(org_code="KCH"), KEY))["org_code"] == "KCH"
    assert check(sign(claims(aud=["another-api", CLIENT_ID], azp=CLIENT_ID), KEY))["sub"] == "u-1"
    assert check(sign(claims(exp=NOW - 30), KEY))  # within the clock leeway


def test_a_token_not_signed_by_the_provider_is_refused():
    assert "signature not valid (bad_signature)" in refused(sign(claims(), new_key("kings-1")))
    assert "signature not valid" in refused(sign(claims(), new_key("someone-else")))
    tampered = sign(claims(), KEY).split(".")
    payload = (
        base64.urlsafe_b64encode(
            b'{"iss":"%s","sub":"admin","aud":"%s","iat":%d,"exp":%d,"nonce":"n-1"}'
            % (ISSUER.encode(), CLIENT_ID.encode(), NOW, NOW + 300)
        )
        .rstrip(b"=")
        .decode()
    )
    assert "signature not valid" in refused(".".join([tampered[0], payload, tampered[2]]))
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode() + "." + payload + "."
    assert "signature not valid" in refused(unsigned)
    # HS256 with the provider's public key as the secret (algorithm confusion): not an algorithm we accept
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"kings-1"}').rstrip(b"=").decode()
    mac = hmac.new(KEY.as_pem(private=False), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{payload}." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert "signature not valid" in refused(confused)
    assert "not a signed JWT" in refused("not-a-token") or "signature not valid" in refused("not-a-token")


def test_issuer_audience_times_and_nonce_are_checked():
    assert "'iss'" in refused(sign(claims(iss="https://login.elsewhere.example"), KEY))
    assert "'aud'" in refused(sign(claims(aud="another-client"), KEY))
    assert "'aud'" in refused(sign(claims(aud=["another-client", "a-third"]), KEY))
    assert "'azp'" in refused(sign(claims(aud=["another-api", CLIENT_ID], azp="another-api"), KEY))
    assert "expired" in refused(sign(claims(exp=NOW - 120), KEY))
    assert "issued in the future" in refused(sign(claims(iat=NOW + 600), KEY))
    assert "'nonce'" in refused(sign(claims(nonce="n-2"), KEY))
    assert "nonce" in refused(sign(claims(nonce=None), KEY))
    assert "exp" in refused(sign(claims(exp=None), KEY))
    assert "sub" in refused(sign(claims(sub=None), KEY))
    assert "sub" in refused(sign(claims(sub=7), KEY))


def test_the_access_token_hash_is_checked_when_the_token_has_one():
    access = "an-access-token"
    at_hash = base64.urlsafe_b64encode(hashlib.sha256(access.encode()).digest()[:16]).rstrip(b"=").decode()
    assert check(sign(claims(at_hash=at_hash), KEY), access_token=access)
    with pytest.raises(oidc.TokenRefused, match="at_hash"):
        check(sign(claims(at_hash=at_hash), KEY), access_token="another-access-token")
