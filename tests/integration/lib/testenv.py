"""Where the integration tests run, for the Python drivers: the same
environment as testenv.sh (which says what each variable means), with the
same defaults, read from testenv.conf."""
import os
import socket
import time

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load():
    env = {}
    with open(os.path.join(_HERE, "testenv.conf")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k] = os.environ.get(k) or v
    return env


_ENV = _load()
SERVER_ADDR = _ENV["IMFUSE_TEST_SERVER_ADDR"]        # IM servers; test peers and clients come from here
APPLIANCE_ADDR = _ENV["IMFUSE_TEST_APPLIANCE_ADDR"]  # imfused's client listeners
SERVER_NAME = _ENV["IMFUSE_TEST_SERVER_NAME"]        # a host name of SERVER_ADDR
SOURCE_NET = _ENV["IMFUSE_TEST_SOURCE_NET"]          # further client source addresses
APPLIANCE_WRAP = _ENV["IMFUSE_TEST_APPLIANCE_WRAP"].split()   # prefix of every imfused command
APPLIANCE_ARGS = _ENV["IMFUSE_TEST_APPLIANCE_ARGS"].split()   # further arguments of every imfused serving


def hostport(addr, port):
    """"ADDR:PORT", with an IPv6 address in brackets."""
    return ("[%s]:%d" if ":" in addr else "%s:%d") % (addr, port)


def server(port):
    """The "server" of a linked account whose IM server listens on PORT."""
    return hostport(SERVER_ADDR, port)


def wait_port(addr, port, deadline=10.0):
    """True once ADDR:PORT accepts a connection, False after deadline seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection((addr, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False
