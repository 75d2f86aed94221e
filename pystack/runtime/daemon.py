"""The ``pystack up`` daemon: puts the pieces together and runs them until told to stop.

Owns the composition, not the pieces: a :class:`~pystack.runtime.tapsetup.TapSetup`
(namespace and TAP), the device stack over the TAP::

    Switch(FaultInjector(Tracer(PcapWriter(TapDevice))))   # each layer only when asked for

(the capture and the trace show the frames that really crossed the TAP;
the faults act between them and the stack; the switch, present whenever
there is a control socket, lets other stacks join the link as hosts of
their own -- ``attach``, :mod:`pystack.runtime.switch` -- with their
traffic captured, traced and impaired like the daemon's), the sans-I/O
:class:`~pystack.iface.interface.Interface`, the services (UDP echo; TCP
echo, discard, source and sink from :mod:`pystack.services.tcp`; the HTTP
file service from :mod:`pystack.services.http`), the
:class:`~pystack.runtime.loop.Loop`, and the control socket answering
``status`` and ``attach``.  The client commands (``pystack send`` / ``recv``) run the same
composition with no control socket and one client service of their own
(``Daemon(config, make_services=...)``).  Everything is released in reverse order of creation however
:meth:`Daemon.run` ends.

Signals: the CLI's handler only calls :meth:`Daemon.stop`, which records
the request and, once the loop runs, asks the loop to return.  It never
raises: an exception thrown into the middle of pyroute2 (which forks helper
processes to work inside a namespace) could leave a namespace made but not
recorded, so never removed.  Set-up instead checks the request at
checkpoints between its steps and stops there with :class:`Terminated`,
inside the ``with`` blocks that undo what was done.  During tear-down a
request changes nothing, so a second Ctrl-C cannot interrupt clean-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field

from pystack import _accel
from pystack.runtime.control import DEFAULT_PATH, ControlServer
from pystack.runtime.loop import Loop, monotonic_us
from pystack.runtime.tapsetup import SetupError, TapSetup

log = logging.getLogger("pystack.runtime")


class Terminated(BaseException):
    """A stop request (signal) arrived while the daemon was still being set up."""


def default_mac(ip: str) -> bytes:
    """02:50:<our IPv4 address>: locally administered unicast (IEEE 802 U/L bit), one per
    address, and the same on every run, so captures of two runs compare byte for byte."""
    from pystack.wire.ipv4 import ip_from_str

    return bytes((0x02, 0x50)) + ip_from_str(ip).to_bytes(4, "big")


@dataclass
class DaemonConfig:
    """What ``pystack up`` was asked for (validated by the CLI, and again by the pieces)."""

    ip: tuple[str, int] = ("10.77.0.2", 24)
    tap: str = "pst0"
    netns: str | None = None
    host_ip: tuple[str, int] | None = None
    gateway: str | None = None
    mtu: int | None = None
    mac: bytes | None = None
    pcap: str | None = None
    impair: str | None = None
    trace: bool = False
    udp_echo: list[int] = field(default_factory=list)
    tcp_echo: list[int] = field(default_factory=list)
    tcp_discard: list[int] = field(default_factory=list)
    #: (port, file, size): a file's bytes, or ``size`` bytes of RFC 864's pattern, or (both None)
    #: that pattern until the client closes.
    tcp_source: list[tuple[int, str | None, int | None]] = field(default_factory=list)
    #: (port, directory or None): one file per connection in the directory, or hash-only.
    tcp_sink: list[tuple[int, str | None]] = field(default_factory=list)
    #: (port, directory or None): HTTP/1.1 GET/HEAD of the files there (None: the current directory).
    http: list[tuple[int, str | None]] = field(default_factory=list)
    #: TCP's MSL in µs (TIME-WAIT lasts 2*MSL, RFC 9293 §3.6.1); None: TcpConfig's default (30 s).
    tcp_msl: int | None = None
    #: TCP's minimum RTO in µs (RFC 6298 §2.4); None: TcpConfig's default (200 ms).
    tcp_min_rto: int | None = None
    #: The control socket's path; None: no control socket (the client commands).
    control: str | None = DEFAULT_PATH
    batch: int = 64

    def service_names(self) -> list[str]:
        return ([f"udp-echo:{p}" for p in self.udp_echo] + [f"tcp-echo:{p}" for p in self.tcp_echo]
                + [f"tcp-discard:{p}" for p in self.tcp_discard]
                + [f"tcp-source:{p}" for p, _, _ in self.tcp_source]
                + [f"tcp-sink:{p}" for p, _ in self.tcp_sink] + [f"tcp-http:{p}" for p, _ in self.http])


class Daemon:
    def __init__(self, config: DaemonConfig, make_services=None) -> None:
        """``make_services(daemon)``, when given, returns more services once the interface
        exists (``daemon.iface``); they are polled and closed like the configured ones."""
        self.config = config
        self._make_services = make_services
        self.loop: Loop | None = None
        self.iface = None
        self.device = None
        self.setup: TapSetup | None = None
        self.faults = None
        self.pcap = None
        self.switch = None
        self.services: list = []
        self._phase = "setup"  # -> "running" -> "teardown"
        self._stop_requested = False
        self._started_at = 0

    @property
    def phase(self) -> str:
        """"setup", "running" or "teardown"."""
        return self._phase

    def stop(self) -> None:
        """Ask the daemon to stop; safe from any thread and from a signal handler.

        During set-up this records the request, and :meth:`run` raises
        :class:`Terminated` at its next checkpoint; once the loop runs, the
        loop returns after its current iteration.
        """
        self._stop_requested = True
        loop = self.loop
        if loop is not None:
            loop.stop()  # before run() this makes run() return at once

    def _checkpoint(self) -> None:
        if self._stop_requested:
            raise Terminated()

    def run(self, on_ready=None) -> None:
        """Set everything up, call ``on_ready(self)``, run until :meth:`stop`, tear down."""
        from pystack.iface.interface import Interface, InterfaceConfig
        from pystack.phy.fault_injector import parse_impairment
        from pystack.runtime.stack import build_device_chain
        from pystack.wire.ipv4 import ip_from_str

        cfg = self.config
        from pystack.transport.tcp.layer import TcpConfig

        faults = parse_impairment(cfg.impair) if cfg.impair else None  # ValueError before any set-up
        tcp_options = {k: v for k, v in (("msl", cfg.tcp_msl), ("min_rto", cfg.tcp_min_rto)) if v is not None}
        tcp_config = TcpConfig(**tcp_options) if tcp_options else None  # ValueError too
        clock = monotonic_us
        try:
            with TapSetup(cfg.tap, netns=cfg.netns, host_ip=cfg.host_ip, mtu=cfg.mtu,
                          batch=cfg.batch) as setup:
                self.setup = setup
                device = setup.device
                try:
                    self._checkpoint()
                    # The same chain as a pystack.Stack's (pcap, tracer, faults), shared code.
                    chain = build_device_chain(device, pcap=cfg.pcap, trace=cfg.trace, faults=faults, clock=clock)
                    device, self.pcap, self.faults = chain.device, chain.pcap, chain.faults
                    address, prefix = cfg.ip
                    iface_config = InterfaceConfig(
                        mac=cfg.mac or default_mac(address), ip=ip_from_str(address), prefix_len=prefix,
                        gateway=ip_from_str(cfg.gateway) if cfg.gateway else None, mtu=setup.mtu)
                    if cfg.control is not None:  # no control socket, nobody can attach: no switch
                        from pystack.runtime.switch import Switch

                        device = self.switch = Switch(device, iface_config.mac)
                    self.device = device
                    self.iface = Interface(iface_config, tcp_config=tcp_config)
                    self.services = [self._udp_echo(port) for port in cfg.udp_echo]
                    self.services += self._tcp_services()
                    if self._make_services is not None:
                        self.services += list(self._make_services(self))
                    self._checkpoint()
                    with Loop(device, self.iface, services=self.services, clock=clock) as loop:
                        self.loop = loop
                        control = contextlib.nullcontext()
                        if cfg.control is not None:
                            self.switch.bind_loop(loop)
                            control = ControlServer(cfg.control, loop, {"status": self.status},
                                                    {"attach": self._attacher(iface_config, setup)})
                        with control:
                            self._started_at = clock()
                            log.info("pystack up: %s/%d mac %s on %s%s, mtu %d; control %s%s",
                                     address, prefix, iface_config.mac.hex(":"), cfg.tap,
                                     f" in namespace {cfg.netns}" if cfg.netns else "", setup.mtu,
                                     cfg.control, "".join(f"; {n}" for n in cfg.service_names()))
                            if on_ready is not None:
                                on_ready(self)
                            self._phase = "running"
                            self._checkpoint()
                            loop.run()
                            self._phase = "teardown"
                            log.info("pystack stopping")
                finally:
                    self._phase = "teardown"
                    for svc in self.services:
                        close = getattr(svc, "close", None)
                        if close is not None:
                            try:
                                close()  # sink files are closed; the logs get their last records
                            except Exception:
                                log.exception("closing service %r failed", svc)
                    if device is not setup.device:
                        device.close()  # the wrappers (flushes the pcap); closes the TAP too
        finally:
            self._phase = "teardown"

    def _attacher(self, iface_config, setup):
        from pystack.runtime.switch import Attacher
        from pystack.wire.ipv4 import ip_from_str

        host_ip = self.config.host_ip
        return Attacher(self.switch, ip=iface_config.ip, prefix_len=iface_config.prefix_len, mtu=setup.mtu,
                        gateway=iface_config.gateway,
                        reserved_ips=[ip_from_str(host_ip[0])] if host_ip else (),
                        reserved_macs=[setup.kernel_mac])

    def _udp_echo(self, port: int):
        from pystack.services.udp_echo import UdpEchoService

        sock = self.iface.udp.socket()
        sock.bind(("", port))
        return UdpEchoService(sock)

    def _tcp_services(self) -> list:
        """The TCP services of the configuration, each on a listening socket of its port."""
        from pystack.services import tcp

        cfg = self.config
        layer = self.iface.tcp
        out: list = []
        try:
            for port in cfg.tcp_echo:
                out.append(tcp.TcpEchoService(tcp.listen(layer, port)))
            for port in cfg.tcp_discard:
                out.append(tcp.TcpDiscardService(tcp.listen(layer, port)))
            for port, path, size in cfg.tcp_source:
                lst = tcp.listen(layer, port)
                try:
                    out.append(tcp.TcpSourceService(lst, path=path, size=size))
                except OSError as exc:
                    lst.close()
                    raise SetupError(f"--tcp-source {port}: cannot read {path}: {exc.strerror or exc}") from None
            for port, directory in cfg.tcp_sink:
                lst = tcp.listen(layer, port)
                try:
                    out.append(tcp.TcpSinkService(lst, directory=directory))
                except OSError as exc:
                    lst.close()
                    raise SetupError(f"--tcp-sink {port}: cannot write in {directory}: "
                                     f"{exc.strerror or exc}") from None
            for port, directory in cfg.http:
                from pystack.services.http import HttpService

                lst = tcp.listen(layer, port)
                try:
                    out.append(HttpService(lst, directory=directory))
                except OSError as exc:
                    lst.close()
                    raise SetupError(f"--http {port}: cannot serve {directory or os.getcwd()}: "
                                     f"{exc.strerror or exc}") from None
        except OSError as exc:  # EADDRINUSE: the same port twice
            raise SetupError(f"TCP service: {exc.strerror or exc}") from None
        return out

    def status(self) -> dict:
        """The control socket's ``status``: the interface's status plus the runtime's own counters."""
        cfg = self.config
        st = dict(self.iface.status())
        loop = self.loop
        st["daemon"] = {
            "pid": os.getpid(),
            "tap": cfg.tap,
            "netns": cfg.netns,
            "created_tap": self.setup.created_tap if self.setup else None,
            "created_netns": self.setup.created_netns if self.setup else None,
            "uptime_s": round((loop.clock() - self._started_at) / 1e6, 3) if loop else 0,
            "implementation": _accel.IMPLEMENTATION,
            "control": cfg.control,
            "services": cfg.service_names(),
        }
        st["services"] = [svc.status() for svc in self.services if hasattr(svc, "status")]
        inner = self.setup.device if self.setup else None
        st["device"] = {
            "name": cfg.tap,
            "mtu": self.setup.mtu if self.setup else None,
            "batch": getattr(inner, "batch", None),
            "truncated": getattr(inner, "truncated", 0),
            "pcap": cfg.pcap,
            "pcap_records": self.pcap.pcap.records if self.pcap is not None else None,
        }
        st["faults"] = self.faults.status() if self.faults is not None else None
        st["runtime"] = {**loop.stats, "tx_backlog": loop.backlog} if loop else {}
        st["switch"] = self.switch.status() if self.switch is not None else None
        return st
