import pytest

from ipft_web.config import TraceConfig, compile_regex, parse_u32
from ipft_web.errors import UsageError


@pytest.mark.parametrize("value,expected", [("0xdeadbeef", 0xDEADBEEF), ("42", 42), (7, 7), ("0XFF", 255),
                                            (" 0x1 ", 1), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_marks_accepted(value, expected):
    assert parse_u32(value, "mark") == expected


@pytest.mark.parametrize("value", ["", "-1", "0x", "0x1ffffffff", "4294967296", "1e3", "0xdead beef", "deadbeef",
                                   "1; reboot", "0x\u0661", "\u0661", None, True, 1.5, [1], -1, 2**32])
def test_marks_refused(value):
    with pytest.raises(UsageError):
        parse_u32(value, "mark")


@pytest.mark.parametrize("pattern", ["(", "[a-", "*", "x" * 600, 5])
def test_bad_regex(pattern):
    with pytest.raises(UsageError):
        compile_regex(pattern)


@pytest.mark.parametrize("pattern", [r"^([a-z_]+){1,}X", r"(a+)+$", r"(a|aa)*X", r"((ip)*)*", r"(?:x*y?)*z",
                                     r"(?=(a+)+)b", r"^(ip|tcp)+_rcv$", r"(\w+\s?)*$"])
def test_exponential_regex_refused(pattern):
    with pytest.raises(UsageError, match="exponential"):
        compile_regex(pattern)


@pytest.mark.parametrize("pattern", [r"^(ip|icmp)_", r"^ip_.*rcv$", r"tcp_v[46]_rcv", r"^(ip|ip6|tcp|udp|icmp)_",
                                     r"^(ip_rcv|ip_rcv_finish|icmp_rcv)$", r"_{2,}dev", r"^nf_.*hook.*$", r"a{2}b{3}",
                                     r"(?i)^IP_"])
def test_ordinary_regex_accepted(pattern):
    assert compile_regex(pattern) is not None


def test_config():
    c = TraceConfig(mark="0x1234abcd", mask="0xffff0000", regex="^ip_")
    assert c.matches("ip_rcv") and not c.matches("tcp_v4_rcv")
    with pytest.raises(UsageError):
        TraceConfig(mark=1, backend="bogus")
