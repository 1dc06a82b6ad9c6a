"""The front door's TLS lines: rendered only with a certificate, accepted by HAProxy,
and a certificate file HAProxy could not serve is refused before anything starts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rigs.certs import TestPki
from stack.front import front_door_config, parse_hosts
from stack.render import haproxy_config, prepare
from stack.settings import StackSettings
from stack.tls import FrontTls

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is needed")
needs_tools = pytest.mark.skipif(not (shutil.which("haproxy") and shutil.which("openssl")),
                                 reason="haproxy and openssl are needed")


def test_without_a_certificate_nothing_of_tls_is_rendered(tmp_path: Path) -> None:
    config = haproxy_config(StackSettings(var=tmp_path))
    assert "{{" not in config
    for absent in (" ssl crt ", "redirect", "Strict-Transport-Security", " secure "):
        assert absent not in config
    assert "httponly attr" in config  # the stickiness cookie, as before


@needs_tools
def test_with_a_certificate_haproxy_takes_the_https_lines(tmp_path: Path) -> None:
    cert = TestPki(tmp_path / "pki").issue("front")
    config = haproxy_config(StackSettings(var=tmp_path, http_port=8000,
                                          tls=FrontTls(cert, 8443)))
    assert "{{" not in config
    assert f"    bind 127.0.0.1:8443 ssl crt {cert} alpn http/1.1 tcp-ut 60s\n" in config
    assert "regsub(:[0-9]+$,)]:8443%[pathq]' code 301 if !{ ssl_fc } !{ path /healthz }" in config
    assert 'Strict-Transport-Security "max-age=31536000" if { ssl_fc }' in config
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2" in config
    assert "httponly secure attr" in config
    (tmp_path / "haproxy.cfg").write_text(config)
    done = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_front_door_over_hosts_serves_https_on_its_bind_host(tmp_path: Path) -> None:
    cert = tmp_path / "chat.pem"
    config = front_door_config("0.0.0.0:80", parse_hosts("10.0.0.2:8001"), tmp_path,
                               tls=FrontTls(cert, 443))
    assert f"    bind 0.0.0.0:443 ssl crt {cert} alpn http/1.1 tcp-ut 60s\n" in config
    # On 443 the redirect names no port.
    assert "'https://%[req.hdr(host),regsub(:[0-9]+$,)]%[pathq]'" in config


@needs_openssl
def test_a_pem_without_its_key_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bundle = TestPki(tmp_path / "pki").issue("front")
    without_key = tmp_path / "fullchain.pem"  # what certbot calls the chain alone
    without_key.write_text(bundle.read_text().split("-----BEGIN PRIVATE KEY-----")[0])
    settings = StackSettings(var=tmp_path / "var", tls=FrontTls(without_key))
    with pytest.raises(RuntimeError, match="private key"):
        prepare(settings)
    with pytest.raises(RuntimeError, match="No such file"):
        FrontTls(tmp_path / "missing.pem").check()
    FrontTls(bundle).check()  # the whole bundle is fine
