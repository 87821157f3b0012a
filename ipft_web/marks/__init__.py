"""Marking rules: validate (spec), render (iptables/ip6tables/nft argument lists), apply/remove by tag,
find what a killed ipft left behind (cleanup), the /api/marks blueprint (api) and `ipft --mark-rule` (cli)."""
