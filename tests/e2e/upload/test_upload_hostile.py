"""Hostile uploads: zip bombs, names that climb out of the folder, symbolic links, files and requests over
the limits, truncated DICOM, another user's upload, changes without the CSRF token. Each is refused with
a clear problem, nothing reaches the index or the blob store, and nothing is written outside staging."""

from __future__ import annotations

import socket
import stat
import zipfile

import pytest

from hubtools import register_hospitals
from imex.samples import make_study
from imex.upload.staging import Staging
from portaltools import add_user, base_url, bearer, browser
from uploadtools import audit_actions, held, new_upload, put_file, zip_of

MiB = 1 << 20


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(
        make_config(upload__max_staged_bytes=20 * MiB, upload__max_file_bytes=8 * MiB, http__max_upload_bytes=10 * MiB)
    )
    register_hospitals(hub, dest_port=1)
    add_user(hub, "kings", "RJZ", ["sender"])
    add_user(hub, "kings2", "RJZ", ["sender"])
    add_user(hub, "imperial", "RYJ", ["institution_admin"])
    add_user(hub, "looker", "RJZ", ["viewer"])
    return hub


def _outside(tmp_path) -> list:
    """Files anywhere under the test's folder that a hostile name could have made."""
    return [p for p in tmp_path.rglob("*") if p.name in ("x", "passwd", "evil") or "etc" in p.parts]


def _refused(answer, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert words in answer.json()["detail"], answer.json()


def _nothing_stored(hub) -> None:
    count, blobs = held(hub)
    assert (count, blobs) == (0, [])


def test_zip_bomb_by_ratio_is_refused_before_extracting(hub, tmp_path):
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    bomb = zip_of({"scan/IM0001": b"\0" * (64 * MiB)})
    assert len(bomb) < MiB
    _refused(put_file(api, upload_id, "bomb.zip", bomb), 422, "zip bomb")
    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    assert review["skipped"][0]["path"] == "bomb.zip" and "zip bomb" in review["skipped"][0]["reason"]
    folder = Staging(hub.db, hub.config).folder(upload_id)
    assert [p for p in folder.iterdir()] == []  # nothing extracted, the zip itself deleted
    assert review["staged_bytes"] == 0
    _nothing_stored(hub)
    assert ("upload.file", "failure") in audit_actions(hub, object_id=str(upload_id))


def test_zip_expanding_past_the_upload_limit_is_refused(make_config, start_hub):
    hub = start_hub(make_config(upload__max_staged_bytes=4 * MiB, upload__zip_max_ratio=100000))
    register_hospitals(hub, dest_port=1)
    add_user(hub, "kings", "RJZ", ["sender"])
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    bomb = zip_of({f"part{i}": b"\0" * (2 * MiB) for i in range(4)})  # 8 MiB from a few KiB
    _refused(put_file(api, upload_id, "small.zip", bomb), 422, "expands to more than")
    assert list(Staging(hub.db, hub.config).folder(upload_id).iterdir()) == []
    _nothing_stored(hub)


@pytest.mark.parametrize(
    "name, words",
    [
        ("../../x", "climbs out"),
        ("/etc/passwd", "absolute path"),
        ("C:\\evil", "absolute path"),
        ("a/../../x", "climbs out"),
    ],
)
def test_zip_entry_names_that_leave_the_folder(hub, tmp_path, name, words):
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    files = make_study(tmp_path / "s", instances_per_series=1)
    archive = zip_of({"ok/IM0001": files[0].read_bytes(), name: b"owned"})
    _refused(put_file(api, upload_id, "cd.zip", archive), 422, words)
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["instances"] == 0  # the whole zip is refused
    assert _outside(tmp_path) == []
    _nothing_stored(hub)


def test_zip_with_a_symlink_entry(hub, tmp_path):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        link = zipfile.ZipInfo("DICOM/IM0001")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    _refused(put_file(api, upload_id, "links.zip", buf.getvalue()), 422, "symbolic link")
    _nothing_stored(hub)


def test_nested_zip_is_listed_not_opened(hub):
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    inner = zip_of({"IM0001": b"x" * 100})
    assert put_file(api, upload_id, "outer.zip", zip_of({"inner.zip": inner})).status_code == 200
    [skipped] = api.get(f"/api/v1/uploads/{upload_id}").json()["skipped"]
    assert skipped["path"] == "outer.zip/inner.zip" and "zip inside a zip" in skipped["reason"]


@pytest.mark.parametrize(
    "path, words",
    [
        ("../../etc/passwd", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("D:/x", "absolute"),
        ("a\x00b", "control characters"),
    ],
)
def test_file_paths_that_leave_the_folder(hub, tmp_path, path, words):
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    _refused(put_file(api, upload_id, path, b"owned"), 422, words)
    assert _outside(tmp_path) == []


def test_declared_content_length_over_the_request_limit(hub):
    """A 2 GB request is refused from its headers (http.max_upload_bytes is 10 MiB here); no 2 GB is sent."""
    api = browser(hub, "kings")
    upload_id = new_upload(api)
    port = hub.config["http.port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            (
                f"PUT /api/v1/uploads/{upload_id}/files?path=big.zip&size=2147483648&offset=0 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: 2147483648\r\nX-CSRF-Token: {api.headers['X-CSRF-Token']}\r\n"
                f"Cookie: {'; '.join(f'{k}={v}' for k, v in api.cookies.items())}\r\n\r\n"
            ).encode()
        )
        received = b""
        while b"larger than this hub accepts" not in received:  # the head and the body may come apart
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        answer = received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "application/problem+json" in answer and "larger than this hub accepts" in answer
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["staged_bytes"] == 0


def test_declared_file_size_over_the_limits(hub):
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    answer = api.put(
        f"/api/v1/uploads/{upload_id}/files",
        params={"path": "big.zip", "size": 2**31, "offset": 0},
        content=b"PK\x03\x04",
    )
    _refused(answer, 413, "upload.max_file_bytes")
    for n in range(2):  # 2 x 8 MiB declared fits in 20 MiB; the third would not
        answer = api.put(
            f"/api/v1/uploads/{upload_id}/files",
            params={"path": f"part{n}", "size": 8 * MiB, "offset": 0},
            content=b"x",
        )
        assert answer.status_code == 200, answer.text
    answer = api.put(
        f"/api/v1/uploads/{upload_id}/files", params={"path": "part2", "size": 8 * MiB, "offset": 0}, content=b"x"
    )
    _refused(answer, 413, "past a limit")
    answer = api.put(
        f"/api/v1/uploads/{upload_id}/files", params={"path": "part0", "size": 8 * MiB, "offset": 0}, content=b"x"
    )
    _refused(answer, 409, "send from offset 1")
    answer = api.put(
        f"/api/v1/uploads/{upload_id}/files", params={"path": "tiny", "size": 2, "offset": 0}, content=b"three"
    )
    _refused(answer, 413, "more bytes arrived than tiny declared")


def test_user_limit_counts_every_open_upload(make_config, start_hub):
    hub = start_hub(make_config(upload__max_user_bytes=3 * MiB))
    register_hospitals(hub, dest_port=1)
    add_user(hub, "kings", "RJZ", ["sender"])
    api = bearer(hub, "kings")
    first, second = new_upload(api), new_upload(api)
    assert (
        api.put(f"/api/v1/uploads/{first}/files", params={"path": "a", "size": 2 * MiB}, content=b"x").status_code
        == 200
    )
    _refused(
        api.put(f"/api/v1/uploads/{second}/files", params={"path": "b", "size": 2 * MiB}, content=b"x"), 413, "per user"
    )
    assert api.delete(f"/api/v1/uploads/{first}").status_code == 200  # discarding frees the room
    assert (
        api.put(f"/api/v1/uploads/{second}/files", params={"path": "b", "size": 2 * MiB}, content=b"x").status_code
        == 200
    )


def test_institution_limit_counts_every_users_uploads(make_config, start_hub):
    hub = start_hub(make_config(upload__max_institution_bytes=3 * MiB))
    register_hospitals(hub, dest_port=1)
    for name in ("kings", "kings2"):
        add_user(hub, name, "RJZ", ["sender"])
    add_user(hub, "imperial", "RYJ", ["sender"])
    first, second, third = (new_upload(bearer(hub, n)) for n in ("kings", "kings2", "imperial"))
    assert (
        bearer(hub, "kings")
        .put(f"/api/v1/uploads/{first}/files", params={"path": "a", "size": 2 * MiB}, content=b"x")
        .status_code
        == 200
    )
    _refused(
        bearer(hub, "kings2").put(
            f"/api/v1/uploads/{second}/files", params={"path": "b", "size": 2 * MiB}, content=b"x"
        ),
        413,
        "per institution",
    )
    assert (
        bearer(hub, "imperial")
        .put(f"/api/v1/uploads/{third}/files", params={"path": "c", "size": 2 * MiB}, content=b"x")
        .status_code
        == 200
    )  # another institution's own room


def test_truncated_dicom_is_skipped_and_nothing_to_send(hub, tmp_path):
    files = make_study(tmp_path / "s", instances_per_series=1, rows=128, columns=128)
    data = files[0].read_bytes()
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    assert put_file(api, upload_id, "IM0001", data[: len(data) // 2]).status_code == 200
    assert put_file(api, upload_id, "notes.pdf", b"%PDF-1.4 referral letter").status_code == 200
    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    reasons = {s["path"]: s["reason"] for s in review["skipped"]}
    assert review["instances"] == 0 and "truncated" in reasons["IM0001"] and "no DICM" in reasons["notes.pdf"]
    _refused(api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}), 422, "nothing to send")
    _nothing_stored(hub)


def test_another_users_upload_is_not_found(hub, tmp_path):
    files = make_study(tmp_path / "s", instances_per_series=1)
    owner = bearer(hub, "kings")
    upload_id = new_upload(owner)
    assert put_file(owner, upload_id, "IM1", files[0].read_bytes()).status_code == 200
    for name in ("kings2", "imperial"):  # a colleague; another institution's admin
        other = bearer(hub, name)
        for answer in (
            other.get(f"/api/v1/uploads/{upload_id}"),
            other.put(f"/api/v1/uploads/{upload_id}/files", params={"path": "x", "size": 1}, content=b"x"),
            other.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}),
            other.delete(f"/api/v1/uploads/{upload_id}"),
        ):
            _refused(answer, 404, f"no upload {upload_id}")
        assert other.get("/api/v1/uploads").json() == []
        assert browser(hub, name).get(f"/upload/{upload_id}").status_code == 404
    denied = [a for a in audit_actions(hub, object_type="upload", object_id=str(upload_id)) if a[1] == "denied"]
    assert len(denied) >= 8
    _refused(bearer(hub, "looker").post("/api/v1/uploads"), 403, "studies.send")
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])  # their institution's admins see it
    admin = bearer(hub, "kings_admin")
    assert admin.get(f"/api/v1/uploads/{upload_id}").json()["instances"] == 1
    assert [u["id"] for u in admin.get("/api/v1/uploads").json()] == [upload_id]
    assert owner.get(f"/api/v1/uploads/{upload_id}").json()["instances"] == 1  # untouched
    _nothing_stored(hub)


def test_changes_without_csrf_token_are_refused(hub, tmp_path):
    api = browser(hub, "kings")
    upload_id = new_upload(api)
    forged = browser(hub, "kings")
    del forged.headers["X-CSRF-Token"]
    _refused(forged.post("/api/v1/uploads"), 403, "security token")
    _refused(
        forged.put(f"/api/v1/uploads/{upload_id}/files", params={"path": "a", "size": 1}, content=b"x"),
        403,
        "security token",
    )
    _refused(forged.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}), 403, "security token")
    _refused(forged.delete(f"/api/v1/uploads/{upload_id}"), 403, "security token")
    cross = forged.post(
        "/api/v1/uploads", headers={"X-CSRF-Token": api.headers["X-CSRF-Token"], "Origin": "https://evil.example"}
    )
    _refused(cross, 403, "another site")
    assert [u["id"] for u in api.get("/api/v1/uploads").json()] == [upload_id]
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["staged_bytes"] == 0


def test_bad_send_choices(hub, tmp_path):
    files = make_study(tmp_path / "s", instances_per_series=1)
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    assert put_file(api, upload_id, "IM1", files[0].read_bytes()).status_code == 200
    _refused(api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "NOPE"}), 422, "no institution")
    _refused(api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RJZ"}), 422, "another institution")
    _refused(
        api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ", "node_id": 1}),
        422,
        "not an enabled destination",
    )
    assert (
        api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ", "priority": "soon"}).status_code
        == 422
    )
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["state"] == "open"
    assert base_url(hub)  # the hub still answers
    _nothing_stored(hub)
