"""A real SMTP server that demands what real relays demand: STARTTLS before anything
else (with a certificate from a test CA made here by trustme) and AUTH over TLS.

    python smtp_tls.py --port P --dir D --user U --password W [--smtps]

With --smtps the connection is TLS from its first byte (port 465 style) instead.

Writes D/ca.pem (the CA to trust), files each mail's raw bytes as D/mail-N.eml and
appends one line per MAIL/DATA to D/log ("MAIL tls=True from=…"), then D/ready.
Runs until killed."""

import argparse
import asyncio
import itertools
import pathlib
import ssl

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--smtps", action="store_true")
    a = ap.parse_args()
    out = pathlib.Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)

    counter = itertools.count()

    def log(line):
        with open(out / "log", "a") as f:
            f.write(line + "\n")

    def tls_of(session):
        return a.smtps or session.ssl is not None

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, options):
            log(f"MAIL tls={tls_of(session)} from={address}")
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            n = next(counter)
            (out / f"mail-{n}.eml").write_bytes(envelope.original_content)
            log(f"DATA tls={tls_of(session)} to={','.join(envelope.rcpt_tos)}")
            return "250 2.0.0 queued as test-%d" % n

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == a.user.encode()
            and auth_data.password == a.password.encode()
        )
        log(f"AUTH {mechanism} ok={ok}")
        return AuthResult(success=ok, handled=False)

    # aiosmtpd counts only STARTTLS as TLS for AUTH; an SMTPS connection is TLS throughout.
    tls = (
        {"ssl_context": context, "auth_require_tls": False}
        if a.smtps
        else {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
    )
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=a.port,
        authenticator=authenticator,
        auth_required=True,
        ready_timeout=5,
        **tls,
    )
    controller.start()
    (out / "ready").write_text("ok")
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
