"""Uploads on PostgreSQL: a zip unpacked (its bytes released with GREATEST), limits summed across uploads,
sent and delivered to Imperial's PACS."""

from __future__ import annotations

import pytest

from hubtools import register_hospitals, wait_until
from imex.samples import make_study
from portaltools import add_user, bearer
from uploadtools import dataset_bytes, new_upload, put_file, zip_of

pytestmark = pytest.mark.postgres
MiB = 1 << 20


def test_zip_upload_on_postgresql(make_config, start_hub, storescp, postgres_url, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(database__url=postgres_url, upload__max_user_bytes=8 * MiB))
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "kings", "RJZ", ["sender"])
    files = make_study(tmp_path / "s", instances_per_series=3)
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    answer = put_file(api, upload_id, "study.zip", zip_of({f"IM{i}": f.read_bytes() for i, f in enumerate(files)}))
    assert answer.status_code == 200, answer.text
    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    assert review["instances"] == 3 and review["staged_bytes"] == sum(f.stat().st_size for f in files)
    other = new_upload(api)
    refused = api.put(f"/api/v1/uploads/{other}/files", params={"path": "a", "size": 8 * MiB}, content=b"x")
    assert refused.status_code == 413 and "per user" in refused.json()["detail"]
    assert api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}).status_code == 202
    wait_until(lambda: api.get(f"/api/v1/uploads/{upload_id}").json()["state"] == "sent", message="stored")
    assert sorted(dataset_bytes(p) for p in dest.wait_for(3)) == sorted(dataset_bytes(f) for f in files)
