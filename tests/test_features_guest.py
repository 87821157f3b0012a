"""Feature probes inside virtme-ng guest kernels (kprobes available there, not on the host).

Run: vng --disable-kvm -r /boot/vmlinuz-6.12.117+deb12-amd64 -m 3G --cpus 2 -- \
       "cd /work/main && IPFT_IN_GUEST=1 .venv/bin/python -m pytest -q tests/test_features_guest.py"
"""
import errno
import os
import platform
import socket
import subprocess

import pytest

from ipft_web.kernel import features, kprobe_multi, sysbpf

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(os.environ.get("IPFT_IN_GUEST") != "1", reason="guest kernels only (IPFT_IN_GUEST=1)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

RELEASE = platform.release()
ON_61 = RELEASE.startswith("6.1.")
ON_612 = RELEASE.startswith("6.12.")


def test_report_answers(capsys):
    answers = features.probe_all()
    with capsys.disabled():
        print(f"\n{RELEASE}: backends {features.available_backends()}")
        for key, answer in answers.items():
            print(f"  {key:15} {answer['ok']!s:5} {answer['why'] or ''}")
    assert answers["raw_tracepoint"]["ok"]


def test_kprobe_everywhere_in_guests():
    assert features.have_kprobe(), features.probe_all()["kprobe"]["why"]
    assert "kprobe" in features.available_backends()


@pytest.mark.skipif(not ON_61, reason="6.1 expectations")
def test_61_has_fentry_and_kprobe_but_no_kprobe_multi():
    assert not features.have_kprobe_multi()
    assert "EOPNOTSUPP" in features.probe_all()["kprobe_multi"]["why"]   # Debian 6.1: no CONFIG_FPROBE
    assert features.available_backends() == ["fentry", "kprobe", "tracepoint"]


@pytest.mark.skipif(not ON_612, reason="6.12 expectations")
def test_612_has_kprobe_multi_and_fentry():
    assert features.have_kprobe_multi(), features.probe_all()["kprobe_multi"]["why"]
    assert features.have_fentry(), features.probe_all()["fentry"]["why"]
    assert features.available_backends() == ["kprobe-multi", "fentry", "kprobe", "tracepoint"]


def test_kprobe_multi_unknown_symbol_is_esrch():
    if not features.have_kprobe_multi():
        pytest.skip("no kprobe-multi")
    prog = sysbpf.prog_load(sysbpf.BPF_PROG_TYPE_KPROBE, expected_attach_type=sysbpf.BPF_TRACE_KPROBE_MULTI)
    try:
        with pytest.raises(OSError) as info:
            kprobe_multi.attach_kprobe_multi(prog, ["consume_skb", "no_such_function_ipft"])
        assert info.value.errno == errno.ESRCH and "not traceable" in str(info.value)
    finally:
        os.close(prog)


BCC_PROGRAM = r"""
#include <uapi/linux/ptrace.h>
static u64 (*ipft_attach_cookie)(void *ctx) = (void *)174;   /* BPF_FUNC_get_attach_cookie */
BPF_HASH(hits, u64, u64);
int on_func(struct pt_regs *ctx) {
    u64 cookie = ipft_attach_cookie(ctx), zero = 0;
    u64 *count = hits.lookup_or_try_init(&cookie, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""
SYMBOLS = ["udp_sendmsg", "ip_rcv", "udp_rcv"]   # all reached through function pointers: never inlined


def send_udp_over_loopback():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"ipft", ("127.0.0.1", 9))
    except OSError:  # loopback down in a fresh guest
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"ipft", ("127.0.0.1", 9))


def test_bcc_program_on_three_symbols_with_cookies():
    if not features.have_kprobe_multi():
        pytest.skip("no kprobe-multi on " + RELEASE)
    from bcc import BPF
    bpf = BPF(text=BCC_PROGRAM.encode())
    try:
        fn = bpf.load_func(b"on_func", BPF.KPROBE, attach_type=kprobe_multi.BPF_TRACE_KPROBE_MULTI)
        cookies = [101, 102, 103]
        link = kprobe_multi.attach_kprobe_multi(fn.fd, SYMBOLS, cookies)
        try:
            for _ in range(3):
                send_udp_over_loopback()
        finally:
            os.close(link)
        counts = {k.value: v.value for k, v in bpf[b"hits"].items()}
        assert all(counts.get(c, 0) >= 3 for c in cookies), counts
    finally:
        bpf.cleanup()
