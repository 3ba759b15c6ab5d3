"""The [[oidc]] tables: a right one is read with its defaults; each mistake stops start-up with a message that
names the table and what to fix (like every other configuration error)."""

from __future__ import annotations

import pytest

from imex.auth.oidc_config import parse_providers
from imex.config import ConfigError


def table(**overrides):
    base = {
        "name": "kings",
        "title": "King's NHS account",
        "issuer": "https://login.kings.example/realms/staff",
        "client_id": "imex",
        "client_secret": "s3cret",
        "institution_claim": "org_code",
        "institutions": {"KCH": "rjz"},
        "role_claim": "roles",
        "roles": {"radiologist": "viewer", "pacs": ["pacs_guardian", "sender"]},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_provider_is_read_with_its_defaults_and_keeps_its_secret_out_of_logs():
    providers = parse_providers([table()], env={})
    kings = providers["kings"]
    assert kings.scopes == "openid profile email" and kings.username_claim == "preferred_username"
    assert kings.institutions == {"KCH": "RJZ"}  # ODS codes checked and upper-cased
    assert kings.roles == {"radiologist": ("viewer",), "pacs": ("pacs_guardian", "sender")}
    assert kings.end_session is False and kings.redirect_uri == ""
    assert "s3cret" not in repr(kings)
    from_env = parse_providers(
        [
            table(
                client_secret=None, client_secret_env="KINGS_OIDC_SECRET", scopes=["openid", "email"], end_session=True
            )
        ],
        env={"KINGS_OIDC_SECRET": "from-the-environment"},
    )["kings"]
    assert from_env.client_secret == "from-the-environment" and from_env.scopes == "openid email"
    assert parse_providers([table(issuer="http://127.0.0.1:8443")], env={})["kings"].issuer == "http://127.0.0.1:8443"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"issuer": None}, "issuer must be a URL"),
        ({"issuer": "http://login.kings.example"}, "must use https://"),
        ({"issuer": "ftp://login.kings.example"}, "must be an https:// URL"),
        ({"client_id": None}, "lacks client_id"),
        ({"client_secret_env": "X"}, "either client_secret or client_secret_env"),
        ({"client_secret": None}, "either client_secret or client_secret_env"),
        ({"client_secret": None, "client_secret_env": "UNSET_VAR"}, "UNSET_VAR (client_secret_env) is not set"),
        ({"name": "King's"}, "lower-case letters"),
        ({"scopes": "profile email"}, "includes openid"),
        ({"institutions": {}}, "institutions must be a table"),
        ({"institutions": {"KCH": "R!"}}, "institutions.KCH: ODS code"),
        ({"institutions": {"KCH": 5}}, "must be an ODS code"),
        ({"roles": "viewer"}, "roles must be a table"),
        ({"roles": {"rad": []}}, "roles.rad must be an imex role name"),
        ({"role_claim": ""}, "role_claim must be a non-empty string"),
        ({"end_session": "yes"}, "end_session must be true or false"),
        ({"redirect_uri": "https://imex.example/elsewhere"}, "must end with /login/sso/kings/callback"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file /nonexistent/ca.pem does not exist"),
        ({"client_secert": "typo"}, "unknown key(s) ['client_secert']"),
    ],
)
def test_a_bad_table_is_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError) as refused:
        parse_providers([table(**overrides)], env={})
    assert str(refused.value).startswith("[[oidc]] table 1")
    assert message in str(refused.value)


def test_two_providers_cannot_share_a_name():
    with pytest.raises(ConfigError, match="table 2: the name 'kings' is used by another provider"):
        parse_providers([table(), table(title="again")], env={})


def test_the_hub_does_not_start_with_a_bad_table(make_config):
    from imex.hub import Hub

    config = make_config()
    config.oidc = [table(issuer="http://login.kings.example")]
    with pytest.raises(ConfigError, match=r"\[\[oidc\]\] table 1 \('kings'\): issuer .* must use https://"):
        Hub(config)
