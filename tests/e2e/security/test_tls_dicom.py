"""DICOM over TLS with dcmtk on both sides: nodes store into the hub's TLS port with a certificate from
`imex tls`; no certificate, a revoked one, another CA's or another node's is refused; the hub delivers
over TLS to storescp +tls and checks its name."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.cli import main
from imex.db.models import Instance, Node
from imex.samples import make_study
from sectools import dcmtk_tls, make_ca, tls_overrides

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")


def _instances(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.scalar(select(func.count()).select_from(Instance))


def test_nodes_store_over_tls_only_with_their_certificate(make_config, start_hub, tmp_path):
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(**tls_overrides(ca)))
    register_hospitals(hub, dest_port=peers.free_port())
    port = hub.listener.tls_port
    ca.issue("KINGS_PACS", ["127.0.0.1"])
    files = make_study(tmp_path / "ct", instances_per_series=2, modality="CT")

    echo = peers.run_dcmtk(
        "echoscu", ["-v", "-aet", "STORESCU", "-aec", "IMEX", *dcmtk_tls(ca, "KINGS_PACS"), "127.0.0.1", str(port)]
    )
    assert echo.returncode == 0, echo.stdout + echo.stderr
    sent = peers.storescu(files[:1], port, "RYJ", "STORESCU", extra_args=dcmtk_tls(ca, "KINGS_PACS"))
    assert sent.statuses == [0], sent.output[-2000:]
    assert _instances(hub) == 1

    # no certificate at all (anonymous TLS), and plain TCP on the TLS port
    anonymous = peers.storescu(files[1:2], port, "RYJ", "STORESCU", extra_args=["+tla", "+cf", str(ca.ca_cert_path)])
    assert anonymous.statuses == []
    plain = peers.storescu(files[1:2], port, "RYJ", "STORESCU")
    assert plain.statuses == []
    # a certificate issued to another node, for this node's AE title: TLS works, the association does not
    ca.issue("OTHER_NODE", ["127.0.0.1"])
    impostor = peers.storescu(files[1:2], port, "RYJ", "STORESCU", extra_args=dcmtk_tls(ca, "OTHER_NODE"))
    assert impostor.statuses == [] and "Association Rejected" in impostor.output, impostor.output[-2000:]
    # the same node name from another CA
    foreign = make_ca(tmp_path / "other-ca")
    foreign.issue("KINGS_PACS", ["127.0.0.1"])
    stranger = peers.storescu(
        files[1:2],
        port,
        "RYJ",
        "STORESCU",
        extra_args=[*dcmtk_tls(foreign, "KINGS_PACS")[:3], "+cf", str(ca.ca_cert_path)],
    )
    assert stranger.statuses == []
    # revoked (with `imex tls revoke`, while the hub runs): refused from the next connection on
    env = {"IMEX_TLS_CA_DIR": str(ca.folder), "IMEX_DATABASE_URL": hub.config.database_url}
    result = CliRunner().invoke(main, ["tls", "revoke", "KINGS_PACS"], env=env)
    assert result.exit_code == 0, result.output
    revoked = peers.storescu(files[1:2], port, "RYJ", "STORESCU", extra_args=dcmtk_tls(ca, "KINGS_PACS"))
    assert revoked.statuses == []
    assert _instances(hub) == 1  # nothing from a refused connection was stored
    echo = peers.run_dcmtk(
        "echoscu", ["-aet", "STORESCU", "-aec", "IMEX", *dcmtk_tls(ca, "KINGS_PACS"), "127.0.0.1", str(port)]
    )
    assert echo.returncode != 0
    # a renewed certificate works again
    ca.issue("KINGS_PACS", ["127.0.0.1"])
    again = peers.storescu(files[1:2], port, "RYJ", "STORESCU", extra_args=dcmtk_tls(ca, "KINGS_PACS"))
    assert again.statuses == [0], again.output[-2000:]
    assert _instances(hub) == 2


def test_node_that_requires_tls_is_refused_on_the_plain_port(make_config, start_hub, tmp_path):
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(**tls_overrides(ca)))
    register_hospitals(hub, dest_port=peers.free_port())
    files = make_study(tmp_path / "ct", instances_per_series=1, modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    env = {"IMEX_TLS_CA_DIR": str(ca.folder), "IMEX_DATABASE_URL": hub.config.database_url}
    result = CliRunner().invoke(main, ["tls", "require", "KINGS_PACS"], env=env)
    assert result.exit_code == 0, result.output
    hub.nodes.invalidate()
    refused = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU")
    assert refused.statuses == [] and "Association Rejected" in refused.output
    assert _instances(hub) == 1


def test_hub_delivers_over_tls_to_storescp(make_config, start_hub, storescp, tmp_path):
    ca = make_ca(tmp_path / "ca")
    ca.issue("IMPERIAL_PACS", ["127.0.0.1"])
    dest = storescp("RYJPACS", extra_args=dcmtk_tls(ca, "IMPERIAL_PACS"))  # requires the hub's certificate
    hub = start_hub(make_config(**tls_overrides(ca)))
    register_hospitals(hub, dest_port=dest.port)
    with hub.db.session() as s:
        s.scalar(select(Node).where(Node.name == "IMPERIAL_PACS")).tls = True
    files = make_study(tmp_path / "ct", instances_per_series=3, modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0, 0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery over TLS")
    assert len(dest.wait_for(3)) == 3
    assert "TLS" in dest.log() or "tls" in dest.log().lower()


def test_hub_refuses_a_destination_whose_certificate_names_another_host(make_config, start_hub, storescp, tmp_path):
    ca = make_ca(tmp_path / "ca")
    ca.issue("IMPERIAL_PACS", ["pacs.imperial.test"])  # not the address the hub dials
    dest = storescp("RYJPACS", extra_args=dcmtk_tls(ca, "IMPERIAL_PACS"))
    hub = start_hub(make_config(delivery__max_attempts=1, **tls_overrides(ca)))
    register_hospitals(hub, dest_port=dest.port)
    with hub.db.session() as s:
        s.scalar(select(Node).where(Node.name == "IMPERIAL_PACS")).tls = True
    files = make_study(tmp_path / "ct", instances_per_series=1, modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: transfer_states(hub) and transfer_states(hub)[0][0] == "failed", message="failure")
    from imex.db.models import Transfer

    with hub.db.session() as s:
        error = s.scalar(select(Transfer.last_error))
    assert "TLS" in error and "127.0.0.1" in error, error
    assert dest.files() == []
