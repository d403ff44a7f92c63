"""``ceip serve --tls-cert/--tls-key`` with a file that cannot serve: one line naming the file and the problem,
never OpenSSL's "PEM lib" or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from certs import self_signed
from click.testing import CliRunner
from service.factory import specs_file

from ceip_core.cli import cli
from ceip_core.service.serve import ServeError, tls_context


def test_a_good_pair_makes_a_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert tls_context(cert, key) is not None


def test_each_kind_of_bad_file_is_named_with_its_problem(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path / "other")
    damaged = tmp_path / "damaged.pem"
    damaged.write_bytes(cert.read_bytes()[:120] + b"\n-----END CERTIFICATE-----\n")
    cases = {
        (tmp_path / "missing.pem", key): "cannot be read: No such file or directory",
        (key, key): "holds no PEM certificate (it holds a private key: give that with --tls-key)",
        (cert, cert): f"--tls-key {cert} holds no PEM private key",
        (cert, None): "no --tls-key given) holds no PEM private key",
        (damaged, key): "damaged",
        (cert, other_key): "the private key does not belong to the certificate",
    }
    for (given_cert, given_key), message in cases.items():
        with pytest.raises(ServeError) as caught:
            tls_context(given_cert, given_key)
        assert message in str(caught.value)
        assert "PEM lib" not in str(caught.value) and "\n" not in str(caught.value)


def test_ceip_serve_says_it_in_one_line(tmp_path: Path) -> None:
    _, key = self_signed(tmp_path)
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    command = ["serve", "--port", "0", "--data", str(tmp_path / "data"), "--allowlist", str(allowlist)]
    command += ["--specs", str(specs_file(tmp_path)), "--tls-cert", str(key), "--tls-key", str(key)]
    result = CliRunner().invoke(cli, command, env={"CEIP_SERVICE_TOKEN": None, "CEIP_SERVICE_DB": None})
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: --tls-cert {key} holds no PEM certificate (it holds a private key: give that with --tls-key)\n"
    )
    assert not (tmp_path / "data" / "reports.db").exists()  # refused before anything was made
