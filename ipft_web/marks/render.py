"""A validated MarkSpec -> the argument lists that create it, and their exact copyable text.

iptables/ip6tables: one rule per (family, hook) in the raw table,
    iptables -t raw -A OUTPUT -p icmp -d 127.0.0.2 -m comment --comment ipft-web:ID
             -j MARK --set-xmark 0xdeadbeef/0xffffffff
nft: a dedicated `table inet ipft_web` with base chains `prerouting`/`output` at priority raw (created
on demand, idempotent `add`), one rule per hook covering both families,
    nft add rule inet ipft_web output meta l4proto icmp ip daddr 127.0.0.2 meta mark set 0xdeadbeef
        comment '"ipft-web:ID"'
Every rule carries the tag `ipft-web:ID`, which is how it is found again (see listing.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import EnvError
from . import runner
from .spec import MarkSpec

TAG_PREFIX = "ipft-web:"
ID_RE = re.compile(r"[0-9a-f]{8}-[0-9]{1,10}-[0-9]{1,20}")   # random-ownerpid-ownerstarttime
TAG_RE = re.compile(re.escape(TAG_PREFIX) + r"(" + ID_RE.pattern + r")")
NFT_TABLE = ("inet", "ipft_web")
NFT_CHAINS = {"PREROUTING": "prerouting", "OUTPUT": "output"}
IPT_BIN = {"ipv4": "iptables", "ipv6": "ip6tables"}
IPT_PROTO = {("ipv4", "icmp"): "icmp", ("ipv6", "icmpv6"): "ipv6-icmp"}
NFT_PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}


def tag(rule_id: str) -> str:
    return TAG_PREFIX + rule_id


@dataclass(frozen=True)
class Command:
    argv: tuple          # what runs, including `ip netns exec NAME` when there is a netns
    tool: str            # iptables | ip6tables | nft

    @property
    def text(self) -> str:
        return runner.text(self.argv)


def choose_tool(spec: MarkSpec) -> str:
    """'iptables' (iptables/ip6tables for the families needed) or 'nft', as asked or as available."""
    needed = [IPT_BIN[f] for f in spec.families]
    have_ipt = all(runner.which(b) for b in needed)
    have_nft = runner.which("nft") is not None
    if spec.tool == "iptables":
        if not have_ipt:
            missing = ", ".join(b for b in needed if not runner.which(b))
            raise EnvError(f"{missing} not found: install the iptables package or use tool nft")
        return "iptables"
    if spec.tool == "nft":
        if not have_nft:
            raise EnvError("nft not found: install the nftables package or use tool iptables")
        return "nft"
    if have_ipt:
        return "iptables"
    if have_nft:
        return "nft"
    raise EnvError("neither iptables nor nft is installed (apt-get install iptables nftables)")


def _addr(net) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _port(p, sep: str) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}{sep}{p[1]}"


def iptables_args(spec: MarkSpec, family: str, chain: str, rule_tag: str, op: str = "-A") -> list[str]:
    args = [IPT_BIN[family], "-t", "raw", op, chain]
    if spec.proto != "any":
        args += ["-p", IPT_PROTO.get((family, spec.proto), spec.proto)]
    if spec.src is not None:
        args += ["-s", _addr(spec.src)]
    if spec.dst is not None:
        args += ["-d", _addr(spec.dst)]
    if spec.iif:
        args += ["-i", spec.iif]
    if spec.oif:
        args += ["-o", spec.oif]
    if spec.sport:
        args += ["--sport", _port(spec.sport, ":")]
    if spec.dport:
        args += ["--dport", _port(spec.dport, ":")]
    if spec.rate:
        args += ["-m", "limit", "--limit", f"{spec.rate[0]}/{spec.rate[1]}"]
    args += ["-m", "comment", "--comment", rule_tag,
             "-j", "MARK", "--set-xmark", f"0x{spec.mark:08x}/0x{spec.mask:08x}"]
    return args


def nft_table_args() -> list[str]:
    return ["nft", "add", "table", *NFT_TABLE]


def nft_chain_args(chain: str) -> list[str]:
    hook = NFT_CHAINS[chain]
    return ["nft", "add", "chain", *NFT_TABLE, hook,
            f"{{ type filter hook {hook} priority raw; policy accept; }}"]


def nft_rule_args(spec: MarkSpec, chain: str, rule_tag: str) -> list[str]:
    args = ["nft", "add", "rule", *NFT_TABLE, NFT_CHAINS[chain]]
    if spec.family != "both":
        args += ["meta", "nfproto", spec.family]
    if spec.iif:
        args += ["iifname", f'"{spec.iif}"']
    if spec.oif:
        args += ["oifname", f'"{spec.oif}"']
    for field, net in (("saddr", spec.src), ("daddr", spec.dst)):
        if net is not None:
            args += ["ip" if net.version == 4 else "ip6", field, _addr(net)]
    if spec.proto != "any":
        args += ["meta", "l4proto", NFT_PROTO[spec.proto]]
    if spec.sport:
        args += [spec.proto, "sport", _port(spec.sport, "-")]
    if spec.dport:
        args += [spec.proto, "dport", _port(spec.dport, "-")]
    if spec.rate:
        args += ["limit", "rate", f"{spec.rate[0]}/{spec.rate[1]}"]
    args += ["meta", "mark", "set"]
    if spec.mask == 0xFFFFFFFF:
        args += [f"0x{spec.mark:08x}"]
    else:   # keep the bits outside the mask, set those inside it
        args += ["meta", "mark", "and", f"0x{~spec.mask & 0xFFFFFFFF:08x}", "or", f"0x{spec.mark:08x}"]
    args += ["comment", f'"{rule_tag}"']
    return args


def render(spec: MarkSpec, rule_id: str, tool: str) -> list[Command]:
    """The commands that create the rule, in order (`tool` from choose_tool)."""
    if not ID_RE.fullmatch(rule_id):
        raise ValueError(f"bad rule id {rule_id!r}")
    rule_tag = tag(rule_id)
    cmds: list[Command] = []
    if tool == "iptables":
        for family in spec.families:
            for chain in spec.chains:
                argv = iptables_args(spec, family, chain, rule_tag)
                cmds.append(Command(tuple(runner.in_netns(spec.netns, argv)), argv[0]))
    elif tool == "nft":
        cmds.append(Command(tuple(runner.in_netns(spec.netns, nft_table_args())), "nft"))
        for chain in spec.chains:
            cmds.append(Command(tuple(runner.in_netns(spec.netns, nft_chain_args(chain))), "nft"))
        for chain in spec.chains:
            argv = nft_rule_args(spec, chain, rule_tag)
            cmds.append(Command(tuple(runner.in_netns(spec.netns, argv)), "nft"))
    else:
        raise ValueError(f"unknown tool {tool!r}")
    return cmds
