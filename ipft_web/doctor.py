"""Can this machine trace packets? One clear line per problem, with the command that fixes it.

`check()` returns a list of `(level, message)` with level `"ok"`, `"warn"` (works, with less) or
`"error"` (tracing will fail until fixed). `main()` prints them (`ipft --doctor`) and exits 1 when
there is an error. Every probe of the machine goes through a `Host` so tests can point it at a fake
root file system; nothing here needs root or changes anything.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

OK, WARN, ERROR = "ok", "warn", "error"

# Capability bits (linux/capability.h): BPF programs need CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN.
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39

_DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "ppc64le": "ppc64el",
             "s390x": "s390x", "riscv64": "riscv64", "i686": "i386"}


@dataclass
class Host:
    """The machine as doctor sees it. `root` prefixes every path (tests use a temporary tree)."""
    root: Path = Path("/")
    release: str = field(default_factory=platform.release)
    machine: str = field(default_factory=platform.machine)
    euid: int = field(default_factory=os.geteuid)
    prefix: str = sys.prefix
    env: dict = field(default_factory=lambda: dict(os.environ))
    in_venv: bool = sys.prefix != sys.base_prefix

    def p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read(self, path: str, limit: int = 65536) -> str | None:
        try:
            with open(self.p(path), "r", errors="replace") as f:
                return f.read(limit)
        except OSError:
            return None

    def os_release(self) -> dict[str, str]:
        info = {}
        text = self.read("/etc/os-release") or self.read("/usr/lib/os-release") or ""
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip()] = value.strip().strip('"').strip("'")
        return info

    def which(self, name: str) -> str | None:
        path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
        return shutil.which(name, path=path)

    def import_bcc(self):
        """(module, None) or (None, reason)."""
        try:
            import bcc
        except Exception as exc:  # ImportError, or OSError from a broken libbcc
            return None, f"{type(exc).__name__}: {exc}"
        if not hasattr(bcc, "BPF"):
            return None, f"the module 'bcc' at {getattr(bcc, '__file__', '?')} is not BCC (PyPI's 'bcc' is unrelated)"
        return bcc, None


def package_family(host: Host) -> str:
    """"apt", "dnf" or "" from /etc/os-release."""
    info = host.os_release()
    ids = {info.get("ID", "")} | set(info.get("ID_LIKE", "").split())
    if ids & {"debian", "ubuntu"}:
        return "apt"
    if ids & {"fedora", "rhel", "centos", "rocky", "almalinux", "amzn"}:
        return "dnf"
    return ""


def _is_ubuntu(host: Host) -> bool:
    return host.os_release().get("ID") == "ubuntu"


def bcc_install_line(host: Host) -> str:
    fam = package_family(host)
    if fam == "dnf":
        return "sudo dnf install python3-bcc"
    if fam == "apt":
        return "sudo apt install python3-bpfcc"
    return "install BCC's Python module from your distribution (Debian/Ubuntu: python3-bpfcc, Fedora: python3-bcc)"


def headers_install_line(host: Host) -> str:
    fam = package_family(host)
    if fam == "dnf":
        return f"sudo dnf install kernel-devel-{host.release}"
    if fam == "apt":
        if _is_ubuntu(host):
            return f"sudo apt install linux-headers-{host.release} (or linux-headers-generic)"
        arch = _DEB_ARCH.get(host.machine, host.machine)
        return f"sudo apt install linux-headers-{arch}"
    return "install your distribution's kernel headers package (any kernel version will do)"


def _system_bcc_dir(host: Host) -> Path | None:
    """BCC installed for the system Python but invisible here (a venv without --system-site-packages)."""
    for base in ("/usr/lib/python3/dist-packages",
                 f"/usr/lib/python3.{sys.version_info.minor}/site-packages",
                 f"/usr/lib64/python3.{sys.version_info.minor}/site-packages"):
        d = host.p(base) / "bcc"
        if (d / "__init__.py").is_file():
            return d
    return None


def check_bcc(host: Host) -> tuple[str, str]:
    mod, why = host.import_bcc()
    if mod is not None:
        where = os.path.dirname(getattr(mod, "__file__", "") or "") or "?"
        version = getattr(mod, "__version__", "")
        return OK, f"BCC Python module{(' ' + version) if version else ''} ({where})"
    if host.in_venv and _system_bcc_dir(host) is not None:
        return ERROR, (f"BCC is installed for the system Python but this venv ({host.prefix}) cannot see it: "
                       f"recreate it with `/usr/bin/python3 -m venv --system-site-packages {host.prefix}` "
                       f"(or run scripts/install.sh)")
    return ERROR, f"BCC's Python module is not importable ({why}): {bcc_install_line(host)}"


def check_btf(host: Host, vmlinux: str | None = None) -> tuple[str, str]:
    if vmlinux:
        if os.path.isfile(vmlinux):
            return OK, f"type information from --vmlinux {vmlinux}"
        return ERROR, f"--vmlinux {vmlinux}: no such file"
    if host.p("/sys/kernel/btf/vmlinux").is_file():
        return OK, "BTF at /sys/kernel/btf/vmlinux"
    fam = package_family(host)
    pkg = {"apt": f" (e.g. from linux-image-{host.release}-dbg or -dbgsym)",
           "dnf": f" (e.g. from kernel-debuginfo-{host.release})"}.get(fam, "")
    return ERROR, ("no BTF (/sys/kernel/btf/vmlinux is missing: kernel built without CONFIG_DEBUG_INFO_BTF): "
                   f"use --vmlinux PATH with a debuginfo vmlinux{pkg}")


def check_kprobes(host: Host) -> tuple[str, str]:
    if host.p("/sys/bus/event_source/devices/kprobe").exists():
        return OK, "kprobes available"
    return WARN, ("kprobes not available (no /sys/bus/event_source/devices/kprobe): "
                  "the tracepoint backend will be used (skb tracepoints only, fewer steps per packet)")


def find_header_trees(host: Host) -> tuple[Path | None, list[Path]]:
    """(running kernel's own tree or None, other usable trees best first), as the tracer picks them
    (ipft_web.kernel.headers), without building anything."""
    from .kernel import headers

    own = host.p(f"/lib/modules/{host.release}/build")
    src_dirs = tuple(str(host.p(d)) for d in headers.SRC_DIRS)
    others = [build for _release, build, _source in headers.ranked_trees(host.release, src_dirs)]
    return (own if own.is_dir() else None), others


def check_headers(host: Host) -> tuple[str, str]:
    preset = host.env.get("BCC_KERNEL_SOURCE")
    if preset:
        if host.p(preset).is_dir():
            return OK, f"kernel headers from BCC_KERNEL_SOURCE={preset}"
        return ERROR, f"BCC_KERNEL_SOURCE={preset} is not a directory: unset it or fix it"
    own, others = find_header_trees(host)
    if own is not None:
        return OK, f"kernel headers for {host.release} (/lib/modules/{host.release}/build)"
    if others:
        best = Path("/") / others[0].relative_to(host.root)
        return OK, (f"no headers for {host.release}; another kernel's tree will do ({best}): "
                    "struct offsets come from BTF")
    return ERROR, (f"no kernel headers in /lib/modules/{host.release}/build nor under /usr/src (BCC cannot "
                   f"compile without a header tree; any version will do): {headers_install_line(host)}")


def _cap_eff(host: Host) -> int | None:
    status = host.read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return None
    return None


def check_root(host: Host) -> tuple[str, str]:
    if host.euid != 0:
        return ERROR, "not root: loading BPF programs needs root (run with sudo)"
    caps = _cap_eff(host)
    if caps is not None:
        def has(bit):
            return bool(caps >> bit & 1)
        if not (has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))):
            return ERROR, ("root without CAP_SYS_ADMIN (or CAP_BPF + CAP_PERFMON): in a container, "
                           "run it with --privileged")
    return OK, "running as root"


def check_lockdown(host: Host) -> tuple[str, str] | None:
    text = host.read("/sys/kernel/security/lockdown")
    if text and "[confidentiality]" in text:
        return ERROR, ("kernel lockdown is in confidentiality mode (Secure Boot?): BPF may not read kernel memory, "
                       "so packets cannot be followed")
    if text and "[integrity]" in text:
        return WARN, "kernel lockdown (integrity mode) is on: some BPF features may be refused"
    return None


def check_kallsyms(host: Host) -> tuple[str, str] | None:
    text = host.read("/proc/kallsyms", limit=4096)
    if text is None:
        return WARN, "/proc/kallsyms is not readable: drop locations cannot be named"
    first = text.split(None, 1)[0] if text.strip() else ""
    if first and set(first) == {"0"} and host.euid == 0:
        return WARN, ("/proc/kallsyms shows zero addresses (kernel.kptr_restrict=2?): "
                      "drop locations cannot be named; `sysctl kernel.kptr_restrict=1`")
    return None


def check_tracefs(host: Host) -> tuple[str, str] | None:
    if "tracefs" not in (host.read("/proc/filesystems") or "tracefs"):
        return None  # a kernel without ftrace: nothing to mount
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if host.p(d + "/available_filter_functions").exists() or host.p(d + "/events").is_dir():
            return None
    return WARN, ("tracefs is not mounted (/sys/kernel/tracing): the list of traceable functions falls back to "
                  "kallsyms; `mount -t tracefs nodev /sys/kernel/tracing` (container: -v /sys/kernel/tracing:"
                  "/sys/kernel/tracing)")


def check_iptables(host: Host) -> tuple[str, str] | None:
    if host.which("iptables") or host.which("nft"):
        return None
    fam = package_family(host)
    line = {"apt": "sudo apt install iptables", "dnf": "sudo dnf install iptables-nft"}.get(fam, "install iptables")
    return WARN, f"neither iptables nor nft found: the dashboard cannot add mark rules ({line})"


def check(host: Host | None = None, vmlinux: str | None = None) -> list[tuple[str, str]]:
    """Everything that decides whether and how tracing works here, most important first."""
    host = host or Host()
    results = [check_root(host), check_bcc(host), check_btf(host, vmlinux), check_kprobes(host),
               check_headers(host)]
    for extra in (check_lockdown(host), check_tracefs(host), check_kallsyms(host), check_iptables(host)):
        if extra is not None:
            results.append(extra)
    return results


def errors(results: list[tuple[str, str]]) -> list[str]:
    return [msg for level, msg in results if level == ERROR]


def format_report(results: list[tuple[str, str]], host: Host | None = None) -> str:
    host = host or Host()
    distro = host.os_release().get("PRETTY_NAME", "unknown distribution")
    lines = [f"ipft doctor: kernel {host.release} ({host.machine}), {distro}, Python {platform.python_version()}"]
    for level, msg in results:
        lines.append(f"  {level:<5}  {msg}")
    n_err = sum(1 for level, _ in results if level == ERROR)
    n_warn = sum(1 for level, _ in results if level == WARN)
    verdict = "ready to trace" if not n_err else "not ready to trace"
    lines.append(f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}: {verdict}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, vmlinux: str | None = None) -> int:
    """Print the report; exit status 0 when tracing can work, 1 when something must be fixed first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write("usage: ipft --doctor [--vmlinux PATH]\n\n" + (__doc__ or ""))
        return 0
    if "--vmlinux" in argv:
        i = argv.index("--vmlinux")
        vmlinux = argv[i + 1] if i + 1 < len(argv) else vmlinux
    host = Host()
    results = check(host, vmlinux=vmlinux)
    sys.stdout.write(format_report(results, host))
    return 1 if errors(results) else 0


if __name__ == "__main__":
    sys.exit(main())
