"""Accounts from a provider's (already checked) claims, against a real SQLite database: user names never
take over a local account, a name another provider's account holds is made unique, an institution change
moves the account and takes its old roles away, several institutions at once are refused, and a provider
whose [[scim]] directory manages the accounts only signs in those the directory made."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from imex.auth import accounts, sso
from imex.auth.oidc_config import parse_providers
from imex.config import ConfigError
from imex.db import Database
from imex.db.models import Institution, User
from imex.directory import add_institution
from oidctools import provider_table

KCH = parse_providers([provider_table("kch", "https://login.kings.example")], env={})["kch"]
NHS = parse_providers([provider_table("nhs", "https://login.nhs.example")], env={})["nhs"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('sso') / 'imex.db'}")
    database.migrate()
    add_institution(database, "RJZ", "King's College Hospital")
    add_institution(database, "RYJ", "Imperial College Healthcare")
    with database.sessions() as s:
        accounts.add_user(
            s,
            username="jsmith",
            institution=accounts.institution_by_ods(s, "RJZ"),
            password="correct horse battery staple",
            roles=["sender"],
        )
        s.commit()
    yield database
    database.dispose()


def claims(sub: str, username: str, org="KCH", roles=("radiologist",)) -> dict:
    return {"sub": sub, "preferred_username": username, "org_code": org, "roles": list(roles), "name": "A Person"}


def test_a_local_account_is_never_taken_over_and_another_providers_name_is_made_unique(db):
    with db.sessions() as s:
        before = s.scalar(select(func.count()).select_from(User))
        with pytest.raises(sso.SignInRefused) as refused:
            sso.sign_in(s, KCH, claims("kch-17", "jsmith"), "127.0.0.1")
        assert "An imex account named 'jsmith' exists already" in refused.value.public
        assert refused.value.detail == "user name jsmith is a local account's; not taken over"
        s.rollback()
        assert s.scalar(select(func.count()).select_from(User)) == before
        first = sso.sign_in(s, NHS, claims("nhs-1", "pat.jones"), "127.0.0.1")
        second = sso.sign_in(s, KCH, claims("kch-1", "pat.jones"), "127.0.0.1")  # another person, same name
        s.commit()
        assert (first.username, second.username) == ("pat.jones", "pat.jones-kch")
        assert sso.sign_in(s, KCH, claims("kch-1", "renamed.at.provider"), "127.0.0.1").id == second.id  # by subject


def test_an_institution_change_moves_the_account_and_its_roles_follow(db):
    with db.sessions() as s:
        user = sso.sign_in(s, KCH, claims("kch-2", "mover", roles=("pacs-team",)), "127.0.0.1")
        s.commit()
        assert accounts.role_names(s, user.id) == ["pacs_guardian", "sender"]
        moved = sso.sign_in(s, KCH, claims("kch-2", "mover", org="IMP", roles=("radiologist",)), "127.0.0.1")
        s.commit()
        assert s.scalar(select(Institution.ods_code).where(Institution.id == moved.institution_id)) == "RYJ"
        assert accounts.role_names(s, moved.id) == ["viewer"]
        space_separated = {**claims("kch-2", "mover", org="IMP"), "roles": "radiologist it-admin"}
        assert accounts.role_names(s, sso.sign_in(s, KCH, space_separated, "127.0.0.1").id) == [
            "institution_admin",
            "viewer",
        ]


def test_claims_naming_two_institutions_or_unknown_roles_give_no_access(db):
    with db.sessions() as s:
        access = sso.map_claims(s, KCH, claims("kch-3", "two", org=["KCH", "IMP"]))
        assert access.institution is None and "maps to several institutions (RJZ, RYJ)" in access.problems[0]
        access = sso.map_claims(s, KCH, claims("kch-3", "two", roles=("canteen", "porter")))
        assert access.roles == () and access.problems == ("roles ['canteen', 'porter'] maps to no role",)
        with pytest.raises(sso.SignInRefused, match="maps to no role; nothing created"):
            sso.sign_in(s, KCH, {**claims("kch-3", "two"), "roles": None}, "127.0.0.1")
        s.rollback()
        assert s.scalar(select(User).where(User.subject == "kch-3")) is None


def test_a_provider_whose_directory_manages_the_accounts_signs_them_in_and_changes_nothing(db):
    table = {k: v for k, v in provider_table("entra", "https://login.entra.example").items() if k != "roles"}
    with pytest.raises(ConfigError, match="the \\[\\[scim\\]\\] directory 'entra' gives these accounts"):
        parse_providers([table], env={}, directories=frozenset({"entra"}))
    bare = {k: v for k, v in table.items() if k not in ("institution_claim", "institutions", "role_claim")}
    entra = parse_providers([bare], env={}, directories=frozenset({"entra"}))["entra"]
    assert entra.directory_managed and entra.roles == {}
    with db.sessions() as s:
        with pytest.raises(sso.SignInRefused, match="no account made by the directory"):
            sso.sign_in(s, entra, claims("e-1", "provisioned"), "127.0.0.1")
        made = User(
            username="provisioned",
            institution_id=accounts.institution_by_ods(s, "RYJ").id,
            identity_provider="entra",
            subject="e-1",
        )
        s.add(made)
        s.flush()
        accounts.grant_role(s, made, "sender")
        signed_in = sso.sign_in(s, entra, claims("e-1", "provisioned", org="KCH", roles=()), "127.0.0.1")
        assert signed_in.id == made.id and accounts.role_names(s, made.id) == ["sender"]  # the claims change nothing
        made.disabled = True
        with pytest.raises(sso.SignInRefused, match="account disabled"):
            sso.sign_in(s, entra, claims("e-1", "provisioned"), "127.0.0.1")
        s.rollback()
