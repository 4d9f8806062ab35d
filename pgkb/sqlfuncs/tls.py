"""TLS for the SQL functions' endpoint: the server's certificate and key, and its SSL context.

By default the pair lives in `<data dir>/sqlfuncs/tls/` and is made on first use: a self-signed
certificate for `localhost`, 127.0.0.1, ::1 and the host names given. Replace the two files with a
certificate of your own CA to let the database verify the endpoint (`sslmode verify-full`); with the
self-signed pair, `sslmode require` encrypts the traffic (model inputs and vectors) without verifying.
SCRAM already keeps the password off the wire either way.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

from pgkb.errors import ValidationError

CERT_NAME = "server.crt"
KEY_NAME = "server.key"
VALID_DAYS = 3650


def tls_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "sqlfuncs" / "tls"


def ensure_certificate(data_dir: Path | str, hosts: Iterable[str] = ()) -> tuple[Path, Path]:
    """(certificate, key) paths in the data dir, creating a self-signed pair if there is none."""
    d = tls_dir(data_dir)
    cert, key = d / CERT_NAME, d / KEY_NAME
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in ("127.0.0.1", "::1", *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pgkb SQL endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, hashes.SHA256())
    )
    # The key is written 0600 from the start (never readable by others, not even briefly).
    tmp_key = key.with_name(key.name + ".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    tmp_cert = cert.with_name(cert.name + ".tmp")
    tmp_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A TLS 1.2+ server context over the pair; a clear error when the files are unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"cannot use the TLS certificate {cert} and key {key}: {exc}") from None
    return ctx
