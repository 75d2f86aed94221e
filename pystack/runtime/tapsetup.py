"""Putting a TAP device in place for the daemon, through pyroute2 only, and taking it away.

Owns the host side of the link: the network namespace (made by
:class:`~pystack.runtime.netns.NetNamespace` when asked for one that does
not exist), the TAP interface, and the kernel-side configuration of a TAP it
creates (MTU, address, link up).  It never shells out to ``ip``.

What it creates it removes, and only that:

* a TAP it creates is non-persistent: the kernel deletes the interface (and
  its addresses and routes) when the fd closes, so closing the device is the
  clean-up, and a crash cleans up too;
* a namespace it creates is removed after the device is closed (the TAP fd
  holds the namespace alive, so the device goes first);
* an existing TAP is attached to and left exactly as it was -- no MTU,
  address or link-state change (``ip tuntap add dev tap0 mode tap`` plus
  ``pystack up --tap tap0 --ip 10.77.0.2/24`` works); an existing namespace
  is used and not removed.

:meth:`TapSetup.close` is idempotent and runs on ``with`` exit whatever the
exit; the CLI turns SIGINT/SIGTERM/SIGHUP into a normal exit so it runs then
too, and :mod:`pystack.runtime.netns` removes a namespace it made at
interpreter exit as a last resort.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os

from pyroute2 import IPRoute

from pystack.phy.tap import TapDevice, check_ifname  # noqa: F401 (check_ifname: for the CLI)
from pystack.runtime.netns import NetNamespace

log = logging.getLogger("pystack.runtime")

NETNS_DIR = "/run/netns"
_IFF_TAP = 2  # IFLA_TUN_TYPE of a TAP (linux/if_tun.h IFF_TAP)


class SetupError(Exception):
    """The link could not be set up; the message is one line meant for the user."""


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def check_netns_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or len(name) > 255 or "\0" in name:
        raise ValueError(f"invalid network namespace name {name!r}")
    return name


class TapSetup:
    """The TAP ``tap`` (and namespace ``netns``) ready for the daemon, as a context manager.

    ``netns``: None for the caller's namespace, else a namespace name
    (created when missing).  ``host_ip``: ``(address, prefix_len)`` for the
    kernel side of a TAP this creates, or None.  ``mtu``: the MTU to give a
    TAP this creates (default 1500); for an existing TAP, None means "use
    its MTU" and a value must match it.

    After ``__enter__``: ``device`` (a :class:`TapDevice`), ``mtu`` (the
    link's), ``created_tap``, ``created_netns``, ``kernel_mac`` (the TAP's
    own MAC, the kernel side).
    """

    def __init__(self, tap: str = "pst0", *, netns: str | None = None,
                 host_ip: tuple[str, int] | None = None, mtu: int | None = None,
                 batch: int = 64) -> None:
        self.tap = check_ifname(tap)
        self.netns = check_netns_name(netns) if netns is not None else None
        self.host_ip = host_ip
        self.requested_mtu = mtu
        self.batch = batch
        self.mtu: int | None = None
        self.device: TapDevice | None = None
        self.kernel_mac: bytes | None = None
        self.created_tap = False
        self.created_netns = False
        self._ns: NetNamespace | None = None
        self._pid = os.getpid()

    # -- helpers ---------------------------------------------------------------

    def _iproute(self) -> IPRoute:
        return IPRoute(netns=self.netns) if self.netns is not None else IPRoute()

    @contextlib.contextmanager
    def _inside(self):
        if self._ns is None:
            yield
        else:
            with self._ns.entered():
                yield

    def _where(self) -> str:
        return f"namespace {self.netns}" if self.netns else "the current namespace"

    # -- set up / tear down -----------------------------------------------------

    def __enter__(self) -> "TapSetup":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        if self.netns is not None:
            self._ns = NetNamespace(self.netns)
            if not netns_exists(self.netns):
                try:
                    self._ns.__enter__()
                except PermissionError:
                    raise SetupError(f"permission denied creating network namespace {self.netns} "
                                     "(run as root)") from None
                except OSError as exc:
                    raise SetupError(f"cannot create network namespace {self.netns}: "
                                     f"{exc.strerror or exc}") from None
                self.created_netns = True
                log.info("created network namespace %s", self.netns)
            else:
                log.info("using the existing network namespace %s (it stays at exit)", self.netns)
        with self._iproute() as ipr:
            found = ipr.link_lookup(ifname=self.tap)
            if found:
                link = ipr.get_links(found[0])[0]
                self._check_existing(link)
                self.mtu = link.get_attr("IFLA_MTU")
            if self.created_netns:
                lo = ipr.link_lookup(ifname="lo")
                if lo:
                    ipr.link("set", index=lo[0], state="up")
        if found and self.requested_mtu is not None and self.requested_mtu != self.mtu:
            raise SetupError(f"TAP {self.tap} exists with MTU {self.mtu}, not {self.requested_mtu}; "
                             "pystack leaves an existing TAP's configuration alone (omit --mtu)")
        if found and self.host_ip is not None:
            raise SetupError(f"TAP {self.tap} exists; pystack leaves its configuration alone, "
                             "so --host-ip cannot be used with it")
        if not found:
            self.mtu = self.requested_mtu if self.requested_mtu is not None else 1500
        try:
            with self._inside():
                self.device = TapDevice(self.tap, mtu=self.mtu, batch=self.batch)
        except PermissionError:
            raise SetupError(f"permission denied opening TAP {self.tap} (needs root or CAP_NET_ADMIN)") \
                from None
        except FileNotFoundError:
            raise SetupError("/dev/net/tun is missing (load the tun module: modprobe tun)") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise SetupError(f"TAP {self.tap} is in use by another process") from None
            raise SetupError(f"cannot open TAP {self.tap}: {exc.strerror or exc}") from None
        self.created_tap = not found
        with self._iproute() as ipr:
            index = ipr.link_lookup(ifname=self.tap)[0]
            if self.created_tap:
                ipr.link("set", index=index, mtu=self.mtu)
                if self.host_ip is not None:
                    address, prefix = self.host_ip
                    ipr.addr("add", index=index, address=address, prefixlen=prefix)
                ipr.link("set", index=index, state="up")
            mac = ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
            self.kernel_mac = bytes.fromhex(mac.replace(":", "")) if mac else None
        log.info("%s TAP %s in %s (mtu %d%s)", "created" if self.created_tap else "attached to",
                 self.tap, self._where(), self.mtu,
                 f", host side {self.host_ip[0]}/{self.host_ip[1]}" if self.created_tap and self.host_ip
                 else "")

    def _check_existing(self, link) -> None:
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        tun_type = data.get_attr("IFLA_TUN_TYPE") if data is not None and hasattr(data, "get_attr") else None
        if kind != "tun" or (tun_type is not None and tun_type != _IFF_TAP):
            what = ("TUN device" if kind == "tun" else f"{kind} device" if kind
                    else "physical or loopback device")
            raise SetupError(f"{self.tap} already exists in {self._where()} and is a {what}, not a TAP")

    def close(self) -> None:
        """Close the device, then remove the namespace if this created it.  Idempotent.

        Does nothing in a forked child (pyroute2 forks to work inside a
        namespace): only the process that set things up takes them down.
        """
        if os.getpid() != self._pid:
            return
        device, self.device = self.device, None
        try:
            if device is not None:
                device.close()
                if self.created_tap:
                    log.info("removed TAP %s", self.tap)
        finally:
            ns, self._ns = self._ns, None
            if ns is not None and self.created_netns:
                ns.close()
                log.info("removed network namespace %s", self.netns)

    def __exit__(self, *exc) -> None:
        self.close()
