"""SCIM 2.0 provisioning against a running hub, as a hospital's directory does it over HTTP: users created,
found, changed, put in role groups, disabled (their API token stops working), enabled and deleted; what
the institution's admin sees in the portal; and the refusals (tokens, other directories' and
institutions' users, malformed requests), each with its SCIM error."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from sqlalchemy import select

from imex.auth import passwords
from imex.db.models import AuditEvent, RoleGrant, User
from portaltools import PASSWORD, add_user, base_url, bearer, browser

KINGS_TOKEN = "scim_kings_" + "k" * 40
IMPERIAL_TOKEN = "scim_imperial_" + "i" * 40
SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def scim_hub(make_config, start_hub):
    def start(**overrides):
        config = make_config(**overrides)
        config.institutions = [
            {"ods": "RJZ", "name": "King's College Hospital"},
            {"ods": "RYJ", "name": "Imperial College Healthcare"},
        ]
        config.scim = [
            {
                "name": "kings-entra",
                "institution": "RJZ",
                "token_sha256": _sha(KINGS_TOKEN),
                "roles": {"IMEX Senders": "sender", "IMEX Viewers": "viewer"},
            },
            {"name": "imperial-okta", "institution": "RYJ", "token_sha256": _sha(IMPERIAL_TOKEN)},
        ]
        return start_hub(config)

    return start


def directory(hub, token: str = KINGS_TOKEN) -> httpx.Client:
    return httpx.Client(
        base_url=base_url(hub) + "/scim/v2",
        headers={"Authorization": f"Bearer {token}", "Content-Type": SCIM_JSON, "Accept": SCIM_JSON},
        timeout=15,
    )


def entra_user(user_name: str, external_id: str, given: str = "Ann", family: str = "Example") -> dict:
    """A creation request as Microsoft Entra ID sends it (enterprise extension, meta and roles included)."""
    return {
        "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": external_id,
        "userName": user_name,
        "active": True,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": f"{external_id}@kings.nhs.uk"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "roles": [],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "12345"},
    }


def patch(*operations: dict) -> dict:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


def audit_rows(hub, action: str) -> list[AuditEvent]:
    with hub.db.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def assert_scim_error(answer: httpx.Response, status: int, scim_type: str | None = None) -> dict:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(SCIM_JSON)
    body = answer.json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    return body


def user_row(hub, user_id: int) -> User:
    with hub.db.sessions() as s:
        return s.get(User, user_id)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_directory_provisions_a_user_through_its_life(scim_hub, backend, request):
    overrides = {"database__url": request.getfixturevalue("postgres_url")} if backend == "postgres" else {}
    hub = scim_hub(**overrides)
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    entra = directory(hub)

    config = entra.get("/ServiceProviderConfig")
    assert config.status_code == 200 and config.headers["content-type"].startswith(SCIM_JSON)
    assert config.json()["patch"]["supported"] is True and config.json()["bulk"]["supported"] is False
    kinds = {t["name"]: t["endpoint"] for t in entra.get("/ResourceTypes").json()["Resources"]}
    assert kinds == {"User": "/Users", "Group": "/Groups"}
    user_schema = entra.get(f"/Schemas/{USER_SCHEMA}").json()
    assert {a["name"] for a in user_schema["attributes"]} == {
        "userName",
        "name",
        "displayName",
        "active",
        "emails",
        "groups",
    }

    # created: in the directory's institution, managed by it, without a password
    made = entra.post("/Users", json=entra_user("ann.example@kings.nhs.uk", "6c1f0a2e-entra-object-id"))
    assert made.status_code == 201, made.text
    assert made.headers["content-type"].startswith(SCIM_JSON)
    ann = made.json()
    user_id = ann["id"]
    assert made.headers["location"] == f"{base_url(hub)}/scim/v2/Users/{user_id}" == ann["meta"]["location"]
    assert ann["userName"] == "ann.example@kings.nhs.uk" and ann["externalId"] == "6c1f0a2e-entra-object-id"
    assert ann["active"] is True and ann["name"]["givenName"] == "Ann"
    row = user_row(hub, int(user_id))
    assert (row.identity_provider, row.subject, row.password_hash, row.full_name) == (
        "kings-entra",
        "6c1f0a2e-entra-object-id",
        "",
        "Ann Example",
    )
    created = audit_rows(hub, "scim.user.create")[-1]
    assert (created.username, created.object_id, created.user_id) == (
        "scim:kings-entra",
        "ann.example@kings.nhs.uk",
        None,
    )
    assert created.institution_id == row.institution_id

    # found by userName (any case) and by externalId, as Entra and Okta look before creating
    found = entra.get("/Users", params={"filter": 'userName eq "Ann.Example@kings.nhs.uk"'})
    assert found.status_code == 200 and found.json()["totalResults"] == 1
    assert found.json()["Resources"][0]["id"] == user_id
    by_external = entra.get("/Users", params={"filter": 'externalId eq "6c1f0a2e-entra-object-id"'}).json()
    assert [r["id"] for r in by_external["Resources"]] == [user_id]
    assert entra.get("/Users", params={"filter": 'userName eq "nobody@kings.nhs.uk"'}).json()["totalResults"] == 0

    # a married name and a new address, as Entra sends them
    changed = entra.patch(
        f"/Users/{user_id}",
        json=patch(
            {"op": "Replace", "path": "name.familyName", "value": "Smith"},
            {"op": "Replace", "path": "displayName", "value": "Ann Smith"},
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ann.smith@kings.nhs.uk"},
        ),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"]["familyName"] == "Smith" and changed.json()["displayName"] == "Ann Smith"
    assert changed.json()["emails"] == [{"value": "ann.smith@kings.nhs.uk", "type": "work", "primary": True}]
    row = user_row(hub, int(user_id))
    assert (row.full_name, row.family_name, row.email) == ("Ann Smith", "Smith", "ann.smith@kings.nhs.uk")
    assert "name.familyName" in audit_rows(hub, "scim.user.update")[-1].detail

    # into a role group: the institution admin sees the role in the portal's user list
    senders = entra.get("/Groups", params={"filter": 'displayName eq "IMEX Senders"', "excludedAttributes": "members"})
    assert senders.json()["totalResults"] == 1, senders.text
    group = senders.json()["Resources"][0]
    assert group["displayName"] == "IMEX Senders" and "members" not in group
    added = entra.patch(
        f"/Groups/{group['id']}", json=patch({"op": "Add", "path": "members", "value": [{"value": user_id}]})
    )
    assert added.status_code == 200, added.text
    assert [m["value"] for m in added.json()["members"]] == [user_id]
    assert entra.get(f"/Users/{user_id}").json()["groups"][0]["display"] == "IMEX Senders"
    admin = browser(hub, "kings_admin")
    listed = {u["username"]: u for u in admin.get("/api/v1/users").json()}
    assert listed["ann.example@kings.nhs.uk"]["roles"] == ["sender"]
    assert listed["ann.example@kings.nhs.uk"]["full_name"] == "Ann Smith"
    assert "IMEX Senders" in audit_rows(hub, "scim.group.update")[-1].detail

    # she signs in through the institution's identity provider; here a password stands in for it
    with hub.db.sessions() as s:
        s.get(User, int(user_id)).password_hash = passwords.hash_password(PASSWORD)
        s.commit()
    api = bearer(hub, "ann.example@kings.nhs.uk")
    assert api.get("/api/v1/me").status_code == 200

    # Entra's soft delete: active "False" as a string; she cannot sign in and her token stops working
    off = entra.patch(f"/Users/{user_id}", json=patch({"op": "Replace", "path": "active", "value": "False"}))
    assert off.status_code == 200 and off.json()["active"] is False
    assert api.get("/api/v1/me").status_code == 401
    signin = httpx.post(
        f"{base_url(hub)}/api/v1/auth/token", json={"username": "ann.example@kings.nhs.uk", "password": PASSWORD}
    )
    assert signin.status_code == 401 and "disabled" in signin.json()["detail"]
    disabled = audit_rows(hub, "scim.user.disable")[-1]
    assert (disabled.username, disabled.object_id) == ("scim:kings-entra", "ann.example@kings.nhs.uk")

    # enabled again: she signs in anew; the token that was ended stays ended
    on = entra.patch(f"/Users/{user_id}", json=patch({"op": "replace", "value": {"active": True}}))
    assert on.status_code == 200 and on.json()["active"] is True
    assert bearer(hub, "ann.example@kings.nhs.uk").get("/api/v1/me").status_code == 200
    assert api.get("/api/v1/me").status_code == 401

    # deleted: 404 from then on, access gone, the row kept for the audit trail
    assert entra.delete(f"/Users/{user_id}").status_code == 204
    assert_scim_error(entra.get(f"/Users/{user_id}"), 404)
    assert_scim_error(
        entra.patch(f"/Users/{user_id}", json=patch({"op": "replace", "path": "active", "value": True})), 404
    )
    assert entra.get("/Users", params={"filter": 'userName eq "ann.example@kings.nhs.uk"'}).json()["totalResults"] == 0
    assert entra.get(f"/Groups/{group['id']}").json().get("members") is None
    row = user_row(hub, int(user_id))
    assert row.disabled and row.subject is None and row.username.startswith(f"~deleted{user_id}~")
    with hub.db.sessions() as s:
        assert s.scalars(select(RoleGrant).where(RoleGrant.user_id == int(user_id))).all() == []
    deleted = audit_rows(hub, "scim.user.delete")[-1]
    assert (deleted.object_id, deleted.username) == ("ann.example@kings.nhs.uk", "scim:kings-entra")
    assert "sender" in deleted.detail
    assert (
        httpx.post(
            f"{base_url(hub)}/api/v1/auth/token", json={"username": "ann.example@kings.nhs.uk", "password": PASSWORD}
        ).status_code
        == 401
    )
    # the name is free for someone new (RFC 7644 3.6), who gets a new id
    again = entra.post("/Users", json=entra_user("ann.example@kings.nhs.uk", "another-object-id"))
    assert again.status_code == 201 and again.json()["id"] != user_id


def test_directories_are_refused_what_is_not_theirs(scim_hub):
    hub = scim_hub(http__max_body_bytes=4096)
    local_id = add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    entra, okta = directory(hub), directory(hub, IMPERIAL_TOKEN)
    ann = entra.post("/Users", json=entra_user("ann@kings.nhs.uk", "ann-id")).json()
    bob = okta.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "bob@imperial.nhs.uk"}).json()
    assert user_row(hub, int(bob["id"])).subject == "bob@imperial.nhs.uk"  # no externalId: the userName

    # tokens: none, or one that is no directory's (audited), with the Bearer challenge; a body is never read
    url = base_url(hub) + "/scim/v2/Users"
    none = httpx.get(url)
    assert "Bearer" in none.headers["www-authenticate"]
    assert_scim_error(none, 401)
    wrong = httpx.get(url, headers={"Authorization": "Bearer scim_not_a_directory_token_at_all_xxxxxxxx"})
    assert_scim_error(wrong, 401)
    refused = httpx.post(
        url,
        headers={"Authorization": "Bearer wrong", "Content-Type": SCIM_JSON},
        json=entra_user("mallory@kings.nhs.uk", "m"),
    )
    assert_scim_error(refused, 401)
    assert refused.headers["connection"] == "close"
    assert len(audit_rows(hub, "scim.auth_failed")) == 2
    with hub.db.sessions() as s:
        assert s.scalar(select(User).where(User.username == "mallory@kings.nhs.uk")) is None
    portal_token = bearer(hub, "kings_admin").headers["Authorization"]
    assert_scim_error(httpx.get(url, headers={"Authorization": portal_token}), 401)  # a user's token is no directory's

    # another directory's (and institution's) user, a local account and a missing one all look the same
    for user_id in (ann["id"], str(local_id), "999999", "not-a-number"):
        assert_scim_error(okta.get(f"/Users/{user_id}"), 404)
    for user_id in (bob["id"], str(local_id)):
        assert_scim_error(entra.get(f"/Users/{user_id}"), 404)
        assert_scim_error(entra.delete(f"/Users/{user_id}"), 404)
        assert_scim_error(entra.put(f"/Users/{user_id}", json={"schemas": [USER_SCHEMA], "userName": "x"}), 404)
    assert entra.get("/Users", params={"filter": 'userName eq "bob@imperial.nhs.uk"'}).json()["totalResults"] == 0
    assert [u["userName"] for u in okta.get("/Users").json()["Resources"]] == ["bob@imperial.nhs.uk"]
    assert not user_row(hub, int(bob["id"])).disabled and not user_row(hub, local_id).disabled
    # the built-in roles are groups of both directories, but membership reaches only their own users
    senders = okta.get("/Groups", params={"filter": 'displayName eq "sender"'}).json()["Resources"][0]
    foreign = okta.patch(
        f"/Groups/{senders['id']}", json=patch({"op": "add", "path": "members", "value": [{"value": ann["id"]}]})
    )
    assert_scim_error(foreign, 400, "invalidValue")
    assert okta.get("/Groups", params={"filter": 'displayName eq "system_admin"'}).json()["totalResults"] == 0
    assert {g["displayName"] for g in entra.get("/Groups").json()["Resources"]} == {"IMEX Senders", "IMEX Viewers"}

    # malformed and clashing requests, each with its scimType
    broken = entra.post("/Users", content=b'{"userName": "x"', headers={"Content-Type": SCIM_JSON})
    assert_scim_error(broken, 400, "invalidSyntax")
    assert_scim_error(entra.post("/Users", json=[1, 2]), 400, "invalidSyntax")
    assert_scim_error(entra.post("/Users", json=entra_user("ANN@kings.nhs.uk", "other-id")), 409, "uniqueness")
    assert_scim_error(entra.post("/Users", json=entra_user("kings_admin", "admin-id")), 409, "uniqueness")
    assert_scim_error(entra.post("/Users", json=entra_user("ann2@kings.nhs.uk", "ann-id")), 409, "uniqueness")
    assert_scim_error(entra.post("/Users", json={"schemas": [USER_SCHEMA]}), 400, "invalidValue")
    assert_scim_error(entra.post("/Users", json=entra_user("has space@kings", "s")), 400, "invalidValue")
    bad_email = entra_user("carol@kings.nhs.uk", "c")
    bad_email["emails"][0]["value"] = "not an address"
    assert_scim_error(entra.post("/Users", json=bad_email), 400, "invalidValue")
    for text in ('userName eq "unterminated', "userName eq", 'nosuchattribute eq "x"', 'userName co "ann"'):
        assert_scim_error(entra.get("/Users", params={"filter": text}), 400, "invalidFilter")
    renamed = entra.patch(
        f"/Users/{ann['id']}", json=patch({"op": "replace", "path": "userName", "value": "kings_admin"})
    )
    assert_scim_error(renamed, 409, "uniqueness")
    assert_scim_error(
        entra.patch(f"/Users/{ann['id']}", json=patch({"op": "explode", "path": "active"})), 400, "invalidValue"
    )
    assert_scim_error(
        entra.patch(
            f"/Users/{ann['id']}", json=patch({"op": "replace", "path": 'emails[type eq "work" and', "value": "x"})
        ),
        400,
        "invalidPath",
    )
    assert_scim_error(entra.patch(f"/Users/{ann['id']}", json={"Operations": "nope"}), 400, "invalidValue")
    group = entra.get("/Groups", params={"filter": 'displayName eq "IMEX Viewers"'}).json()["Resources"][0]
    assert_scim_error(entra.post("/Groups", json={"displayName": "IMEX Viewers"}), 409, "uniqueness")
    assert_scim_error(entra.post("/Groups", json={"displayName": "Canteen staff"}), 400, "invalidValue")
    rename = entra.patch(
        f"/Groups/{group['id']}", json=patch({"op": "replace", "path": "displayName", "value": "Admins"})
    )
    assert_scim_error(rename, 400, "mutability")
    too_big = entra.post("/Users", json=entra_user("big@kings.nhs.uk", "b" * 5000))
    assert too_big.status_code == 413
    assert_scim_error(entra.get("/Bulk"), 404)
    # nothing above changed the users
    assert user_row(hub, int(ann["id"])).username == "ann@kings.nhs.uk"
    assert [u["userName"] for u in entra.get("/Users").json()["Resources"]] == ["ann@kings.nhs.uk"]


def test_a_bad_scim_table_stops_start_up(make_config):
    from imex.config import ConfigError
    from imex.hub import Hub

    config = make_config()
    config.scim = [{"name": "kings-entra", "institution": "RJZ", "token_sha256": _sha(KINGS_TOKEN)}]
    with pytest.raises(ConfigError, match="no institution has the ODS code 'RJZ'"):
        Hub(config)
    config.institutions = [{"ods": "RJZ", "name": "King's College Hospital"}]
    config.scim = [{"name": "kings-entra", "institution": "RJZ", "token": KINGS_TOKEN}]
    with pytest.raises(ConfigError, match="never put the token itself in imex.toml"):
        Hub(config)
