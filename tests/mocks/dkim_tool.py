"""DKIM, checked independently of Herald (dkimpy).

    python dkim_tool.py keygen DIR            writes DIR/dkim.pem (PKCS#8) and DIR/dns.txt
    python dkim_tool.py verify MAIL DNS_TXT   exit 0 when MAIL's signature verifies against
                                              the TXT record (as DNS would answer it for
                                              <selector>._domainkey.<domain>); prints why not
"""

import base64
import pathlib
import sys

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def keygen(d):
    d = pathlib.Path(d)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (d / "dns.txt").write_text("v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode())


def verify(mail, txt):
    record = pathlib.Path(txt).read_bytes()
    message = pathlib.Path(mail).read_bytes()
    asked = []

    def dns(name, timeout=5):
        asked.append(name)
        return record

    ok = dkim.verify(message, dnsfunc=dns)
    print(f"verified={ok} asked={[n.decode() for n in asked]}")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2])
    else:
        sys.exit(verify(sys.argv[2], sys.argv[3]))
