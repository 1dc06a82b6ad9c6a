"""Throwaway certificates made with `openssl` for HTTPS stacks in tests: a root, an
intermediate, and leaves for 127.0.0.1 and localhost, laid out as a real deployment's
(one PEM per leaf: the certificate, the intermediate, the key; README: HTTPS).

    pki = TestPki(tmp_path)
    bundle = pki.issue("first")        # the file CHAT_TLS_CERT names
    ssl.create_default_context(cafile=pki.root)   # trusts it only if the chain is served
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

# Long enough for any test run; the files live in the run's temporary folder.
VALID_DAYS = 2

_ROOT_EXTENSIONS = """basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_INTERMEDIATE_EXTENSIONS = """basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
_LEAF_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class TestPki:
    """A root and an intermediate CA in `folder`, which issue leaf bundles on demand."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.openssl = shutil.which("openssl")
        if self.openssl is None:
            raise RuntimeError("openssl is not installed")
        folder.mkdir(parents=True, exist_ok=True)
        self.root = self._signed("root", "chatfleet test root", _ROOT_EXTENSIONS, None)
        self.intermediate = self._signed("intermediate", "chatfleet test intermediate",
                                         _INTERMEDIATE_EXTENSIONS, "root")

    def issue(self, name: str) -> Path:
        """A new leaf for 127.0.0.1 and localhost: `name`.pem holds it, the intermediate
        and its key, in that order."""
        leaf = self._signed(name, f"chatfleet test {name}", _LEAF_EXTENSIONS, "intermediate")
        bundle = self.folder / f"{name}.pem"
        bundle.write_text(leaf.read_text() + self.intermediate.read_text()
                          + (self.folder / f"{name}.key").read_text())
        bundle.chmod(0o600)
        return bundle

    def leaf_der(self, name: str) -> bytes:
        """Leaf `name` in DER: what `getpeercert(binary_form=True)` returns for it."""
        return ssl.PEM_cert_to_DER_cert((self.folder / f"{name}.crt").read_text())

    def _signed(self, name: str, subject: str, extensions: str, issuer: str | None) -> Path:
        """An EC P-256 key and a certificate for `subject`, signed by `issuer` (None: itself)."""
        key, cert = self.folder / f"{name}.key", self.folder / f"{name}.crt"
        ext = self.folder / f"{name}.ext"
        ext.write_text(extensions)
        csr = self.folder / f"{name}.csr"
        self._run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={subject}")
        signer: list[str | Path] = (["-signkey", key] if issuer is None else
                  ["-CA", self.folder / f"{issuer}.crt", "-CAkey", self.folder / f"{issuer}.key",
                   "-CAcreateserial"])
        self._run("x509", "-req", "-in", csr, *signer, "-days", str(VALID_DAYS),
                  "-extfile", ext, "-out", cert)
        return cert

    def _run(self, *args: str | Path) -> None:
        assert self.openssl is not None
        done = subprocess.run([self.openssl, *map(str, args)], capture_output=True, text=True,
                              timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")
