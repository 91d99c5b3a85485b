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
    # metrics-server reads nodes and pods, the aggregation layer's ConfigMap in
    # kube-system, and delegates authn/authz (TokenReview, SubjectAccessReview):
    # admin here, as kwok, rather than four RBAC bindings of a local cluster.
    ("metrics-server", "/O=system:masters/CN=sim-metrics-server"),
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
    ensure_front_proxy(pki)
    return pki


FRONT_PROXY_CA = "front-proxy-ca"
FRONT_PROXY_CLIENT = "front-proxy-client"


def ensure_front_proxy(pki: Pki) -> None:
    """The aggregation layer's own CA and the client cert the API server proxies
    with to aggregated APIs (metrics-server): kept apart from the cluster CA, so
    no ordinary client certificate can pass as the proxy."""
    root = pki.root
    if not pki.cert(FRONT_PROXY_CA).exists():
        _openssl("genrsa", "-out", f"{FRONT_PROXY_CA}.key", "2048", cwd=root)
        _openssl(
            "req", "-x509", "-new", "-key", f"{FRONT_PROXY_CA}.key", "-days", DAYS,
            "-subj", "/CN=tfserving-operator-sim-front-proxy-ca",
            "-out", f"{FRONT_PROXY_CA}.crt", cwd=root,
        )  # fmt: skip
    _ensure_signed(pki, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}", ca=FRONT_PROXY_CA)


def _ensure_signed(
    pki: Pki, name: str, subject: str, serving_sans: str | None = None, ca: str = "ca"
) -> None:
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
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", DAYS, "-extfile", ext.name, "-out", f"{name}.crt", cwd=root,
    )  # fmt: skip
    (root / f"{name}.csr").unlink()
    ext.unlink()
