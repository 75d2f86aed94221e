"""The ``pystack`` command: ``up`` runs the daemon, ``status`` asks it, ``send``/``recv`` move a file.

Owns the command line -- parsing, validation, logging set-up, signal
handling -- the text form of ``status`` (counters laid out the way
``netstat -s`` does, the ARP table, the open sockets, TCP connections the
way ``ss -ti`` does, the services), and the client commands' progress
display.  The daemon itself is :mod:`pystack.runtime.daemon`; the services
and the client sessions are :mod:`pystack.services.tcp`.

TCP services (repeatable; each port once): ``--tcp-echo PORT`` (RFC 862),
``--tcp-discard PORT`` (RFC 863), ``--tcp-source PORT[:SIZE|:FILE]`` (a
file, SIZE bytes of the RFC 864 pattern -- ``64KiB``, ``1M``, ``1000000`` --
or, with neither, the pattern until the client closes; a FILE whose name
reads as a size is written ``./64K``), ``--tcp-sink PORT[:DIR]`` (one file
per connection in DIR, or only counted and hashed), ``--http PORT[:DIR]``
(HTTP/1.1 GET/HEAD of the files under DIR, :mod:`pystack.services.http`).

``pystack demo`` is the README's main job (:mod:`pystack.runtime.demo`).

``pystack send HOST PORT FILE`` / ``pystack recv HOST PORT FILE`` run a
stack of their own on a TAP (the same --netns/--tap/--ip/--host-ip options
as ``up``), connect to HOST:PORT, move the file, show progress on stderr,
and print one line: bytes, seconds, MB/s, SHA-256.

Every failure the user can cause (a wrong argument, missing privileges, a
busy TAP, no daemon to ask) ends with one line on stderr, ``pystack: error:
...``, and a non-zero exit status: 2 for usage errors, 1 for the rest, 130
after Ctrl-C during set-up.  A traceback is printed only for an internal
error, and only with ``--log-level debug``.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import logging
import os
import signal
import sys
import time

from pystack.runtime.control import DEFAULT_PATH

PROG = "pystack"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_LOG_LEVELS = ("debug", "info", "warning", "error")


class UsageError(Exception):
    """A wrong argument: ``prog`` ("pystack up") and a one-line message."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message}")


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exits with status 2."""

    def error(self, message: str):
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


# -- argument types --------------------------------------------------------------

def _interface_address(text: str) -> tuple[str, int]:
    """``A.B.C.D/N`` -> (address, prefix length); a host address, not the network's."""
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address with a prefix, "
                                         "like 10.77.0.2/24") from None
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} needs a prefix length, like {text}/24")
    ip, net = iface.ip, iface.network
    if not 1 <= net.prefixlen <= 32:
        raise argparse.ArgumentTypeError(f"prefix length of {text!r} must be 1..32")
    if ip.is_multicast or ip.is_unspecified or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise argparse.ArgumentTypeError(f"{ip} cannot be a host's address")
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        raise argparse.ArgumentTypeError(f"{ip} is the {'network' if ip == net.network_address else 'broadcast'}"
                                         f" address of {net}, not a host's")
    return str(ip), net.prefixlen


def _address(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None


def _int_range(lo: int, hi: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo}..{hi}, got {value}")
        return value
    parse.__name__ = what
    return parse


def _source(text: str) -> tuple[int, str | None, int | None]:
    """``PORT``, ``PORT:SIZE`` or ``PORT:FILE`` -> (port, file, size)."""
    from pystack.services.tcp import parse_size

    port_text, sep, rest = text.partition(":")
    port = _int_range(1, 65535, "--tcp-source port")(port_text)
    if not sep:
        return port, None, None
    if not rest:
        raise argparse.ArgumentTypeError(f"--tcp-source {text!r}: nothing after ':' (PORT[:SIZE|:FILE])")
    size = parse_size(rest)
    if size is not None:
        return port, None, size
    return port, rest, None


def _sink(text: str) -> tuple[int, str | None]:
    """``PORT`` or ``PORT:DIR`` -> (port, directory)."""
    port_text, sep, rest = text.partition(":")
    port = _int_range(1, 65535, "--tcp-sink port")(port_text)
    if sep and not rest:
        raise argparse.ArgumentTypeError(f"--tcp-sink {text!r}: nothing after ':' (PORT[:DIR])")
    return port, rest or None


def _http(text: str) -> tuple[int, str | None]:
    """``PORT`` or ``PORT:DIR`` -> (port, directory)."""
    port_text, sep, rest = text.partition(":")
    port = _int_range(1, 65535, "--http port")(port_text)
    if sep and not rest:
        raise argparse.ArgumentTypeError(f"--http {text!r}: nothing after ':' (PORT[:DIR])")
    return port, rest or None


def _seconds_arg(what: str, lo: float, hi: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo:g}..{hi:g} s, got {text}")
        return value
    parse.__name__ = what
    return parse


def _mac(text: str) -> bytes:
    from pystack.wire.ethernet import mac_from_str

    try:
        mac = mac_from_str(text)
    except Exception:
        raise argparse.ArgumentTypeError(f"{text!r} is not a MAC address like 02:50:0a:4d:00:02") from None
    if mac[0] & 1:
        raise argparse.ArgumentTypeError(f"{text} is a group (multicast) address, not a host's")
    if mac == bytes(6):
        raise argparse.ArgumentTypeError("00:00:00:00:00:00 cannot be a host's address")
    return mac


def _impairment(text: str) -> str:
    from pystack.phy.fault_injector import parse_impairment

    try:
        parse_impairment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _name(kind: str):
    from pystack.runtime.tapsetup import check_ifname, check_netns_name

    check = check_ifname if kind == "interface" else check_netns_name

    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = f"{kind} name"
    return parse


# -- the parser ---------------------------------------------------------------------

def _link_options(p) -> None:
    """The TAP, namespace and addressing options shared by up, send and recv."""
    where = p.add_mutually_exclusive_group()
    where.add_argument("--netns", metavar="NAME", type=_name("namespace"),
                       help="run in network namespace NAME (created if missing)")
    where.add_argument("--no-netns", action="store_true",
                       help="run in the current network namespace (the default)")
    p.add_argument("--tap", metavar="NAME", default="pst0", type=_name("interface"),
                   help="TAP device to create or attach to (default: pst0)")
    p.add_argument("--ip", metavar="ADDR/PREFIX", default="10.77.0.2/24", type=_interface_address,
                   help="the stack's address and on-link prefix (default: 10.77.0.2/24)")
    p.add_argument("--host-ip", metavar="ADDR/PREFIX", type=_interface_address,
                   help="address of the kernel side of a TAP pystack creates (default: with "
                        "--netns, the first host address of --ip's subnet other than ours; "
                        "otherwise none)")
    p.add_argument("--gateway", metavar="ADDR", type=_address, help="default route's next hop (on-link)")
    p.add_argument("--mtu", type=_int_range(68, 65535, "--mtu"),
                   help="IP MTU (default: 1500, or an existing TAP's)")
    p.add_argument("--mac", type=_mac, help="the stack's MAC (default: 02:50 followed by --ip's 4 bytes)")
    p.add_argument("--pcap", metavar="FILE", help="record every frame crossing the TAP to FILE (libpcap)")
    p.add_argument("--impair", metavar="SPEC", type=_impairment,
                   help="fault injection, e.g. loss=0.1,reorder=0.05,seed=7 (rx.KEY / tx.KEY for "
                        "one direction)")
    p.add_argument("--tcp-msl", metavar="SECONDS", type=_seconds_arg("--tcp-msl", 0.001, 600),
                   help="TCP's maximum segment lifetime; TIME-WAIT lasts twice it (default: 30)")
    p.add_argument("--tcp-min-rto", metavar="SECONDS", type=_seconds_arg("--tcp-min-rto", 0.001, 60),
                   help="TCP's lower bound on the retransmission timeout (default: 0.2, as Linux; "
                        "RFC 6298 §2.4 says 1)")


def _run_options(p) -> None:
    p.add_argument("--log-level", choices=_LOG_LEVELS, default="info", help="default: info")
    p.add_argument("--trace", action="store_true", help="log one line per frame in and out")
    p.add_argument("--batch", type=_int_range(1, 4096, "--batch"), default=64,
                   help="frames read from the TAP per batch (default: 64)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A userspace TCP/IP stack on a Linux TAP device.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    up = sub.add_parser(
        "up", help="run the stack on a TAP device (until Ctrl-C or SIGTERM)",
        description="Run the stack on a TAP device until SIGINT/SIGTERM.  By default the TAP lives "
                    "in the current network namespace; --netns NAME puts it in a namespace "
                    "(created if missing, removed at exit if pystack created it).  A TAP that "
                    "already exists is attached to and left as it is; one pystack creates is "
                    "given --mtu, --host-ip and link up, and vanishes at exit.")
    _link_options(up)
    up.add_argument("--udp-echo", metavar="PORT", type=_int_range(1, 65535, "--udp-echo port"),
                    action="append", default=[], help="run a UDP echo service on PORT (repeatable)")
    up.add_argument("--tcp-echo", metavar="PORT", type=_int_range(1, 65535, "--tcp-echo port"),
                    action="append", default=[], help="TCP echo (RFC 862) on PORT (repeatable)")
    up.add_argument("--tcp-discard", metavar="PORT", type=_int_range(1, 65535, "--tcp-discard port"),
                    action="append", default=[], help="TCP discard (RFC 863) on PORT (repeatable)")
    up.add_argument("--tcp-source", metavar="PORT[:SIZE|:FILE]", type=_source, action="append", default=[],
                    help="send each client FILE, or SIZE bytes (64KiB, 1M...) of the RFC 864 pattern, "
                         "then close; with neither, the pattern until the client closes (repeatable)")
    up.add_argument("--tcp-sink", metavar="PORT[:DIR]", type=_sink, action="append", default=[],
                    help="read each client to its end, writing it to DIR/sink-PORT-N.bin (one file per "
                         "connection) or only hashing it; logs bytes, MB/s, SHA-256 (repeatable)")
    up.add_argument("--http", metavar="PORT[:DIR]", type=_http, action="append", default=[],
                    help="HTTP/1.1 static file service (GET, HEAD, keep-alive) of the files under DIR "
                         "(default: the current directory) on PORT (repeatable)")
    up.add_argument("--control", metavar="PATH", default=DEFAULT_PATH,
                    help=f"control socket for `pystack status` (default: {DEFAULT_PATH})")
    _run_options(up)

    for name, verb in (("send", "send FILE to"), ("recv", "receive into FILE from")):
        p = sub.add_parser(
            name, help=f"{verb} HOST:PORT over pystack TCP (a stack of its own on a TAP)",
            description=f"Run a pystack of its own on a TAP (as `pystack up`, with the same options), "
                        f"connect to HOST:PORT, {verb} the peer, and end with one line: bytes, seconds, "
                        "MB/s, SHA-256.  Progress goes to stderr.  The peer is usually the kernel side "
                        "of the TAP, e.g. `nc -l PORT` running in the namespace.")
        p.add_argument("host", metavar="HOST", type=_address, help="the peer's IPv4 address")
        p.add_argument("port", metavar="PORT", type=_int_range(1, 65535, "PORT"), help="the peer's port")
        p.add_argument("file", metavar="FILE", help="the file to send" if name == "send"
                       else "where to write what is received (replaced)")
        _link_options(p)
        p.add_argument("--connect-timeout", metavar="SECONDS", type=_seconds_arg("--connect-timeout", 0.1, 600),
                       default=10.0, help="give up when not connected after this long (default: 10)")
        _run_options(p)

    demo = sub.add_parser(
        "demo", help="the main job: a file through pystack TCP each way with nc, beside the kernel's TCP",
        description="Create a namespace and TAP, start `pystack up` there with a TCP sink and source, move "
                    "a random file with nc kernel -> pystack and pystack -> kernel, check SHA-256 both ways, "
                    "print MB/s beside the kernel's own TCP over a veth pair (offloads off), and remove "
                    "everything (also on Ctrl-C or SIGTERM).  Needs root, /dev/net/tun, nc "
                    "(netcat-openbsd) and nsenter; installs missing Debian packages when it can.")
    demo.add_argument("--size", metavar="SIZE", default="10MiB", help="bytes to move each way (default: 10MiB)")
    demo.add_argument("--no-install", action="store_true", help="never run apt-get; only say what is missing")

    st = sub.add_parser("status", help="show a running daemon's counters, ARP table and sockets",
                        description="Ask a running `pystack up` for its state over its control socket.")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--control", metavar="PATH", default=DEFAULT_PATH,
                    help=f"the daemon's control socket (default: {DEFAULT_PATH})")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)")
    return parser


def _daemon_config(args):
    from pystack.runtime.daemon import DaemonConfig

    address, prefix = args.ip
    net = ipaddress.IPv4Interface(f"{address}/{prefix}").network
    host_ip = args.host_ip
    if host_ip is None and args.netns is not None and prefix <= 30:
        # A namespace pystack makes is pystack's own: give the kernel side an
        # address in our subnet so `ip netns exec NAME ping ADDR` works at once.
        host_ip = next((str(h), prefix) for h in net.hosts() if str(h) != address)
    if host_ip is not None and host_ip[0] == address:
        raise UsageError(f"{PROG} {args.command}", f"--host-ip {host_ip[0]} is the stack's own address (--ip)")
    if args.gateway is not None:
        gw = ipaddress.IPv4Address(args.gateway)
        if gw not in net:
            raise UsageError(f"{PROG} {args.command}", f"--gateway {gw} is not on-link ({net})")
        if str(gw) == address:
            raise UsageError(f"{PROG} {args.command}", f"--gateway {gw} is the stack's own address")
    services = {}
    if args.command == "up":
        prog = f"{PROG} up"
        seen: dict[int, str] = {}
        for opt, ports in (("--tcp-echo", args.tcp_echo), ("--tcp-discard", args.tcp_discard),
                           ("--tcp-source", [p for p, _, _ in args.tcp_source]),
                           ("--tcp-sink", [p for p, _ in args.tcp_sink]),
                           ("--http", [p for p, _ in args.http])):
            for port in ports:
                if port in seen:
                    raise UsageError(prog, f"TCP port {port} is given twice ({seen[port]} and {opt})")
                seen[port] = opt
        services = dict(udp_echo=list(args.udp_echo), tcp_echo=list(args.tcp_echo),
                        tcp_discard=list(args.tcp_discard), tcp_source=list(args.tcp_source),
                        tcp_sink=list(args.tcp_sink), http=list(args.http), control=args.control)
    else:
        services = dict(control=None)
    msl = None if args.tcp_msl is None else max(1, round(args.tcp_msl * 1e6))
    min_rto = None if args.tcp_min_rto is None else max(1, round(args.tcp_min_rto * 1e6))
    return DaemonConfig(ip=(address, prefix), tap=args.tap, netns=args.netns, host_ip=host_ip,
                        gateway=args.gateway, mtu=args.mtu, mac=args.mac, pcap=args.pcap,
                        impair=args.impair, trace=args.trace, tcp_msl=msl, tcp_min_rto=min_rto,
                        batch=args.batch, **services)


# -- commands ----------------------------------------------------------------------

def _logging(args) -> None:
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pyroute2").setLevel(max(logging.WARNING, logging.getLogger().level))


def _run_daemon(daemon) -> int:
    """Run ``daemon`` with SIGINT/SIGTERM/SIGHUP turned into :meth:`Daemon.stop`."""
    from pystack.runtime.daemon import Terminated

    if os.geteuid() != 0 and daemon.config.netns is not None:
        from pystack.runtime.tapsetup import SetupError

        raise SetupError("permission denied: creating or entering a network namespace needs root")
    pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != pid:
            # A child pyroute2 forked to work in a namespace inherits this
            # handler, and is stopped with SIGTERM: it must just go, never
            # unwind our stack (that would run the daemon's clean-up twice).
            os._exit(128 + signum)
        daemon.stop()  # never raises: see pystack.runtime.daemon

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        daemon.run()
    except Terminated:
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_up(args) -> int:
    from pystack.runtime.daemon import Daemon

    _logging(args)
    return _run_daemon(Daemon(_daemon_config(args)))


class _Progress:
    """The client commands' progress on stderr, polled by the loop like a service: a line
    redrawn every 0.2 s on a terminal, else a log line every 5 s."""

    def __init__(self, session, stream, verb: str) -> None:
        self.session = session
        self.stream = stream
        self.verb = verb
        self.tty = stream.isatty()
        self.every = 200_000 if self.tty else 5_000_000
        self._next = self._now() + self.every
        self.shown = False

    @staticmethod
    def _now() -> int:
        return time.monotonic_ns() // 1000

    def poll(self) -> None:
        now = self._now()
        if now < self._next or self.session.done:
            return
        self._next = now + self.every
        s = self.session
        moved = max(s.bytes_in, s.bytes_out)
        secs = s.seconds
        rate = moved / secs / 1e6 if secs > 0 else 0.0
        line = f"{self.verb} {moved} bytes in {secs:.1f} s ({rate:.2f} MB/s)"
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.shown = True
        else:
            self.stream.write(f"{PROG}: {line}\n")
        self.stream.flush()

    def poll_at(self) -> int | None:
        return None if self.session.done else self._next

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def cmd_transfer(args) -> int:
    """``pystack send`` / ``pystack recv``: one connection through a stack of our own."""
    from pystack.runtime.daemon import Daemon
    from pystack.services.tcp import FileProducer, SinkSession, SourceSession, TcpClient

    _logging(args)
    config = _daemon_config(args)
    sending = args.command == "send"
    if sending:
        producer = FileProducer(args.file)  # OSError (one line) before any set-up
    else:
        directory = os.path.dirname(os.path.abspath(args.file))
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "cannot write in", directory)
        producer = None
    peer = (args.host, args.port)
    state: dict = {}

    def make_services(daemon):
        sock = daemon.iface.tcp.socket()
        try:
            sock.connect(peer)
        except OSError:
            if producer is not None:
                producer.close()
            raise
        if sending:
            session = SourceSession(sock, peer, time.monotonic, producer)
        else:
            session = SinkSession(sock, peer, time.monotonic, args.file)
        progress = _Progress(session, sys.stderr, "sent" if sending else "received")
        state["session"], state["progress"] = session, progress

        def done(client):
            daemon.stop()

        return [TcpClient(session, done, connect_timeout_s=args.connect_timeout), progress]

    code = _run_daemon(Daemon(config, make_services=make_services))
    session = state.get("session")
    if session is None:
        return code or EXIT_ERROR
    if not session.done:  # interrupted: close the file, report what moved
        session.error = session.error or "interrupted"
        session.finish()
    state["progress"].clear()
    rec = session.record()
    moved = rec["bytes_out"] if sending else rec["bytes_in"]
    rate = rec["mb_per_s"] if rec["mb_per_s"] is not None else 0.0
    print(f"{'sent' if sending else 'received'} {moved} bytes in {rec['seconds']:.3f} s, {rate:.2f} MB/s, "
          f"sha256 {rec['sha256']}" + (f" (failed: {rec['error']})" if rec["error"] else ""), flush=True)
    if rec["error"] is not None:
        _say(f"{args.host}:{args.port}: {rec['error']}")
        return code or EXIT_ERROR
    return code


def cmd_demo(args) -> int:
    from pystack.runtime import demo
    from pystack.services.tcp import parse_size

    size = parse_size(args.size)
    if size is None or not 1 <= size <= 1 << 34:
        raise UsageError(f"{PROG} demo", f"--size {args.size!r} is not a size in 1..16GiB (like 10MiB)")
    return demo.main(size, install=not args.no_install)


def cmd_status(args) -> int:
    from pystack.runtime.control import request

    status = request(args.control, "status", timeout=args.timeout)
    if args.json:
        json.dump(status, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_status(status))
    return 0


# -- status as text ---------------------------------------------------------------------

_LAYER_TITLES = {"ethernet": "Ethernet", "arp": "Arp", "ipv4": "Ip", "reasm": "Reassembly", "icmp": "Icmp",
                 "udp": "Udp", "tcp": "Tcp", "iface": "Interface"}
_LAYER_ORDER = ("ethernet", "arp", "ipv4", "reasm", "icmp", "udp", "tcp", "iface")


def _by_layer(counters) -> dict[str, dict[str, int]]:
    """Accept counters nested by layer or flat ("layer.what": n); return them nested."""
    if not isinstance(counters, dict):
        return {}
    out: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            layer, _, what = str(key).partition(".")
            out.setdefault(layer, {})[what or layer] = value
    return out


def _table(rows: list[list[str]], indent: str = "    ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _seconds(us) -> str:
    return f"{us / 1e6:.1f} s" if isinstance(us, (int, float)) else "-"


def _arp_rows(arp) -> list[list[str]]:
    """Rows of entries as Interface.status() gives them: ip, mac, state, expires_in_us."""
    rows = [["Address", "HWaddress", "State", "Expires"]]
    for entry in arp or []:
        if not isinstance(entry, dict):
            continue
        rows.append([str(entry.get("ip", "?")), str(entry.get("mac", "?")), str(entry.get("state", "-")),
                     _seconds(entry.get("expires_in_us")) if entry.get("expires_in_us") is not None
                     else "never"])
    return rows


def _socket_rows(sockets) -> list[list[str]]:
    if not sockets:
        return []
    keys: list[str] = []
    for s in sockets:
        for k in (s if isinstance(s, dict) else {}):
            if k not in keys:
                keys.append(k)
    rows = [[k.replace("_", " ").title().replace(" ", "-") for k in keys]]
    for s in sockets:
        rows.append(["-" if s.get(k) is None else str(s.get(k)) for k in keys])
    return rows


def format_status(status: dict) -> str:
    """``pystack status`` as text: a header, counters per layer, ARP table, sockets."""
    lines: list[str] = []
    d = status.get("daemon") or {}
    cfg = status.get("config") or {}
    where = f" in namespace {d['netns']}" if d.get("netns") else ""
    ip = cfg.get("ip", "?")
    if "prefix_len" in cfg and "/" not in str(ip):
        ip = f"{ip}/{cfg['prefix_len']}"
    lines.append(f"pystack {ip} on {d.get('tap', '?')}{where}: pid {d.get('pid', '?')}, "
                 f"up {d.get('uptime_s', 0)} s, implementation {d.get('implementation', '?')}")
    details = [f"{k} {cfg[k]}" for k in ("mac", "mtu", "gateway", "ttl") if cfg.get(k) is not None]
    if details:
        lines.append("    " + ", ".join(details))
    counters = _by_layer(status.get("counters") or status.get("stats") or {})
    for layer in [*_LAYER_ORDER, *sorted(set(counters) - set(_LAYER_ORDER))]:
        values = counters.get(layer)
        if not values:
            continue
        lines.append(f"{_LAYER_TITLES.get(layer, layer.title())}:")
        width = max(len(str(v)) for v in values.values())
        for what in sorted(values):
            lines.append(f"    {values[what]:>{width}} {what.replace('_', ' ')}")
        reasm = status.get("reassembly")
        if layer == "reasm" and isinstance(reasm, dict):
            lines.append(f"    ({reasm.get('pending', 0)} datagrams pending, "
                         f"{reasm.get('memory', 0)} bytes held)")
    dev = status.get("device") or {}
    if dev:
        lines.append("Device:")
        lines.append(f"    {dev.get('name')}: mtu {dev.get('mtu')}, batch {dev.get('batch')}, "
                     f"truncated {dev.get('truncated', 0)}"
                     + (f", pcap {dev['pcap']} ({dev.get('pcap_records')} records)" if dev.get("pcap") else ""))
    faults = status.get("faults")
    if faults:
        lines.append(f"Faults (seed {faults.get('seed')}):")
        for direction in ("rx", "tx"):
            c = faults.get(direction) or {}
            lines.append(f"    {direction}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    rt = status.get("runtime") or {}
    if rt:
        lines.append("Runtime:")
        width = max(len(str(v)) for v in rt.values())
        for k, v in rt.items():
            lines.append(f"    {v:>{width}} {k.replace('_', ' ')}")
    lines.append("ARP table:")
    arp_rows = _arp_rows(status.get("arp"))
    lines.extend(_table(arp_rows) if len(arp_rows) > 1 else ["    (empty)"])
    for r in status.get("arp_resolving") or []:
        lines.append(f"    {r.get('ip')}  (resolving: {r.get('requests_sent')} requests sent, "
                     f"{r.get('queued')} packets waiting)")
    lines.append("Sockets:")
    sock_rows = _socket_rows(status.get("sockets"))
    lines.extend(_table(sock_rows) if sock_rows else ["    (none)"])
    lines.append("TCP:")
    lines.extend(format_tcp(status.get("tcp")) or ["    (none)"])
    services = status.get("services")
    if services:
        lines.append("Services:")
        for svc in services:
            if isinstance(svc, dict):
                lines.append(f"    {svc.get('service', '?')}: accepted {svc.get('accepted', 0)}, active "
                             f"{svc.get('active', 0)}, completed {svc.get('completed', 0)}, failed "
                             f"{svc.get('failed', 0)}, {svc.get('bytes_in', 0)} bytes in, "
                             f"{svc.get('bytes_out', 0)} out")
    lines.extend(format_switch(status.get("switch")))
    return "\n".join(lines) + "\n"


def format_switch(switch) -> list[str]:
    """The ``Switch:`` section: the stacks that joined the daemon's link, one row per port."""
    if not isinstance(switch, dict):
        return []
    lines = [f"Switch: {switch.get('ports_attached', 0)} attached, {switch.get('ports_removed', 0)} removed, "
             f"{switch.get('up_frames', 0)} frames up, {switch.get('down_frames', 0)} down"
             + (f" ({switch['down_dropped']} dropped)" if switch.get("down_dropped") else "")]
    rows = [["Port", "HWaddress", "Address", "Rx", "Tx", "Rx-dropped", "Tx-dropped"]]
    for p in switch.get("ports") or []:
        if isinstance(p, dict):
            rows.append([str(p.get(k, "-")) for k in ("port", "mac", "ip", "rx_frames", "tx_frames",
                                                       "rx_dropped", "tx_dropped")])
    lines.extend(_table(rows) if len(rows) > 1 else ["    (no stack joined)"])
    return lines


def _ms(us) -> str:
    return "-" if not isinstance(us, (int, float)) else f"{us / 1000:.3g}"


def format_tcp(rows) -> list[str]:
    """TCP listeners and connections the way ``ss -tni`` shows them: one line of state,
    queues and addresses, then an indented line of internals (times in ms, as ss)."""
    if not rows:
        return []
    table = [["State", "Recv-Q", "Send-Q", "Local", "Peer"]]
    details: list[str | None] = [None]
    for r in rows:
        if not isinstance(r, dict):
            continue
        table.append([str(r.get("state", "?")), str(r.get("recv_q", 0)), str(r.get("send_q", 0)),
                      str(r.get("local", "?")), str(r.get("remote", "?"))])
        if r.get("state") == "LISTEN":
            details.append(f"syn_q:{r.get('syn_q', 0)}" if r.get("syn_q") else None)
            continue
        parts = [str(r.get("congestion", "")) or None,
                 "ts" if r.get("timestamps") else None, "sack" if r.get("sack") else None,
                 f"wscale:{r['wscale']}" if r.get("wscale") is not None else None,
                 f"rto:{_ms(r.get('rto_us'))}",
                 f"rtt:{_ms(r.get('srtt_us'))}/{_ms(r.get('rttvar_us'))}",
                 f"mss:{r.get('mss', '-')}", f"rcvmss:{r.get('rcv_mss', '-')}",
                 f"cwnd:{r.get('cwnd', '-')}",
                 f"ssthresh:{r['ssthresh']}" if r.get("ssthresh") is not None else None,
                 f"snd_wnd:{r.get('snd_wnd', '-')}", f"rcv_wnd:{r.get('rcv_wnd', '-')}",
                 f"bytes_sent:{r.get('bytes_sent', 0)}", f"bytes_acked:{r.get('bytes_acked', 0)}",
                 f"bytes_received:{r.get('bytes_received', 0)}",
                 f"segs_out:{r.get('segs_out', 0)}", f"segs_in:{r.get('segs_in', 0)}",
                 f"retrans:{r.get('retrans', 0)}/{r.get('retrans_total', 0)}",
                 "orphan" if r.get("orphan") else None]
        details.append(" ".join(p for p in parts if p))
    out = []
    for line, detail in zip(_table(table), details):
        out.append(line)
        if detail:
            out.append("         " + detail)
    return out


# -- entry point -------------------------------------------------------------------------

def _say(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The console script; returns the exit status (``python -m pystack`` passes it to sys.exit)."""
    from pystack.runtime.control import ControlError
    from pystack.runtime.loop import LoopError
    from pystack.runtime.tapsetup import SetupError

    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(PROG, f"a command is needed: up, status, send, recv or demo (see {PROG} --help)")
        if args.command == "up":
            return cmd_up(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "demo":
            return cmd_demo(args)
        return cmd_transfer(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (SetupError, ControlError, LoopError) as exc:
        _say(str(exc))
    except PermissionError as exc:
        _say(f"permission denied: {_os_message(exc)} (run as root, or with CAP_NET_ADMIN)")
    except OSError as exc:
        _say(_os_message(exc))
    except ValueError as exc:
        _say(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, unless debugging
        if args is not None and getattr(args, "log_level", None) == "debug":
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (rerun with --log-level debug for details)")
    return EXIT_ERROR


def _os_message(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    if exc.filename:
        text = f"{text}: {exc.filename}"
    return text


if __name__ == "__main__":
    sys.exit(main())
