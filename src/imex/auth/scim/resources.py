"""SCIM shapes, built and checked with scim2-models: requests read into models (a bad one becomes the
SCIM error RFC 7644 gives it), rows shown as User and Group resources, and the discovery documents.

What a user maps to: userName -> users.username, externalId -> users.subject, name.givenName and
name.familyName -> given_name and family_name, displayName (else name.formatted, else the two parts) ->
full_name, the primary (else first) of emails -> email, active -> not disabled. Other attributes are read
and checked, not stored."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    Context,
    Email,
    Error,
    ETag,
    Filter,
    Group,
    GroupMember,
    GroupMembership,
    Meta,
    Name,
    Patch,
    PatchOp,
    Reference,
    ResourceType,
    ResponseParameters,
    Schema,
    SCIMException,
    ScimPolicy,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models import Resource as ScimResource

from imex.db.models import Role
from imex.db.models import User as UserRow

# What directories send that the RFC does not allow, read the way they mean it: unknown attributes (an
# extension imex does not keep) are dropped, Entra's "remove" with a value selects what to remove, and a
# replace of emails[type eq "work"].value on a user without one adds it.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)
MAX_RESULTS = 200  # most resources in one page of a list
T = TypeVar("T", bound=ScimResource[Any])


def scim_error(exc: ValidationError) -> SCIMException:
    """The first problem of a model's validation as the SCIM exception RFC 7644 gives it (invalidSyntax for
    a body that is no resource, invalidValue for a value that does not fit, invalidFilter, ...)."""
    return SCIMException.from_error(Error.from_validation_errors(exc)[0])


def read(model: type[T], payload: Any, context: Context) -> T:
    """A request body as `model` (User or Group) for a creation or replacement."""
    try:
        return model.model_validate(payload, scim_ctx=context, scim_policy=POLICY)
    except ValidationError as exc:
        raise scim_error(exc) from None


def read_patch(model: type[T], payload: Any) -> PatchOp[Any]:
    """A PATCH body (RFC 7644 3.5.2) whose operations are checked against `model`."""
    try:
        return PatchOp[model].model_validate(  # type: ignore[valid-type]
            payload, scim_ctx=Context.RESOURCE_PATCH_REQUEST, scim_policy=POLICY
        )
    except ValidationError as exc:
        raise scim_error(exc) from None


def read_search(model: type[T], params: Mapping[str, str]) -> SearchRequest[Any]:
    """A list request's query (filter, startIndex, count, attributes, excludedAttributes)."""
    known = ("filter", "startIndex", "count", "attributes", "excludedAttributes", "sortBy", "sortOrder")
    wanted = {key: params[key] for key in known if key in params}
    try:
        return SearchRequest[model].model_validate(wanted, scim_ctx=Context.SEARCH_REQUEST)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise scim_error(exc) from None


def read_attributes(model: type[T], params: Mapping[str, str]) -> ResponseParameters[Any]:
    """`attributes` / `excludedAttributes` of a GET of one resource."""
    wanted = {key: params[key] for key in ("attributes", "excludedAttributes") if key in params}
    try:
        return ResponseParameters[model].model_validate(wanted)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise scim_error(exc) from None


@dataclass(frozen=True)
class Place:
    """Where the resources are served (`https://hub/scim/v2`), for meta.location."""

    base_url: str

    def location(self, kind: str, ident: int | str = "") -> str:
        return f"{self.base_url}/{kind}" + (f"/{ident}" if ident != "" else "")


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return moment.replace(tzinfo=dt.UTC) if moment is not None and moment.tzinfo is None else moment


def joined_name(given: str | None, family: str | None) -> str:
    return " ".join(part.strip() for part in (given, family) if part and part.strip())


def user_resource(user: UserRow, groups: list[tuple[int, str]], place: Place) -> User:
    """A user as its directory sees it, with the role groups it is in ((role id, group name))."""
    name = None
    if user.full_name or user.given_name or user.family_name:
        name = Name(
            formatted=user.full_name or None,
            given_name=user.given_name or None,
            family_name=user.family_name or None,
        )
    return User(
        id=str(user.id),
        external_id=user.subject,
        user_name=user.username,
        name=name,
        display_name=user.full_name or None,
        active=not user.disabled,
        emails=[Email(value=user.email, type=Email.Type.work, primary=True)] if user.email else None,
        groups=[
            GroupMembership(
                value=str(role_id), display=name, type="direct", ref=Reference(place.location("Groups", role_id))
            )
            for role_id, name in groups
        ]
        or None,
        meta=Meta(resource_type="User", created=_utc(user.created_at), location=place.location("Users", user.id)),
    )


def group_resource(role: Role, display_name: str, members: list[tuple[int, str]], place: Place) -> Group:
    """An imex role as a group: the directory's name for it and the directory's users who have it."""
    return Group(
        id=str(role.id),
        display_name=display_name,
        members=[
            GroupMember(
                value=str(user_id), display=username, type="User", ref=Reference(place.location("Users", user_id))
            )
            for user_id, username in members
        ]
        or None,
        meta=Meta(resource_type="Group", location=place.location("Groups", role.id)),
    )


@dataclass(frozen=True)
class Page:
    """One page of a list: how many match in all, the 1-based index of the first, and the resources."""

    total: int
    start_index: int
    resources: list[Any]


def page_bounds(search: SearchRequest[Any]) -> tuple[int, int]:
    """(1-based start, how many) of a list request; never more than MAX_RESULTS."""
    start = max(search.start_index or 1, 1)
    count = MAX_RESULTS if search.count is None else min(max(search.count, 0), MAX_RESULTS)
    return start, count


def primary_email(resource: User) -> str:
    """The one address imex keeps: the primary one, else the first."""
    emails = [e for e in resource.emails or [] if e.value]
    chosen = next((e for e in emails if e.primary), emails[0] if emails else None)
    return str(chosen.value) if chosen is not None else ""


# -- discovery (RFC 7644 section 4) ----------------------------------------------------------------------

# the attributes imex keeps; Schemas lists only these, so a directory knows what it can rely on
USER_ATTRIBUTES = ("userName", "name", "displayName", "active", "emails", "groups")
NAME_PARTS = ("formatted", "givenName", "familyName")
GROUP_ATTRIBUTES = ("displayName", "members")


def service_provider_config(place: Place) -> ServiceProviderConfig:
    return ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type=AuthenticationScheme.Type("oauthbearertoken"),
                name="Bearer token",
                description="The directory's own token (imex scim token NAME); imex.toml holds its SHA-256",
                primary=True,
            )
        ],
        meta=Meta(resource_type="ServiceProviderConfig", location=place.location("ServiceProviderConfig")),
    )


def resource_types(place: Place) -> list[ResourceType]:
    found = []
    for model in (User, Group):
        kind = ResourceType.from_resource(model)
        kind.meta = Meta(resource_type="ResourceType", location=place.location("ResourceTypes", kind.id or ""))
        found.append(kind)
    return found


def schemas(place: Place) -> list[Schema]:
    """The User and Group schemas, cut down to the attributes imex keeps."""
    found = []
    for model, kept in ((User, USER_ATTRIBUTES), (Group, GROUP_ATTRIBUTES)):
        schema = model.to_schema()
        attributes = [a for a in schema.attributes or [] if a.name in kept]
        for attribute in attributes:
            if attribute.name == "name":
                attribute.sub_attributes = [s for s in attribute.sub_attributes or [] if s.name in NAME_PARTS]
        schema.attributes = attributes
        schema.meta = Meta(resource_type="Schema", location=place.location("Schemas", schema.id or ""))
        found.append(schema)
    return found
