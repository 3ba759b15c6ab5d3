"""SCIM provisioning without a hub: `[[scim]]` tables checked at start-up, tokens told apart, the full name
rebuilt from PATCH operations, and PATCH requests (RFC 7644 3.5.2, with Entra's ways) applied to users and
groups in a SQLite database."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from scim2_models import Context, Group, SCIMException, User
from sqlalchemy import select

from imex.auth.scim import directories, groups, resources, users
from imex.auth.scim.scope import Caller
from imex.auth.sessions import create as create_session
from imex.auth.sessions import resolve
from imex.cli import main
from imex.config import ConfigError
from imex.db import Database
from imex.db.models import AuditEvent
from imex.db.models import User as UserRow
from imex.directory import add_institution

TOKEN = "scim_" + "t" * 40
SHA = hashlib.sha256(TOKEN.encode()).hexdigest()


def table(**overrides: object) -> dict:
    return {"name": "kings-entra", "institution": "rjz", "token_sha256": SHA, **overrides}


# -- [[scim]] tables ---------------------------------------------------------------------------------------


def test_a_good_table_and_its_token():
    other = "scim_" + "o" * 40
    found = directories.parse_directories(
        [table(roles={"IMEX Senders": "sender"}), {"name": "okta", "institution": "RYJ", "token_env": "OKTA_TOKEN"}],
        {"OKTA_TOKEN": other},
    )
    kings, okta = found
    assert (kings.institution, kings.actor, dict(kings.roles)) == (
        "RJZ",
        "scim:kings-entra",
        {"IMEX Senders": "sender"},
    )
    assert directories.directory_for_token(found, TOKEN) is kings
    assert directories.directory_for_token(found, other) is okta
    assert directories.directory_for_token(found, TOKEN + "x") is None
    assert directories.directory_for_token(found, None) is None
    assert SHA not in repr(kings) and TOKEN not in repr(kings)
    # group names: the table's, or the role's own; system_admin never
    assert kings.role_name("imex senders") == "sender" and kings.role_name("viewer") is None
    assert kings.group_name("sender") == "IMEX Senders" and kings.group_name("viewer") is None
    assert okta.role_name("viewer") == "viewer" and okta.group_name("system_admin") is None
    assert okta.role_name("system_admin") is None


@pytest.mark.parametrize(
    "tables, env, message",
    [
        ([table(name="")], {}, "name must be 1-64"),
        ([table(), table()], {}, "two [[scim]] tables have this name"),
        ([table(institution=" ")], {}, "institution must be the ODS code"),
        ([table(token="plain")], {}, "never put the token itself"),
        ([table(token_env="X")], {"X": TOKEN}, "exactly one of token_sha256"),
        ([{"name": "a", "institution": "RJZ"}], {}, "exactly one of token_sha256"),
        ([table(token_sha256="abc")], {}, "64 hexadecimal digits"),
        ([{"name": "a", "institution": "RJZ", "token_env": "MISSING"}], {}, "MISSING (token_env) is not set"),
        ([{"name": "a", "institution": "RJZ", "token_env": "SHORT"}], {"SHORT": "abc"}, "shorter than 32"),
        ([table(), table(name="b")], {}, "its token is another directory's"),
        ([table(roles={"Admins": "system_admin"})], {}, "cannot grant system_admin"),
        ([table(roles={"A": "sender", "B": "sender"})], {}, "more than one group stands for sender"),
        ([table(roles=["sender"])], {}, "roles must be a table"),
        ([table(url="https://x")], {}, "unknown key(s) url"),
    ],
)
def test_bad_tables_say_what_is_wrong(tables, env, message):
    with pytest.raises(ConfigError) as caught:
        directories.parse_directories(tables, env)
    assert message in str(caught.value) and "[[scim]]" in str(caught.value)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database with two institutions, made once: each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("scim") / "template.db"
    database = Database(f"sqlite:///{path}")
    database.migrate()
    add_institution(database, "RJZ", "King's College Hospital")
    add_institution(database, "RYJ", "Imperial College Healthcare")
    database.dispose()
    return path


@pytest.fixture
def db(migrated: Path, tmp_path: Path) -> Iterator[Database]:
    shutil.copyfile(migrated, tmp_path / "scim.db")
    database = Database(f"sqlite:///{tmp_path / 'scim.db'}")
    yield database
    database.dispose()


def test_start_up_checks_the_institution_and_the_roles(db):
    with db.sessions() as s:
        directories.check_directories(s, directories.parse_directories([table(roles={"Senders": "sender"})], {}))
        with pytest.raises(ConfigError, match="no institution has the ODS code 'XYZ'"):
            directories.check_directories(s, directories.parse_directories([table(institution="XYZ")], {}))
        with pytest.raises(ConfigError, match="no role named 'canteen'"):
            directories.check_directories(s, directories.parse_directories([table(roles={"C": "canteen"})], {}))


def test_the_token_command_prints_a_token_and_its_line():
    result = CliRunner().invoke(main, ["scim", "token", "kings-entra"])
    assert result.exit_code == 0, result.output
    token = result.output.splitlines()[1].strip()
    assert len(token) >= 40 and f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"' in result.output


# -- the full name -----------------------------------------------------------------------------------------


def _user(**fields: object) -> User:
    return User(user_name="ann", **fields)


def test_full_name_follows_what_the_operations_changed():
    parts = {"given_name": "Ann", "family_name": "Example"}
    assert users.full_name(_user(display_name="Dr Ann", name=parts)) == "Dr Ann"
    assert users.full_name(_user(name={"formatted": "Ann B Example", **parts})) == "Ann B Example"
    assert users.full_name(_user(name=parts)) == "Ann Example"
    before = _user(display_name="Ann Example", name={"formatted": "Ann Example", **parts})
    married = _user(
        display_name="Ann Example", name={"formatted": "Ann Example", "given_name": "Ann", "family_name": "Smith"}
    )
    assert users.full_name(married, before, "Ann Example") == "Ann Smith"  # made of the parts: rebuilt
    titled = _user(display_name="Dr Ann Example", name={"formatted": "Dr Ann Example", **parts})
    married_titled = _user(
        display_name="Dr Ann Example", name={"formatted": "Dr Ann Example", "given_name": "Ann", "family_name": "Smith"}
    )
    assert users.full_name(married_titled, titled, "Dr Ann Example") == "Dr Ann Example"  # chosen: kept
    renamed = _user(display_name="Annie", name={"formatted": "Ann Example", **parts})
    assert users.full_name(renamed, before, "Ann Example") == "Annie"
    assert users.full_name(_user(), before, "Ann Example") == ""


# -- PATCH on users and groups -----------------------------------------------------------------------------


@pytest.fixture
def caller(db) -> Caller:
    directory = directories.parse_directories([table(roles={"IMEX Senders": "sender", "IMEX Viewers": "viewer"})], {})[
        0
    ]
    with db.sessions() as s:
        directories.check_directories(s, [directory])
        found = Caller.of(s, directory, "10.0.0.1", "https://hub/scim/v2")
        s.commit()
    return found


def _create(db, caller, **fields: object) -> str:
    payload = {
        "userName": "ann@kings.nhs.uk",
        "externalId": "obj-1",
        "name": {"givenName": "Ann", "familyName": "Example"},
    }
    payload.update(fields)
    with db.sessions() as s:
        made = users.create_user(s, caller, resources.read(User, payload, Context.RESOURCE_CREATION_REQUEST))
        s.commit()
    return str(made.id)


def _patch_user(db, caller, user_id: str, *operations: dict) -> User:
    with db.sessions() as s:
        patched = users.patch_user(s, caller, user_id, resources.read_patch(User, {"Operations": list(operations)}))
        s.commit()
    return patched


def _row(db, user_id: str) -> UserRow:
    with db.sessions() as s:
        return s.get(UserRow, int(user_id))


def test_patch_with_a_path_without_one_and_entra_string_booleans(db, caller):
    user_id = _create(db, caller)
    assert _row(db, user_id).full_name == "Ann Example"
    done = _patch_user(db, caller, user_id, {"op": "Replace", "path": "name.givenName", "value": "Anna"})
    assert done.name.given_name == "Anna" and _row(db, user_id).full_name == "Anna Example"
    # no path: the value's keys are attributes (or attribute paths)
    _patch_user(
        db, caller, user_id, {"op": "replace", "value": {"displayName": "Dr Anna Example", "name.familyName": "Smith"}}
    )
    row = _row(db, user_id)
    assert (row.full_name, row.given_name, row.family_name) == ("Dr Anna Example", "Anna", "Smith")
    # an address where there was none, through a filter (Entra), then a second one not primary
    _patch_user(
        db, caller, user_id, {"op": "Add", "path": 'emails[type eq "work"].value', "value": "anna@kings.nhs.uk"}
    )
    assert _row(db, user_id).email == "anna@kings.nhs.uk"
    _patch_user(
        db, caller, user_id, {"op": "add", "path": "emails", "value": [{"value": "home@example.org", "type": "home"}]}
    )
    assert _row(db, user_id).email == "anna@kings.nhs.uk"
    _patch_user(db, caller, user_id, {"op": "remove", "path": "emails"})
    assert _row(db, user_id).email == ""
    _patch_user(db, caller, user_id, {"op": "remove", "path": "name.familyName"})
    assert (_row(db, user_id).family_name, _row(db, user_id).full_name) == ("", "Dr Anna Example")
    _patch_user(db, caller, user_id, {"op": "replace", "path": "userName", "value": "anna@kings.nhs.uk"})
    assert _row(db, user_id).username == "anna@kings.nhs.uk"

    # Entra's string booleans: "False" disables and ends the user's tokens; "True" enables again
    with db.sessions() as s:
        token, _ = create_session(s, s.get(UserRow, int(user_id)), kind="token", ip="", lifetime=dt.timedelta(days=1))
        s.commit()
    assert _patch_user(db, caller, user_id, {"op": "Replace", "path": "active", "value": "False"}).active is False
    with db.sessions() as s:
        assert _row(db, user_id).disabled and resolve(s, token, kind="token", idle=None) is None
    assert _patch_user(db, caller, user_id, {"op": "Replace", "value": {"active": "True"}}).active is True
    assert not _row(db, user_id).disabled
    with db.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        actors = {e.username for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("scim.%")))}
    # one update per PATCH that changed a kept attribute (a second, non-primary address changes none)
    assert actions.count("scim.user.update") == 6 and actions[-2:] == ["scim.user.disable", "scim.user.enable"]
    assert actors == {"scim:kings-entra"}


@pytest.mark.parametrize(
    "operation, scim_type",
    [
        ({"op": "replace", "path": "id", "value": "7"}, "mutability"),
        ({"op": "add", "path": "groups", "value": [{"value": "1"}]}, "mutability"),
        ({"op": "remove", "path": "userName"}, "mutability"),
        ({"op": "replace", "path": "active", "value": "maybe"}, "invalidValue"),
        ({"op": "replace", "path": "emails", "value": [{"value": "not an address"}]}, "invalidValue"),
        ({"op": "replace", "path": "userName", "value": "has space"}, "invalidValue"),
        ({"op": "replace", "path": 'emails[type eq "work"', "value": "x"}, "invalidPath"),
        ({"op": "remove"}, "noTarget"),
        ({"op": "copy", "path": "active"}, "invalidValue"),
    ],
)
def test_patch_refusals_leave_the_user_as_it_was(db, caller, operation, scim_type):
    user_id = _create(db, caller)
    with pytest.raises(SCIMException) as caught:
        _patch_user(db, caller, user_id, operation)
    assert caught.value.scim_type == scim_type and caught.value.status == 400
    row = _row(db, user_id)
    assert (row.username, row.full_name, row.disabled) == ("ann@kings.nhs.uk", "Ann Example", False)


def test_a_userName_taken_by_anyone_is_a_uniqueness_error(db, caller):
    first = _create(db, caller)
    second = _create(db, caller, userName="bob@kings.nhs.uk", externalId="obj-2")
    with pytest.raises(SCIMException) as caught:
        _patch_user(db, caller, second, {"op": "replace", "path": "userName", "value": "ANN@kings.nhs.uk"})
    assert (caught.value.status, caught.value.scim_type) == (409, "uniqueness")
    with pytest.raises(SCIMException) as caught:
        _patch_user(db, caller, second, {"op": "replace", "path": "externalId", "value": "obj-1"})
    assert caught.value.scim_type == "uniqueness" and _row(db, first).subject == "obj-1"


def _patch_group(db, caller, group_id: str, *operations: dict) -> Group:
    with db.sessions() as s:
        patched = groups.patch_group(s, caller, group_id, resources.read_patch(Group, {"Operations": list(operations)}))
        s.commit()
    return patched


def _senders(db, caller) -> str:
    with db.sessions() as s:
        search = resources.read_search(Group, {"filter": 'displayName eq "imex senders"'})
        return groups.search_groups(s, caller, search).resources[0].id


def test_group_members_added_and_removed_the_ways_directories_send_them(db, caller):
    ann, bob = _create(db, caller), _create(db, caller, userName="bob@kings.nhs.uk", externalId="obj-2")
    group_id = _senders(db, caller)
    added = _patch_group(
        db, caller, group_id, {"op": "Add", "path": "members", "value": [{"value": ann}, {"value": bob}]}
    )
    assert sorted(m.value for m in added.members) == sorted([ann, bob])
    # Entra: remove with the member in the value; RFC: remove with a filter in the path
    left = _patch_group(db, caller, group_id, {"op": "Remove", "path": "members", "value": [{"value": ann}]})
    assert [m.value for m in left.members] == [bob]
    gone = _patch_group(db, caller, group_id, {"op": "remove", "path": f'members[value eq "{bob}"]'})
    assert gone.members is None
    replaced = _patch_group(db, caller, group_id, {"op": "replace", "path": "members", "value": [{"value": ann}]})
    assert [m.value for m in replaced.members] == [ann]
    with db.sessions() as s:
        assert users.get_user(s, caller, ann).groups[0].display == "IMEX Senders"
        updates = s.scalars(select(AuditEvent).where(AuditEvent.action == "scim.group.update")).all()
    assert len(updates) == 5 and "added to group 'IMEX Senders' (role sender)" in updates[0].detail
    for operation, scim_type in (
        ({"op": "add", "path": "members", "value": [{"value": "99999"}]}, "invalidValue"),
        ({"op": "add", "path": "members", "value": [{"value": "someone"}]}, "invalidValue"),
        ({"op": "replace", "path": "displayName", "value": "Admins"}, "mutability"),
    ):
        with pytest.raises(SCIMException) as caught:
            _patch_group(db, caller, group_id, operation)
        assert caught.value.scim_type == scim_type
    with db.sessions() as s:
        assert [m.value for m in groups.get_group(s, caller, group_id).members] == [ann]


def test_user_filters_the_hub_answers_and_those_it_refuses(db, caller):
    ann = _create(db, caller)
    _create(db, caller, userName="bob@kings.nhs.uk", externalId="obj-2")
    with db.sessions() as s:
        for text, expected in (
            ('userName eq "ANN@kings.nhs.uk"', [ann]),
            ('externalId eq "obj-1"', [ann]),
            ('externalId eq "OBJ-1"', []),  # caseExact
            (f'id eq "{ann}" and userName eq "ann@kings.nhs.uk"', [ann]),
            ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ann@kings.nhs.uk"', [ann]),
            ('id eq "x"', []),
        ):
            page = users.search_users(s, caller, resources.read_search(User, {"filter": text}))
            assert [u.id for u in page.resources] == expected, text
        page = users.search_users(s, caller, resources.read_search(User, {"startIndex": "2", "count": "1"}))
        assert (page.total, page.start_index, len(page.resources)) == (2, 2, 1)
        for text in (
            'userName sw "a"',
            'userName eq "a" or userName eq "b"',
            'emails[type eq "work"]',
            "active eq true",
        ):
            with pytest.raises(SCIMException) as caught:
                users.search_users(s, caller, resources.read_search(User, {"filter": text}))
            assert caught.value.scim_type == "invalidFilter", text


def test_groups_are_the_institutions_roles_only(db):
    from imex.auth.accounts import define_role, institution_by_ods

    okta = directories.parse_directories([table(name="okta")], {})[0]  # no roles table: roles by their names
    with db.sessions() as s:
        directories.check_directories(s, [okta])
        kings = define_role(s, institution_by_ods(s, "RJZ").id, "mdt coordinator", ["studies.view"])
        imperial = define_role(s, institution_by_ods(s, "RYJ").id, "radiology lead", ["studies.view"])
        s.commit()
        caller = Caller.of(s, okta, "", "https://hub/scim/v2")
        names = [g.display_name for g in groups.search_groups(s, caller, resources.read_search(Group, {})).resources]
        assert "mdt coordinator" in names and "sender" in names
        assert "radiology lead" not in names and "system_admin" not in names
        assert groups.get_group(s, caller, str(kings.id)).display_name == "mdt coordinator"
        for other in (str(imperial.id), "999", "x"):
            with pytest.raises(SCIMException) as caught:
                groups.get_group(s, caller, other)
            assert caught.value.status == 404
