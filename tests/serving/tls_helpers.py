"""Real certificates for TLS tests, made in the test: a lab CA and a server certificate it signs for 127.0.0.1 /
localhost (what `workbench serve --tls-cert/--tls-key` takes and a client verifies with --tls-ca), and an unrelated
CA (a client trusting it must refuse the server). With the `cryptography` package; without it, the `openssl`
command line; with neither, the tests that need them are skipped."""
from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - the openssl fallback
    x509 = None


@dataclass(frozen=True)
class LabCerts:
    ca: Path  # the lab CA's certificate (what clients trust)
    cert: Path  # the server's certificate, signed by the CA
    key: Path  # the server's private key
    other_ca: Path  # a CA that signed nothing of this server's


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_lab_certs(folder: Path) -> LabCerts:
    folder.mkdir(parents=True, exist_ok=True)
    if x509 is None:
        return _openssl_certs(folder)
    ca_key, ca_cert = _ca("workbench test lab CA")
    _, other = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("gpu-box")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = LabCerts(folder / "lab-ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem")
    out.ca.write_bytes(_pem(ca_cert))
    out.other_ca.write_bytes(_pem(other))
    out.cert.write_bytes(_pem(cert))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    out.key.chmod(0o600)
    return out


def _openssl_certs(folder: Path) -> LabCerts:
    if shutil.which("openssl") is None:
        pytest.skip("needs the cryptography package or the openssl command to make a test certificate")
    out = LabCerts(folder / "lab-ca.pem", folder / "server.pem", folder / "server.key", folder / "other-ca.pem")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca, cn in ((out.ca, "workbench test lab CA"), (out.other_ca, "some other CA")):
        run("req", "-x509", *ec_key, "-keyout", str(ca.with_suffix(".key")), "-out", str(ca), "-days", "2",
            "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    csr = folder / "server.csr"
    run("req", *ec_key, "-keyout", str(out.key), "-out", str(csr), "-subj", "/CN=gpu-box")
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(out.ca), "-CAkey", str(out.ca.with_suffix(".key")),
        "-CAcreateserial", "-out", str(out.cert), "-days", "1", "-extfile", str(ext))
    return out


def lan_address() -> str | None:
    """This machine's address on a network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr
