"""SIGHUP and `imfusectl reload` (issue 11, item 3): the config file read
again, what can change applied and said, the rest named for a restart.

Run by reload.sh inside a private network namespace, with /usr/bin/python3.
Every process started here is stopped by PID at the end, even on failure.

  1. imfused from a config file: a TLS listener with certificate A, log
     level info, open registration off, ca-file a bundle without prosody's
     certificate (so an XMPP account fails its certificate check).
  2. A TLS client logs in with certificate A.  The files change: certificate
     B in place of A, log level warn, open registration on, a CA bundle
     with prosody's certificate, and store-map-size (a restart's).  SIGHUP:
     the log says each change and the restart; a new TLS client gets B while
     the first, still on A, keeps working; registration works; info lines
     are no longer logged; the XMPP account comes online after the new CA.
  3. imfusectl reload: "nothing changed"; a key that does not fit the
     certificate, an expired certificate, a missing file and a broken config
     are refused with the reason (exit 1), and B keeps serving; --json.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from harness import (BUILD, account_state, check, lib, lib_out, log, procs, remove_at_end, run,  # noqa: E402
                     stop_at_end, stop_proc)
from imclient import Client  # noqa: E402
from testenv import APPLIANCE_ADDR, hostport, server, wait_port  # noqa: E402

XMPP_PORT = 15246
PLAIN_PORT = 17746
TLS_PORT = 17747


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


def make_cert(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
            "-addext", "subjectAltName=DNS:%s" % name, "-keyout", os.path.join(d, name + ".key"),
            "-out", os.path.join(d, name + ".crt"))
    return os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")


def make_expired(d, name):
    """A self-signed certificate valid in January 2020 only."""
    key, csr = os.path.join(d, name + ".key"), os.path.join(d, name + ".csr")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name, "-keyout", key, "-out", csr)
    ca = os.path.join(d, "oldca")
    os.makedirs(ca)
    open(os.path.join(ca, "index.txt"), "w").close()
    with open(os.path.join(ca, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(ca, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = d\n[d]\ndir = %s\ndatabase = %s/index.txt\nnew_certs_dir = %s\n"
                "serial = %s/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
                % (ca, ca, ca, ca))
    openssl("ca", "-batch", "-config", os.path.join(ca, "ca.cnf"), "-selfsign", "-keyfile", key, "-in", csr,
            "-out", os.path.join(d, name + ".crt"), "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    return os.path.join(d, name + ".crt"), key


def tls_client(cafile, name):
    """A client connection over TLS that trusts only cafile; the server certificate's CN."""
    ctx = ssl.create_default_context(cafile=cafile)
    c = Client(host=APPLIANCE_ADDR, port=TLS_PORT, tls_ctx=ctx, tls_name=name)
    cn = dict(x[0] for x in c.sock.getpeercert()["subject"])["commonName"]
    return c, cn


def write(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def copy(src, dst):
    shutil.copy(src, dst + ".new")
    os.replace(dst + ".new", dst)


def log_wait(path, text, after=0, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(path) as f:
            f.seek(after)
            if text in f.read():
                return True
        time.sleep(0.1)
    return False


def main():
    work = tempfile.mkdtemp(prefix="imfuse-reload.")
    remove_at_end(work)     # once its servers (their pid files are there) are stopped
    log("# work directory %s" % work)
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    a_crt, a_key = make_cert(certs, "a.imfuse.test")
    b_crt, b_key = make_cert(certs, "b.imfuse.test")
    old_crt, old_key = make_expired(certs, "old.imfuse.test")
    pdir = os.path.join(work, "prosody")
    stop_at_end("prosody.sh", "prosody_stop %s" % pdir)
    lib("prosody.sh", "prosody_start %s %d x.test" % (pdir, XMPP_PORT))
    lib("prosody.sh", "prosody_adduser %s alice x.test pw-x" % pdir)
    prosody_ca = lib_out("prosody.sh", "prosody_cafile %s" % pdir)

    # 1. the files the daemon reads
    cert, key, cafile = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key"), os.path.join(work, "ca.pem")
    copy(a_crt, cert)
    copy(a_key, key)
    copy(a_crt, cafile)             # not prosody's: its certificate check fails
    conf = os.path.join(work, "imfused.conf")
    base = ("listen = %s\nlisten-tls = %s\ntls-cert = %s\ntls-key = %s\nca-file = %s\n"
            % (hostport(APPLIANCE_ADDR, PLAIN_PORT), hostport(APPLIANCE_ADDR, TLS_PORT), cert, key, cafile))
    write(conf, base + "log-level = info\n")
    logpath = os.path.join(work, "imfused.log")
    ctlsock = os.path.join(work, "ctl.sock")
    logf = open(logpath, "a")
    p = subprocess.Popen([os.path.join(BUILD, "imfused"), "--config", conf, "--data", os.path.join(work, "var"),
                          "--control", ctlsock], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    procs.append(p)
    check(wait_port(APPLIANCE_ADDR, TLS_PORT), "1. imfused started from its config file")

    def ctl(*args, stdin=None):
        return subprocess.run([os.path.join(BUILD, "imfusectl"), "-s", ctlsock] + list(args), input=stdin,
                              capture_output=True, text=True, timeout=30)

    check(ctl("user", "add", "alice", stdin="pw\n").returncode == 0, "user alice added")
    c1, cn = tls_client(a_crt, "a.imfuse.test")
    check(cn == "a.imfuse.test" and c1.login("alice", "pw")["op"] == "ok", "a TLS client on certificate A logs in")
    cx, _ = tls_client(a_crt, "a.imfuse.test")
    r = cx.request("register", user="bob", password="pw")
    check(r["op"] == "error" and r["code"] == "unsupported", "open registration is off: %r" % r)
    cx.close()
    acc = c1.call("link", network="xmpp", login="alice@x.test", password="pw-x", server=server(XMPP_PORT),
                  tls="starttls")["account"]
    e = account_state(c1, acc, ("error", "offline"))
    check("not trusted" in e.get("detail", ""), "the XMPP account fails its certificate check: %r" % e.get("detail"))

    # 2. new files, SIGHUP
    copy(b_crt, cert)
    copy(b_key, key)
    copy(prosody_ca, cafile)
    write(conf, base + "log-level = warn\nopen-registration = true\nstore-map-size = 2G\n")
    mark = os.path.getsize(logpath)
    p.send_signal(signal.SIGHUP)
    check(log_wait(logpath, "tls-cert, tls-key and ca-file reloaded: CA chain: 1 certificates; certificate "
                   "CN=b.imfuse.test", mark), "2. SIGHUP: the log says the certificate, key and CA file were reloaded")
    with open(logpath) as f:
        f.seek(mark)
        text = f.read()
    check("reload: log-level: info -> warn" in text and "reload: open-registration: false -> true" in text,
          "and the log level and open registration")
    check('store-map-size: "1G" in force, "2G" takes effect at the next restart' in text,
          "and that store-map-size waits for a restart")
    c2, cn = tls_client(b_crt, "b.imfuse.test")
    check(cn == "b.imfuse.test", "a new TLS client gets certificate B")
    check(c1.request("ping")["op"] == "ok" and c1.call("accounts")["accounts"][0]["account"] == acc,
          "the client connected on A keeps working")
    r = c2.request("register", user="bob", password="pw-bob")
    check(r["op"] == "ok", "registration is open now: %r" % r)
    check(c2.login("bob", "pw-bob")["op"] == "ok", "and bob logs in (over TLS with B)")
    c1.call("update_account", account=acc)
    account_state(c1, acc, ("online",), timeout=30)
    check(True, "with the reloaded CA file the XMPP account comes online")
    with open(logpath) as f:
        f.seek(mark)
        text = f.read()
    check("user bob logged in" not in text and "account %d: online" % acc not in text,
          "at level warn the logins and account states (info) are not logged")
    src = [x for x in json.loads(ctl("--json", "config").stdout)["config"] if x["key"] in ("tls-cert", "log-level")]
    check(all("line" in x["source"] for x in src), "config: the reloaded keys come from the file")

    # 3. imfusectl reload: nothing, then bad material
    r = ctl("reload")
    check(r.returncode == 0 and r.stdout.strip() == 'needs a restart: store-map-size: "1G" in force, "2G" takes '
          'effect at the next restart', "3. reload: nothing new, the restart still pending: %r" % r.stdout)
    copy(a_key, key)               # A's key with B's certificate
    r = ctl("reload")
    check(r.returncode == 1 and "does not belong to the certificate" in r.stderr and "stays" in r.stderr,
          "a key that does not fit: %r" % r.stderr.strip())
    c3, cn = tls_client(b_crt, "b.imfuse.test")
    check(cn == "b.imfuse.test", "certificate B keeps serving")
    copy(old_crt, cert)
    copy(old_key, key)
    r = ctl("--json", "reload")
    check(r.returncode == 1 and "expired" in r.stderr, "an expired certificate: %r" % r.stderr.strip())
    os.unlink(cert)
    r = ctl("reload")
    check(r.returncode == 1 and "cannot read" in r.stderr and "keeps its certificate" in r.stderr,
          "a missing file: %r" % r.stderr.strip())
    copy(b_crt, cert)
    copy(b_key, key)
    write(conf, base + "log-level = loud\n")
    r = ctl("reload")
    check(r.returncode == 1 and "line 6" in r.stderr and "nothing changed" in r.stderr,
          "a broken config: %r" % r.stderr.strip())
    write(conf, base + "log-level = info\nopen-registration = false\n")
    r = ctl("--json", "reload")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    check(sorted(j.get("changed", [])) == ["log-level: warn -> info", "open-registration: true -> false"]
          and j.get("restart") == [], "--json reload: %r" % j)
    c4, cn = tls_client(b_crt, "b.imfuse.test")
    check(cn == "b.imfuse.test" and c4.login("bob", "pw-bob")["op"] == "ok", "B still serves")
    check(log_wait(logpath, "user bob logged in"), "at level info again, logins are logged")
    for c in (c1, c2, c3, c4):
        c.close()
    check(stop_proc(p, wait=30) == 0, "imfused stops with exit 0")


run(main)
