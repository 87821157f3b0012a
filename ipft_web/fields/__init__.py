"""User-chosen packet fields (`--field skb->len`, scripts): parsed, resolved through the kernel's
type info to offset chains, loaded into the BPF program's ipft_fields map, decoded per hit.

paths.py    parse a field spec (syntax only) and resolve it through a TypeDB to an offset chain
bpfmap.py   write resolved chains into the compiled program's maps
decode.py   raw bytes of one field -> a JSON value (ints, enum and flag names, strings, addresses)
enums.py    enums found by type name or by one of their enumerators (anonymous enums included)
scripts.py  field scripts: TOML files installed on the host, selectable by name
"""
from .paths import MAX_FIELDS, FieldSpec, Resolved, parse, parse_all, resolve, resolve_all  # noqa: F401
