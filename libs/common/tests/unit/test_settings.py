from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, Role, ServiceSettings


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_EXAMPLE_")
    service_name: str = "flywheel-example"
    grpc: GrpcSettings = GrpcSettings(port=50099)


def test_nested_settings_read_from_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_GRPC__PORT", "7000")
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_AUTH__TOKENS", '{"abc": "admin", "def": "reader"}')
    monkeypatch.setenv("FLYWHEEL_OTHER_GRPC__PORT", "7001")
    settings = ExampleSettings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.grpc.port == 7000
    assert settings.auth.tokens == {"abc": Role.ADMIN, "def": Role.READER}
    assert settings.service_name == "flywheel-example"


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_AUTH__TOKENS", '{"abc": "superuser"}')
    with pytest.raises(ValueError, match="reader"):
        ExampleSettings()


def test_every_field_is_documented() -> None:
    for section in ("grpc", "kafka", "auth", "telemetry"):
        model = type(getattr(ExampleSettings(), section))
        for name, field in model.model_fields.items():
            assert field.description, f"{section}.{name} has no docstring"


def test_sqlite_url_lives_in_the_data_folder(tmp_path: Path) -> None:
    settings = ExampleSettings(data_dir=tmp_path)
    assert settings.sqlite_url("x.db") == f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"


def test_env_overrides_keep_the_service_defaults_of_a_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_GRPC__HOST", "0.0.0.0")
    settings = ExampleSettings()
    assert settings.grpc.host == "0.0.0.0"
    assert settings.grpc.port == 50099


def test_producers_compress_with_zstd_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ExampleSettings().kafka.compression == "zstd"
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_KAFKA__COMPRESSION", "lz4")
    assert ExampleSettings().kafka.compression == "lz4"


def test_an_unknown_compression_is_refused_with_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_KAFKA__COMPRESSION", "lz5")
    with pytest.raises(ValueError, match="'snappy', 'lz4' or 'zstd'"):
        ExampleSettings()
