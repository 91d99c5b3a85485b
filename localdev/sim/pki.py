"""Certificates and keys for the local control plane, made with the openssl CLI.

openssl is on every Debian machine, so the harness needs no Python crypto
package. Everything lives under ``.sim/pki`` and is made once: a second
``make sim-up`` reuses it, so kubeconfigs handed out earlier stay valid.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    """Paths of the cluster's certificates and keys."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


SERVING_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
)

# (file name, subject) of each client certificate. system:masters is the
# bootstrap admin group; the controller manager and scheduler get the
# identities their default RBAC roles are bound to.
CLIENTS = (
    ("admin", "/O=system:masters/CN=sim-admin"),
    ("controller-manager", "/CN=system:kube-controller-manager"),
    ("scheduler", "/CN=system:kube-scheduler"),
    # kwok plays every kubelet and needs to patch any pod's status; giving it a
    # node identity would need the Node authorizer per node, so it acts as admin.
    ("kwok", "/O=system:masters/CN=sim-kwok"),
)


def ensure_pki(root: Path) -> Pki:
    """Create the CA, the API server's serving cert, client certs and the SA key pair."""
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)
    if not pki.ca_cert.exists():
        _openssl("genrsa", "-out", "ca.key", "2048", cwd=root)
        _openssl(
            "req", "-x509", "-new", "-key", "ca.key", "-days", DAYS,
            "-subj", "/CN=tfserving-operator-sim-ca", "-out", "ca.crt", cwd=root,
        )  # fmt: skip
    if not pki.sa_key.exists():
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=root)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=root)
    _ensure_signed(pki, "apiserver", "/CN=kube-apiserver", serving_sans=SERVING_SANS)
    for name, subject in CLIENTS:
        _ensure_signed(pki, name, subject)
    return pki


def _ensure_signed(pki: Pki, name: str, subject: str, serving_sans: str | None = None) -> None:
    if pki.cert(name).exists():
        return
    root = pki.root
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=root)
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=root
    )
    ext = root / f"{name}.ext"
    usage = "serverAuth" if serving_sans else "clientAuth"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
             f"extendedKeyUsage={usage}"]  # fmt: skip
    if serving_sans:
        lines.append(f"subjectAltName={serving_sans}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", DAYS, "-extfile", ext.name, "-out", f"{name}.crt", cwd=root,
    )  # fmt: skip
    (root / f"{name}.csr").unlink()
    ext.unlink()
