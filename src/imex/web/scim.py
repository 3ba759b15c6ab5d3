"""SCIM 2.0 over HTTP (RFC 7644) under /scim/v2: a directory's bearer token says which `[[scim]]` directory
calls; its requests go to imex.auth.scim and its answers are application/scim+json, errors as SCIM Error
objects. A request with a body and no valid token is refused before its body is read (guard.SignedInFirst
asks `body_refusal`)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from scim2_models import (
    Context,
    ForbiddenException,
    Group,
    InvalidSyntaxException,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    Resource,
    ResourceType,
    ResponseParameters,
    Schema,
    SCIMException,
    UnauthorizedException,
    UniquenessException,
    User,
)
from scim2_models import Error as ScimError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from imex import audit
from imex.auth.scim import groups, resources, users
from imex.auth.scim.directories import ScimDirectory, directory_for_token
from imex.auth.scim.scope import Caller
from imex.errors import Conflict, DomainError, Forbidden, NotFound

PREFIX = "/scim/v2"
SCIM_JSON = "application/scim+json"
router = APIRouter(prefix=PREFIX, include_in_schema=False)
T = TypeVar("T")


def is_scim_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# -- answers ---------------------------------------------------------------------------------------------


def _json(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type=SCIM_JSON, headers=headers)


def error_response(exc: SCIMException) -> Response:
    error: ScimError = exc.to_error()
    headers = {"WWW-Authenticate": 'Bearer realm="imex scim"'} if error.status == 401 else None
    return _json(error.model_dump(scim_ctx=Context.DEFAULT), error.status or 400, headers)


def _scim_exception(exc: DomainError) -> SCIMException:
    """An imex domain error (a role or account rule) as the SCIM error of its kind."""
    if isinstance(exc, Forbidden):
        return ForbiddenException(detail=str(exc))
    if isinstance(exc, NotFound):
        return NotFoundException(detail=str(exc))
    if isinstance(exc, Conflict):
        return UniquenessException(detail=str(exc))
    return InvalidValueException(detail=str(exc))


def _resource(
    resource: Resource[Any], context: Context, params: ResponseParameters[Any] | None = None, status: int = 200
) -> Response:
    headers = {"Location": str(resource.meta.location)} if status == 201 and resource.meta else None
    return _json(resource.model_dump(scim_ctx=context, response_parameters=params), status, headers)


def _list(page: resources.Page, model: type[Resource[Any]], params: ResponseParameters[Any]) -> Response:
    listing = ListResponse[model](  # type: ignore[valid-type]
        total_results=page.total,
        start_index=page.start_index,
        items_per_page=len(page.resources),
        resources=page.resources,
    )
    return _json(listing.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=params))


# -- who is calling --------------------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _directories(request: Request) -> Sequence[ScimDirectory]:
    return getattr(request.app.state, "scim_directories", ())


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _place(request: Request) -> resources.Place:
    """Where SCIM is served as the directory called it (behind a proxy: as http.trusted_proxies allow)."""
    return resources.Place(str(request.base_url).rstrip("/") + PREFIX)


def _authenticate(request: Request) -> ScimDirectory | Response:
    """The directory whose bearer token the request carries, or the 401 to answer; a token presented but
    wrong is audited (an absent one only answered). Reads headers only."""
    token = _bearer(request)
    directory = directory_for_token(_directories(request), token)
    if directory is not None:
        return directory
    if token is not None:
        with request.app.state.portal.db.sessions() as s:
            audit.record(
                s,
                "scim.auth_failed",
                outcome="failure",
                ip=_client_ip(request),
                detail=f"{request.method} {request.url.path[:200]}: unknown SCIM bearer token",
            )
            s.commit()
    detail = "a SCIM directory's bearer token is needed" if token is None else "the bearer token is no SCIM directory's"
    return error_response(UnauthorizedException(detail=detail))


def body_refusal(request: Request) -> Response | None:
    """For guard.SignedInFirst: None when a request with a body to /scim/v2 may have it read (its token is
    a directory's), otherwise the 401 to answer instead."""
    found = _authenticate(request)
    return found if isinstance(found, Response) else None


def _in_db(request: Request, directory: ScimDirectory, work: Callable[[Session, Caller], T], *, write: bool) -> T:
    """Run `work` in one transaction as the directory: committed when it returns, rolled back when it raises.
    A read takes SQLite's write lock only if it writes."""
    db = request.app.state.portal.db
    with (db.sessions if write else db.read_sessions)() as s:
        try:
            result = work(s, Caller.of(s, directory, _client_ip(request), _place(request).base_url))
            s.commit()
            return result
        except BaseException:
            s.rollback()
            raise


async def _serve(request: Request, run: Callable[[ScimDirectory], Awaitable[Response]]) -> Response:
    """Check the token, then answer `run` for its directory; every error as a SCIM Error."""
    directory = await run_in_threadpool(_authenticate, request)
    if isinstance(directory, Response):
        return directory
    try:
        return await run(directory)
    except SCIMException as exc:
        return error_response(exc)
    except DomainError as exc:
        return error_response(_scim_exception(exc))


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSyntaxException(detail=f"the request body is not JSON: {exc}") from None


def _query(request: Request) -> dict[str, str]:
    return dict(request.query_params)


# -- discovery -------------------------------------------------------------------------------------------


@router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        return _resource(resources.service_provider_config(_place(request)), Context.RESOURCE_QUERY_RESPONSE)

    return await _serve(request, run)


def _discovered(found: list[Any], model: type[Resource[Any]], ident: str | None) -> Response:
    if ident is None:
        return _list(resources.Page(len(found), 1, found), model, ResponseParameters())
    for item in found:
        if item.id == ident:
            return _resource(item, Context.RESOURCE_QUERY_RESPONSE)
    raise NotFoundException(detail=f"no {model.__name__} {ident[:100]!r}")


@router.get("/ResourceTypes")
@router.get("/ResourceTypes/{ident}")
async def resource_types(request: Request, ident: str | None = None) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        return _discovered(list(resources.resource_types(_place(request))), ResourceType, ident)

    return await _serve(request, run)


@router.get("/Schemas")
@router.get("/Schemas/{ident}")
async def schemas(request: Request, ident: str | None = None) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        return _discovered(list(resources.schemas(_place(request))), Schema, ident)

    return await _serve(request, run)


# -- users -----------------------------------------------------------------------------------------------


@router.get("/Users")
async def list_users(request: Request) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        search = resources.read_search(User, _query(request))
        page = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: users.search_users(s, c, search), write=False
        )
        return _list(page, User, search)

    return await _serve(request, run)


@router.post("/Users")
async def create_user(request: Request) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        resource = resources.read(User, await _body(request), Context.RESOURCE_CREATION_REQUEST)
        created = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: users.create_user(s, c, resource), write=True
        )
        return _resource(created, Context.RESOURCE_CREATION_RESPONSE, status=201)

    return await _serve(request, run)


@router.get("/Users/{user_id}")
async def get_user(request: Request, user_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        params = resources.read_attributes(User, _query(request))
        found = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: users.get_user(s, c, user_id), write=False
        )
        return _resource(found, Context.RESOURCE_QUERY_RESPONSE, params)

    return await _serve(request, run)


@router.put("/Users/{user_id}")
async def replace_user(request: Request, user_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        resource = resources.read(User, await _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
        done = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: users.replace_user(s, c, user_id, resource), write=True
        )
        return _resource(done, Context.RESOURCE_REPLACEMENT_RESPONSE)

    return await _serve(request, run)


@router.patch("/Users/{user_id}")
async def patch_user(request: Request, user_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        patch = resources.read_patch(User, await _body(request))
        done = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: users.patch_user(s, c, user_id, patch), write=True
        )
        return _resource(done, Context.RESOURCE_PATCH_RESPONSE)

    return await _serve(request, run)


@router.delete("/Users/{user_id}")
async def delete_user(request: Request, user_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        await run_in_threadpool(_in_db, request, directory, lambda s, c: users.delete_user(s, c, user_id), write=True)
        return Response(status_code=204)

    return await _serve(request, run)


# -- groups ----------------------------------------------------------------------------------------------


@router.get("/Groups")
async def list_groups(request: Request) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        search = resources.read_search(Group, _query(request))
        page = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.search_groups(s, c, search), write=False
        )
        return _list(page, Group, search)

    return await _serve(request, run)


@router.post("/Groups")
async def create_group(request: Request) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        resource = resources.read(Group, await _body(request), Context.RESOURCE_CREATION_REQUEST)
        created = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.create_group(s, c, resource), write=False
        )
        return _resource(created, Context.RESOURCE_CREATION_RESPONSE, status=201)

    return await _serve(request, run)


@router.get("/Groups/{group_id}")
async def get_group(request: Request, group_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        params = resources.read_attributes(Group, _query(request))
        found = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.get_group(s, c, group_id), write=False
        )
        return _resource(found, Context.RESOURCE_QUERY_RESPONSE, params)

    return await _serve(request, run)


@router.put("/Groups/{group_id}")
async def replace_group(request: Request, group_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        resource = resources.read(Group, await _body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
        done = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.replace_group(s, c, group_id, resource), write=True
        )
        return _resource(done, Context.RESOURCE_REPLACEMENT_RESPONSE)

    return await _serve(request, run)


@router.patch("/Groups/{group_id}")
async def patch_group(request: Request, group_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        patch = resources.read_patch(Group, await _body(request))
        done = await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.patch_group(s, c, group_id, patch), write=True
        )
        return _resource(done, Context.RESOURCE_PATCH_RESPONSE)

    return await _serve(request, run)


@router.delete("/Groups/{group_id}")
async def delete_group(request: Request, group_id: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        await run_in_threadpool(
            _in_db, request, directory, lambda s, c: groups.delete_group(s, c, group_id), write=True
        )
        return Response(status_code=204)

    return await _serve(request, run)


# -- anything else under /scim/v2 (Bulk, /.search, /Me, ...) -----------------------------------------------


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def not_served(request: Request, rest: str) -> Response:
    async def run(directory: ScimDirectory) -> Response:
        raise NotFoundException(detail=f"{PREFIX}/{rest[:100]} is not served here (no Bulk, /.search or /Me)")

    return await _serve(request, run)
