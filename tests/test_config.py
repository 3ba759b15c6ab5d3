"""Settings: every one documented, TOML and environment precedence, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from imex.config import SETTINGS, ConfigError, load, settings_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_has_help_and_the_reference_is_current():
    for setting in SETTINGS:
        assert len(setting.help) > 20, f"{setting.key} needs help text"
    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert reference == settings_markdown(), "run `imex config docs --write docs/configuration.md`"
    readme = (ROOT / "README.md").read_text()
    assert "docs/configuration.md" in readme


def test_toml_then_environment(tmp_path):
    path = tmp_path / "imex.toml"
    path.write_text('data_dir = "data"\n[dicom]\nport = 104\nae_title = "HUB"\n[routing]\nstable_seconds = 3\n')
    config = load(path, env={"IMEX_DICOM_PORT": "2104"})
    assert config["dicom.port"] == 2104  # environment wins
    assert config["dicom.ae_title"] == "HUB"
    assert config["routing.stable_seconds"] == 3.0
    assert config.data_dir == tmp_path / "data"  # relative to the file
    assert config.database_url == f"sqlite:///{tmp_path / 'data' / 'imex.db'}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[dicom]\nprot = 104\n", "unknown setting 'dicom.prot'"),
        ('[dicom]\nport = "abc"\n', "dicom.port must be a int"),
        ('[store]\nfsync = "maybe"\n', "store.fsync must be true or false"),
        ("[dicom\n", "not valid TOML"),
        ("nodes = 3\n", "[[nodes]] must be a list of tables"),
    ],
)
def test_mistakes_are_reported_clearly(tmp_path, text, message):
    path = tmp_path / "imex.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path, env={})


def test_bad_environment_value():
    with pytest.raises(ConfigError, match="IMEX_DELIVERY_WORKERS"):
        load(None, env={"IMEX_DELIVERY_WORKERS": "many"})


def test_rules_are_validated(tmp_path):
    from imex.routing.rules import parse_rules

    with pytest.raises(ConfigError, match="must name at least one destination"):
        parse_rules([{"name": "x", "modality": "CT"}])
    with pytest.raises(ConfigError, match="cannot match on PatientName"):
        parse_rules([{"name": "x", "to": "RYJ", "match": {"PatientName": "*"}}])
    with pytest.raises(ConfigError, match="unknown key"):
        parse_rules([{"name": "x", "to": "RYJ", "destination": "RYJ"}])
    rule = parse_rules([{"name": "x", "to": "ryj", "modality": ["ct"]}])[0]
    assert rule.to == ("RYJ",) and rule.modality == frozenset({"CT"})
