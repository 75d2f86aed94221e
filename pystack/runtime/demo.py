"""``pystack demo``: the README's main job -- a file through pystack TCP each way, beside the kernel.

Owns the demo's orchestration and its clean-up, nothing of the stack:

1. checks what it needs (root, ``/dev/net/tun``, ``nc`` from netcat-openbsd,
   ``nsenter``) and installs the missing Debian packages with ``apt-get``
   when run as root on Debian (as ``ci/common.sh`` does), else says exactly
   what is missing and how to get it;
2. writes a random file (10 MiB by default) in a temporary directory;
3. starts ``pystack up`` as a *subprocess* in a namespace of its own (the
   daemon makes the namespace and the TAP through pyroute2), with a TCP
   sink (hash only) and a TCP source of that file;
4. moves the file with ``nc`` kernel -> pystack (into the sink) and pystack
   -> kernel (the source into ``nc``), and checks SHA-256 both ways -- the
   sink's digest is read from the daemon's ``status`` (control socket);
5. moves the same file with the kernel's own TCP over a veth pair between
   two namespaces it makes (MTU 1500, TSO/GSO/GRO and checksum offloads off
   through pyroute2's ethtool, so the kernel moves real 1500-byte frames as
   pystack must), ``nc`` at both ends;
6. prints one line per direction: size, seconds, MB/s (1 MB = 10**6 bytes),
   the kernel's figure, the ratio, and whether SHA-256 matched.

Every transfer is timed the same way: from starting the sending ``nc`` to
the receiving end having everything (process start-up included on both
sides, so the ratio is fair).

Decision -- the daemon as a subprocess, not a thread: it is the daemon
exactly as users run it (``pystack up``), with its own signal handling and
its own clean-up of the namespace and TAP it made; it does not share this
process's GIL with the demo's hashing and bookkeeping; and the demo's main
thread stays free to react to SIGINT/SIGTERM.  It runs in a session of its
own (a terminal's Ctrl-C reaches the demo, which then stops the daemon with
SIGTERM and waits for it, so clean-up happens in order) and gets SIGTERM if
the demo dies (``PR_SET_PDEATHSIG``).

Clean-up: every name (namespaces, TAP, temporary directory) is chosen before
anything is made, so the ``finally`` removes them by name whether or not
the step that made them finished; SIGTERM is turned into KeyboardInterrupt
like SIGINT; during clean-up both signals are ignored so a second Ctrl-C
cannot leave anything behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from pystack.runtime.procs import kernel_listening, stop, wait_until

STACK_IP, HOST_IP = "10.77.0.2", "10.77.0.1"
VETH_A, VETH_B = "10.78.0.1", "10.78.0.2"
SINK_PORT, SOURCE_PORT, VETH_PORT = 5001, 5002, 5003
MiB = 1 << 20
START_S = 20.0
XFER_S = 300.0
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

#: Debian package of each tool the demo runs.
PACKAGES = {"nc": "netcat-openbsd", "nsenter": "util-linux"}


class DemoError(Exception):
    """A need not met or a step failed: one line for the user."""


def _wait(cond, timeout: float, what: str):
    """Poll ``cond`` (no event exists for these conditions) as a DemoError-raising wait."""
    return wait_until(cond, timeout, what, error=DemoError)


def say(text: str) -> None:
    print(f"pystack demo: {text}", flush=True)


# -- needs -------------------------------------------------------------------------------------------

def _nc_is_openbsd() -> bool:
    path = shutil.which("nc")
    if path is None:
        return False
    out = subprocess.run([path, "-h"], capture_output=True, text=True, timeout=10)
    return "OpenBSD netcat" in (out.stdout + out.stderr)


def missing_tools() -> list[str]:
    """The Debian packages of the tools that are missing (netcat must be OpenBSD's: ``-N``)."""
    out = []
    if not _nc_is_openbsd():
        out.append(PACKAGES["nc"])
    if shutil.which("nsenter") is None:
        out.append(PACKAGES["nsenter"])
    return out


def check_needs(install: bool = True) -> None:
    """Raise DemoError saying what is missing and how to get it; install packages when we can."""
    if os.geteuid() != 0:
        raise DemoError("needs root (it creates network namespaces and a TAP device): "
                        "run `sudo bash ci/demo.sh` or `sudo .venv/bin/pystack demo`")
    if not os.path.exists("/dev/net/tun"):
        raise DemoError("/dev/net/tun is missing: load the tun module (`modprobe tun`), or in a "
                        "container run with --device /dev/net/tun --cap-add NET_ADMIN")
    missing = missing_tools()
    if not missing:
        return
    apt = shutil.which("apt-get")
    if install and apt is not None and os.path.exists("/etc/debian_version"):
        say(f"installing Debian packages: {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([apt, "update", "-qq"], env=env, check=False, timeout=600)
        res = subprocess.run([apt, "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                             check=False, timeout=600)
        if res.returncode == 0 and not missing_tools():
            return
    raise DemoError(f"missing: {', '.join(missing)} -- install with `apt-get install {' '.join(missing)}` "
                    "(Debian/Ubuntu), or run `bash ci/demo.sh`, which installs everything")


# -- helpers -------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: SIGTERM when the demo dies (prctl PR_SET_PDEATHSIG = 1)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def random_file(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, MiB))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def _offloads_off(netns: str, ifname: str) -> None:
    """TSO, GSO, GRO, scatter-gather and checksum offloads off on ``ifname`` (pyroute2 ethtool)."""
    from pyroute2 import netns as pnetns
    from pyroute2.ethtool import Ethtool

    def wanted(name: str) -> bool:
        return any(w in name for w in ("segmentation", "checksum", "receive-offload", "gro", "scatter-gather"))

    pnetns.pushns(netns)
    try:
        eth = Ethtool()
        try:
            feats = eth.get_features(ifname)
            for name, feat in feats.features.items():
                if feat.enable and wanted(name):
                    feat.enable = False
            eth.set_features(ifname, feats)
        finally:
            eth.close()
    finally:
        pnetns.popns()


def _remove_netns(name: str) -> None:
    if os.path.exists(f"/run/netns/{name}"):
        from pyroute2 import netns as pnetns

        with contextlib.suppress(OSError):
            pnetns.remove(name)


def _rate(size: int, secs: float) -> float:
    return size / secs / 1e6 if secs > 0 else float("inf")


# -- the demo ------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, size: int = 10 * MiB) -> None:
        tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.size = size
        self.netns = f"pst-demo-{tag}"
        self.veth_ns = (f"pst-demo-{tag}-a", f"pst-demo-{tag}-b")
        self.tap = f"pdemo{secrets.token_hex(2)}"
        self.veth = (f"vda{secrets.token_hex(2)}", f"vdb{secrets.token_hex(2)}")
        self.tmp: str | None = None
        self.procs: list[subprocess.Popen] = []
        self.daemon: subprocess.Popen | None = None

    # processes

    def _popen(self, netns: str, args: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", *args], preexec_fn=_die_with_parent, **kw)
        self.procs.append(proc)
        return proc

    def _finish(self, proc: subprocess.Popen, what: str) -> None:
        try:
            code = proc.wait(timeout=XFER_S)
        except subprocess.TimeoutExpired:
            raise DemoError(f"{what} did not finish within {XFER_S:g} s") from None
        if code != 0:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise DemoError(f"{what} failed (exit {code}){': ' + err if err else ''}")

    # steps

    def start_daemon(self, source: str) -> str:
        from pystack.runtime.control import ControlError, request

        control = os.path.join(self.tmp, "control.sock")
        log = open(os.path.join(self.tmp, "daemon.log"), "wb")  # noqa: SIM115
        with log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "pystack", "up", "--netns", self.netns, "--tap", self.tap,
                 "--ip", f"{STACK_IP}/24", "--host-ip", f"{HOST_IP}/24", "--control", control,
                 "--tcp-sink", str(SINK_PORT), "--tcp-source", f"{SOURCE_PORT}:{source}",
                 "--log-level", "warning"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent)

        def ready():
            if self.daemon.poll() is not None:
                raise DemoError(f"pystack up exited with {self.daemon.returncode}: {self._daemon_log()}")
            if not os.path.exists(control):
                return False
            try:
                request(control, timeout=1.0)
            except ControlError:
                return False
            return True

        _wait(ready, START_S, "pystack up to answer on its control socket")
        return control

    def _daemon_log(self) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.tmp, "daemon.log"), "rb") as f:
            return f.read().decode(errors="replace").strip()[-2000:]
        return ""

    def kernel_to_pystack(self, path: str, control: str) -> tuple[float, str]:
        from pystack.runtime.control import request

        def sink(st):
            return next(s for s in st["services"] if s["service"] == f"tcp-sink:{SINK_PORT}")

        t0 = time.monotonic()
        with open(path, "rb") as f:
            proc = self._popen(self.netns, ["nc", "-N", STACK_IP, str(SINK_PORT)], stdin=f,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._finish(proc, "nc into the pystack sink")
        st = _wait(lambda: (s := request(control)) and sink(s)["completed"] + sink(s)["failed"] and s,
                   30, "the pystack sink to finish")
        secs = time.monotonic() - t0
        rec = sink(st)["recent"][-1]
        if rec["error"] is not None:
            raise DemoError(f"the pystack sink failed: {rec['error']}")
        return secs, rec["sha256"] if rec["bytes_in"] == self.size else "size mismatch"

    def pystack_to_kernel(self) -> tuple[float, str]:
        out = os.path.join(self.tmp, "from-pystack.bin")
        t0 = time.monotonic()
        with open(out, "wb") as f:
            proc = self._popen(self.netns, ["nc", STACK_IP, str(SOURCE_PORT)], stdin=subprocess.DEVNULL,
                               stdout=f, stderr=subprocess.PIPE)
        self._finish(proc, "nc from the pystack source")
        secs = time.monotonic() - t0
        return secs, sha256_file(out)

    def make_veth(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2 import netns as pnetns

        a, b = self.veth_ns
        for name in (a, b):
            pnetns.create(name)
        va, vb = self.veth
        with IPRoute(netns=a) as ipr:
            # Made inside A with its peer placed straight into B: never in the root namespace.
            ipr.link("add", ifname=va, kind="veth", peer={"ifname": vb, "net_ns_fd": b})
        for ns, ifname, addr in ((a, va, VETH_A), (b, vb, VETH_B)):
            with IPRoute(netns=ns) as ipr:
                (index,) = ipr.link_lookup(ifname=ifname)
                ipr.link("set", index=index, mtu=1500)
                ipr.addr("add", index=index, address=addr, prefixlen=24)
                ipr.link("set", index=index, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            _offloads_off(ns, ifname)

    def kernel_over_veth(self, path: str) -> tuple[float, str]:
        a, b = self.veth_ns
        out = os.path.join(self.tmp, "over-veth.bin")
        with open(out, "wb") as f:
            listener = self._popen(b, ["nc", "-l", str(VETH_PORT)], stdin=subprocess.DEVNULL, stdout=f,
                                   stderr=subprocess.PIPE)
        _wait(lambda: listener.poll() is not None or kernel_listening(b, VETH_PORT), 10, "nc -l to listen")
        t0 = time.monotonic()
        with open(path, "rb") as f:
            sender = self._popen(a, ["nc", "-N", VETH_B, str(VETH_PORT)], stdin=f, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        self._finish(sender, "nc over the veth pair")
        self._finish(listener, "nc -l over the veth pair")
        secs = time.monotonic() - t0
        return secs, sha256_file(out)

    def run(self) -> int:
        self.tmp = tempfile.mkdtemp(prefix="pystack-demo-")
        mib = self.size / MiB
        src = os.path.join(self.tmp, "random.bin")
        digest = random_file(src, self.size)
        control = self.start_daemon(src)
        say(f"started: pystack {STACK_IP} on TAP {self.tap} in namespace {self.netns} (kernel side {HOST_IP}); "
            f"veth namespaces {self.veth_ns[0]} {self.veth_ns[1]}; moving {mib:.1f} MiB each way")
        k2p_s, k2p_sha = self.kernel_to_pystack(src, control)
        p2k_s, p2k_sha = self.pystack_to_kernel()
        self.make_veth()
        veth_s, veth_sha = self.kernel_over_veth(src)
        kernel = _rate(self.size, veth_s)
        ok = True
        for label, secs, sha in (("kernel -> pystack", k2p_s, k2p_sha), ("pystack -> kernel", p2k_s, p2k_sha)):
            rate = _rate(self.size, secs)
            good = sha == digest
            ok = ok and good
            print(f"{label}: {mib:.1f} MiB in {secs:.2f} s, {rate:.0f} MB/s (kernel over veth: {kernel:.0f} MB/s, "
                  f"ratio {rate / kernel:.2f}), SHA-256 {'ok' if good else 'MISMATCH'}", flush=True)
        if veth_sha != digest:
            say("warning: the kernel's own transfer over the veth pair did not match (its figure is suspect)")
        return EXIT_OK if ok else EXIT_FAILED

    def cleanup(self) -> None:
        """Remove everything by name, whatever happened; idempotent."""
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                stop(proc)
        if self.daemon is not None:
            with contextlib.suppress(Exception):
                stop(self.daemon)  # it removes its TAP and namespace itself
        for name in (self.netns, *self.veth_ns):
            _remove_netns(name)  # the veth pair goes with its namespaces
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


_PID = os.getpid()


def _terminate(signum, frame):
    if os.getpid() != _PID:
        # A child pyroute2 forked to work inside a namespace inherits this handler and
        # is stopped with SIGTERM: it must just go, never unwind the demo's stack.
        os._exit(128 + signum)
    raise KeyboardInterrupt


def main(size: int = 10 * MiB, install: bool = True) -> int:
    """Run the demo; returns the exit status (0 only when both SHA-256 match)."""
    global _PID
    _PID = os.getpid()
    previous = signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must always clean up, even when started with SIGINT ignored (a background job
    # of a non-interactive shell inherits SIG_IGN, and Python then keeps it).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    demo = None
    try:
        check_needs(install=install)
        demo = Demo(size)
        return demo.run()
    except DemoError as exc:
        print(f"pystack demo: error: {exc}", file=sys.stderr, flush=True)
        if demo is not None and demo.daemon is not None and demo.tmp is not None:
            log = demo._daemon_log()
            if log:
                print(f"pystack demo: the daemon's log:\n{log}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("pystack demo: interrupted; cleaning up", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if demo is not None:
                demo.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
