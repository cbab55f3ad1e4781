"""The TCP listener over TLS, the token file's mode, and ``pylvs ctl``/``ApiClient`` over TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import trustme

from pylvs import config as config_mod
from pylvs.api.client import ApiClient, ApiError
from pylvs.api.server import ApiServer, read_token
from pylvs.cli import ctl
from pylvs.errors import ConfigError
from tests.support.mini_director import (
    ApiStarter,
    MiniDirector,
    base_config,
    replace_api,
    service,
)

TOKEN = "tls-test-token-0123456789abcdef"
VIP = "198.18.0.100:80"


def _token(tmp_path: Path, mode: int = 0o600) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return str(path)


def _pki(tmp_path: Path) -> tuple[str, str, str]:
    """(cert, key, CA bundle) for a server certificate valid for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path, ca_path = (tmp_path / "cert.pem", tmp_path / "key.pem",
                                    tmp_path / "ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return str(cert_path), str(key_path), str(ca_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_token_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _token(tmp_path, mode)
    with pytest.raises(ConfigError, match=rf"api.token_file: {path} is accessible by group or "
                       rf"others \(mode 0{mode:o}\); run chmod 600"):
        read_token(path)
    assert read_token(_token(tmp_path, 0o400)) == TOKEN


async def test_daemon_refuses_to_start_with_an_open_token_file(tmp_path: Path) -> None:
    cfg = base_config(str(tmp_path / "t.sock"), listen="127.0.0.1:0",
                      token_file=_token(tmp_path, 0o644))
    server = ApiServer(MiniDirector(cfg))
    with pytest.raises(ConfigError, match="accessible by group or others"):
        await server.start()
    assert not (tmp_path / "t.sock").exists()  # nothing half-started


async def test_https_listener_with_token(tmp_path: Path, running_api: ApiStarter) -> None:
    cert, key, ca = _pki(tmp_path)
    token = _token(tmp_path)
    cfg = base_config(str(tmp_path / "t.sock"), (service(VIP, "198.19.0.11:80"),),
                      listen="127.0.0.1:0", token_file=token, tls_cert=cert, tls_key=key)
    config_mod.validate(cfg)
    _, server = await running_api(cfg)
    assert server.tcp_address is not None
    host, port = server.tcp_address
    url = f"https://{host}:{port}"

    def client_calls() -> None:
        # The client checks the certificate against the CA and sends the token.
        api = ApiClient(url, token=TOKEN, cafile=ca)
        assert api.get("/api/v1/services")["services"][0]["address"] == VIP
        with pytest.raises(ApiError) as denied:
            ApiClient(url, token="wrong-token-wrong-token", cafile=ca).get("/api/v1/services")
        assert denied.value.status == 401
        # Without the CA the self-made certificate is not trusted: no token is sent.
        with pytest.raises(ApiError, match="TLS failed"):
            ApiClient(url, token=TOKEN).get("/api/v1/services")
        # Plain HTTP to a TLS port gets no answer from the application.
        with pytest.raises(ApiError):
            ApiClient(f"http://{host}:{port}", token=TOKEN, timeout=2).get("/api/v1/services")

    await asyncio.to_thread(client_calls)


async def test_ctl_over_https_prints_the_listing(tmp_path: Path, running_api: ApiStarter,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cert, key, ca = _pki(tmp_path)
    token = _token(tmp_path)
    cfg = base_config(str(tmp_path / "t.sock"), (service(VIP, "198.19.0.11:80"),),
                      listen="127.0.0.1:0", token_file=token, tls_cert=cert, tls_key=key)
    _, server = await running_api(cfg)
    assert server.tcp_address is not None
    url = "https://{}:{}".format(*server.tcp_address)
    rc = await asyncio.to_thread(ctl.main, ["-Ln", "--url", url, "--token-file", token,
                                            "--cacert", ca])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"TCP  {VIP} wlc" in out
    assert "-> 198.19.0.11:80" in out
    rc = await asyncio.to_thread(ctl.status_main, ["--url", url, "--token-file", token,
                                                   "--cacert", ca])
    assert rc == 0


def test_tls_config_checks(tmp_path: Path) -> None:
    base = base_config(str(tmp_path / "t.sock"))
    with pytest.raises(ConfigError, match=r"api\.tls_key: required with the other one"):
        config_mod.validate(replace_api(base, listen="127.0.0.1:0", token_file="/x",
                                        tls_cert="/c.pem"))
    with pytest.raises(ConfigError, match=r"api\.tls_cert: only used by the TCP listener"):
        config_mod.validate(replace_api(base, tls_cert="/c.pem", tls_key="/k.pem"))


async def test_unreadable_certificate_names_the_field(tmp_path: Path) -> None:
    cfg = base_config(str(tmp_path / "t.sock"), listen="127.0.0.1:0",
                      token_file=_token(tmp_path), tls_cert=str(tmp_path / "none.pem"),
                      tls_key=str(tmp_path / "none.key"))
    with pytest.raises(ConfigError, match=r"api\.tls_cert: cannot read"):
        await ApiServer(MiniDirector(cfg)).start()
