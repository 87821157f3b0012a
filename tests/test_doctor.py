"""ipft_web.doctor against fake root file systems (and once against this machine)."""
import shutil
import sys
import types
from pathlib import Path

import pytest

from ipft_web import doctor
from ipft_web.doctor import ERROR, OK, WARN, Host

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
UBUNTU = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\n'
FEDORA = 'PRETTY_NAME="Fedora Linux 40"\nID=fedora\n'
ROCKY = 'ID="rocky"\nID_LIKE="rhel centos fedora"\n'
ALL_CAPS = "Name:\tpython3\nCapEff:\t000001ffffffffff\n"


class FakeHost(Host):
    bcc_ok = True

    def import_bcc(self):
        if self.bcc_ok:
            class Mod:
                __file__ = "/usr/lib/python3/dist-packages/bcc/__init__.py"
                __version__ = "0.26.0"
                BPF = object
            return Mod, None
        return None, "ModuleNotFoundError: No module named 'bcc'"

    def which(self, name):
        return "/usr/sbin/iptables" if name == "iptables" and self.iptables else None

    iptables = True


def write(root: Path, rel: str, text: str = "") -> Path:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def good_machine(root: Path, os_release=DEBIAN, release="6.1.0-26-amd64") -> FakeHost:
    write(root, "/etc/os-release", os_release)
    write(root, "/sys/kernel/btf/vmlinux", "BTF")
    (root / "sys/bus/event_source/devices/kprobe").mkdir(parents=True)
    (root / f"lib/modules/{release}/build/include").mkdir(parents=True)
    write(root, f"/lib/modules/{release}/build/Makefile")
    write(root, "/sys/kernel/tracing/available_filter_functions", "ip_rcv\n")
    write(root, "/proc/self/status", ALL_CAPS)
    write(root, "/proc/kallsyms", "ffffffff81000000 T _stext\n")
    write(root, "/proc/filesystems", "nodev\ttracefs\n")
    return FakeHost(root=root, release=release, machine="x86_64", euid=0, prefix="/opt/ipft-web/venv",
                    in_venv=True, env={})


def no_own_headers(root: Path, release="6.1.0-26-amd64"):
    shutil.rmtree(root / f"lib/modules/{release}/build")


def debian_tree(root: Path, version: str):
    """A split Debian header tree: flavour half (Makefile, generated) + -common half."""
    flavour = root / f"usr/src/linux-headers-{version}-amd64"
    common = root / f"usr/src/linux-headers-{version}-common"
    (flavour / "include/generated").mkdir(parents=True)
    (common / "include/linux").mkdir(parents=True)
    write(root, str(flavour / "Makefile").removeprefix(str(root)), f"include {common}/Makefile\n")
    write(root, str(common / "Makefile").removeprefix(str(root)), "# kernel\n")
    return flavour


def levels(results):
    return [level for level, _ in results]


def find(results, word):
    hits = [(level, msg) for level, msg in results if word in msg]
    assert hits, f"no message with {word!r} in {results}"
    return hits[0]


def test_everything_present(tmp_path):
    host = good_machine(tmp_path)
    results = doctor.check(host)
    assert set(levels(results)) == {OK}, results
    assert doctor.errors(results) == []
    report = doctor.format_report(results, host)
    assert "0 errors, 0 warnings: ready to trace" in report
    assert "Debian GNU/Linux 12" in report


def test_not_root(tmp_path):
    host = good_machine(tmp_path)
    host.euid = 1000
    level, msg = find(doctor.check(host), "root")
    assert level == ERROR and "sudo" in msg


def test_root_without_capabilities_is_an_unprivileged_container(tmp_path):
    host = good_machine(tmp_path)
    write(tmp_path, "/proc/self/status", "CapEff:\t00000000a80425fb\n")  # docker's default set
    level, msg = find(doctor.check(host), "CAP_SYS_ADMIN")
    assert level == ERROR and "--privileged" in msg


def test_cap_bpf_and_perfmon_are_enough(tmp_path):
    host = good_machine(tmp_path)
    write(tmp_path, "/proc/self/status", f"CapEff:\t{(1 << 39) | (1 << 38):016x}\n")
    assert doctor.check_root(host)[0] == OK


@pytest.mark.parametrize("os_release,line", [(DEBIAN, "apt install python3-bpfcc"),
                                             (UBUNTU, "apt install python3-bpfcc"),
                                             (FEDORA, "dnf install python3-bcc"),
                                             (ROCKY, "dnf install python3-bcc")])
def test_bcc_missing_names_the_package(tmp_path, os_release, line):
    host = good_machine(tmp_path, os_release)
    host.bcc_ok = False
    host.in_venv = False
    level, msg = find(doctor.check(host), "BCC")
    assert level == ERROR and line in msg and "No module named" in msg


def test_bcc_hidden_by_a_venv_without_system_site_packages(tmp_path):
    host = good_machine(tmp_path)
    host.bcc_ok = False
    write(tmp_path, "/usr/lib/python3/dist-packages/bcc/__init__.py")
    level, msg = find(doctor.check(host), "BCC")
    assert level == ERROR and "--system-site-packages /opt/ipft-web/venv" in msg


def test_pypi_bcc_is_not_bcc(monkeypatch):
    impostor = types.ModuleType("bcc")
    impostor.__file__ = "/venv/lib/python3.11/site-packages/bcc/__init__.py"
    monkeypatch.setitem(sys.modules, "bcc", impostor)
    mod, why = Host().import_bcc()
    assert mod is None and "PyPI" in why


def test_btf_missing_points_to_vmlinux(tmp_path):
    host = good_machine(tmp_path)
    (tmp_path / "sys/kernel/btf/vmlinux").unlink()
    level, msg = find(doctor.check(host), "BTF")
    assert level == ERROR and "--vmlinux" in msg and "linux-image-6.1.0-26-amd64-dbg" in msg
    vmlinux = write(tmp_path, "/usr/lib/debug/boot/vmlinux-6.1.0-26-amd64", "ELF")
    assert doctor.check_btf(host, vmlinux=str(vmlinux))[0] == OK
    assert doctor.check_btf(host, vmlinux=str(tmp_path / "nope"))[0] == ERROR


def test_no_kprobes_means_tracepoint_backend(tmp_path):
    host = good_machine(tmp_path)
    (tmp_path / "sys/bus/event_source/devices/kprobe").rmdir()
    results = doctor.check(host)
    level, msg = find(results, "kprobes")
    assert level == WARN and "tracepoint backend will be used" in msg
    assert doctor.errors(results) == []


def test_other_kernels_headers_are_fine(tmp_path):
    host = good_machine(tmp_path)
    no_own_headers(tmp_path)
    debian_tree(tmp_path, "6.1.0-56")
    debian_tree(tmp_path, "6.12.9")
    (tmp_path / "usr/src/linux-kbuild-6.12").mkdir(parents=True)  # not a tree
    level, msg = doctor.check_headers(host)
    assert level == OK and "BTF" in msg
    assert "/usr/src/linux-headers-6.1.0-56-amd64" in msg  # the nearest version to 6.1.0-26, as the tracer picks


def test_a_common_half_alone_is_not_a_tree(tmp_path):
    host = good_machine(tmp_path)
    no_own_headers(tmp_path)
    (tmp_path / "usr/src/linux-headers-6.1.0-56-common/include/linux").mkdir(parents=True)
    assert doctor.check_headers(host)[0] == ERROR


def test_fedora_header_trees(tmp_path):
    host = good_machine(tmp_path, FEDORA)
    no_own_headers(tmp_path)
    tree = tmp_path / "usr/src/kernels/6.8.5-301.fc40.x86_64"
    (tree / "include/generated").mkdir(parents=True)
    write(tmp_path, "/usr/src/kernels/6.8.5-301.fc40.x86_64/Makefile")
    level, msg = doctor.check_headers(host)
    assert level == OK and "6.8.5-301.fc40" in msg


def test_bcc_kernel_source_preset(tmp_path):
    host = good_machine(tmp_path)
    host.env = {"BCC_KERNEL_SOURCE": "/opt/headers"}
    assert doctor.check_headers(host)[0] == ERROR
    (tmp_path / "opt/headers").mkdir(parents=True)
    level, msg = doctor.check_headers(host)
    assert level == OK and "BCC_KERNEL_SOURCE=/opt/headers" in msg


@pytest.mark.parametrize("os_release,machine,line", [(DEBIAN, "x86_64", "apt install linux-headers-amd64"),
                                                     (DEBIAN, "aarch64", "apt install linux-headers-arm64"),
                                                     (UBUNTU, "x86_64", "linux-headers-generic"),
                                                     (FEDORA, "x86_64", "dnf install kernel-devel-")])
def test_no_headers_at_all(tmp_path, os_release, machine, line):
    host = good_machine(tmp_path, os_release)
    host.machine = machine
    no_own_headers(tmp_path)
    level, msg = find(doctor.check(host), "headers")
    assert level == ERROR and line in msg


def test_extras(tmp_path):
    host = good_machine(tmp_path)
    host.iptables = False
    (tmp_path / "sys/kernel/tracing/available_filter_functions").unlink()
    write(tmp_path, "/sys/kernel/security/lockdown", "none integrity [confidentiality]\n")
    write(tmp_path, "/proc/kallsyms", "0000000000000000 T _stext\n")
    results = doctor.check(host)
    assert find(results, "lockdown")[0] == ERROR
    assert find(results, "tracefs")[0] == WARN
    assert find(results, "kptr_restrict")[0] == WARN
    assert find(results, "iptables")[0] == WARN
    report = doctor.format_report(results, host)
    assert "1 error, 3 warnings: not ready to trace" in report


def test_no_tracefs_in_kernel_is_not_a_warning(tmp_path):
    host = good_machine(tmp_path)
    (tmp_path / "sys/kernel/tracing/available_filter_functions").unlink()
    write(tmp_path, "/proc/filesystems", "nodev\tsysfs\n")
    assert doctor.check_tracefs(host) is None


def test_main_on_this_machine(capsys):
    rc = doctor.main([])
    out = capsys.readouterr().out
    assert out.startswith("ipft doctor: kernel ")
    assert rc == (1 if " error  " in out else 0)
    assert "BTF" in out and "headers" in out


def test_main_help(capsys):
    assert doctor.main(["--help"]) == 0
    assert "usage: ipft --doctor" in capsys.readouterr().out
