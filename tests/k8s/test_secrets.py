"""Credentials reach the pods only from Secrets: no password, token or database URL is
written into a workload or a ConfigMap, every reference resolves, and the secret files
(dev's throwaway ones, prod's examples, make-secrets.sh's) agree."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from flywheel_common.tls import key_matches_certificate
from flywheel_testing.manifests import K8S, Rendered

SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "CREDENTIAL", "DATABASE__URL")
SECRET_FILES = ("postgres.env", "database.env", "auth.env")


def _secret_values(rendered: Rendered) -> set[str]:
    return {
        base64.b64decode(value).decode()
        for secret in rendered.of_kind("Secret")
        for value in secret["data"].values()
    }


def _keys(env_file: Path) -> set[str]:
    lines = env_file.read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_no_secret_is_written_into_a_workload_or_a_config_map(overlay: Rendered) -> None:
    secrets = _secret_values(overlay)
    assert secrets
    for workload, container in overlay.containers():
        where = f"{workload['metadata']['name']}/{container['name']}"
        for var in container.get("env", []):
            if any(word in var["name"] for word in SECRET_WORDS):
                assert "secretKeyRef" in var.get("valueFrom", {}), f"{where} {var['name']}"
            literal = str(var.get("value", ""))
            assert not any(secret in literal for secret in secrets), f"{where} {var['name']}"
    for config_map in overlay.of_kind("ConfigMap"):
        for key, value in config_map["data"].items():
            assert not any(word in key for word in SECRET_WORDS), key
            assert not any(secret in value for secret in secrets), key


def test_every_secret_reference_resolves(overlay: Rendered) -> None:
    secrets = {s["metadata"]["name"]: s["data"] for s in overlay.of_kind("Secret")}
    for workload, container in overlay.containers():
        for var in container.get("env", []):
            reference = var.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["key"] in secrets[reference["name"]], var["name"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, workload["metadata"]["name"]


def test_the_database_urls_carry_the_passwords_postgresql_gives_the_roles(
    overlay: Rendered,
) -> None:
    [postgres] = [s for s in overlay.of_kind("Secret") if "POSTGRES_PASSWORD" in s["data"]]
    [urls] = [s for s in overlay.of_kind("Secret") if "registry" in s["data"]]
    script = (K8S / "base/postgres/create-databases.sh").read_text()
    listed = re.search(r"for service in ([a-z ]+); do", script)
    assert listed
    assert set(listed[1].split()) == set(urls["data"])
    for service, encoded in urls["data"].items():
        url = urlsplit(base64.b64decode(encoded).decode())
        password = base64.b64decode(postgres["data"][f"{service.upper()}_DB_PASSWORD"]).decode()
        assert url.scheme == "postgresql+psycopg"
        assert (url.username, url.password) == (service, password)
        assert (url.hostname, url.port, url.path) == ("flywheel-postgres", 5432, f"/{service}")


def test_the_secret_files_name_what_make_secrets_writes(tmp_path: Path) -> None:
    subprocess.run([K8S / "make-secrets.sh", tmp_path], check=True, capture_output=True)
    for name in SECRET_FILES:
        written = _keys(tmp_path / name)
        assert written == _keys(K8S / "overlays/dev/secrets" / name), name
        assert written == _keys(K8S / "overlays/prod/secrets" / f"{name}.example"), name
    ignored = (K8S / "overlays/prod/secrets/.gitignore").read_text().splitlines()
    assert "*.env" in ignored


def test_make_secrets_writes_a_certificate_for_every_service_name(tmp_path: Path) -> None:
    environment = os.environ | {"NAMESPACE": "team-a"}
    subprocess.run(
        [K8S / "make-secrets.sh", tmp_path], check=True, capture_output=True, env=environment
    )
    ca = x509.load_pem_x509_certificate((tmp_path / "tls/ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "tls/server.pem").read_bytes())
    assert server.issuer == ca.subject
    assert key_matches_certificate(
        (tmp_path / "tls/server-key.pem").read_bytes(), (tmp_path / "tls/server.pem").read_bytes()
    )
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    for service in ("registry", "deployer", "gateway", "drift", "retrain"):
        assert {f"flywheel-{service}", f"flywheel-{service}.team-a.svc"} <= dns
    ignored = (K8S / "overlays/prod/secrets/.gitignore").read_text().splitlines()
    assert "tls/" in ignored
