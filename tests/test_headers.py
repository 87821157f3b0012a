"""ipft_web.kernel.headers on made-up /usr/src trees, and once on this machine (BCC compile as root)."""
import os
import platform
from pathlib import Path

import pytest

from ipft_web.errors import EnvError
from ipft_web.kernel import headers


def make_debian_pair(src: Path, version: str, flavour: str = "amd64"):
    """linux-headers-<version>-common + linux-headers-<version>-<flavour>, like Debian's."""
    common = src / f"linux-headers-{version}-common"
    arch = src / f"linux-headers-{version}-{flavour}"
    for d in (common / "include" / "linux", common / "arch" / "x86" / "include" / "asm",
              arch / "include" / "generated", arch / "arch" / "x86" / "include" / "generated",
              arch / "include" / "config"):
        d.mkdir(parents=True, exist_ok=True)
    (common / "Makefile").write_text("# top Makefile\n")
    (common / "include" / "linux" / "skbuff.h").write_text("/* common skbuff */\n")
    (common / "include" / "linux" / "kconfig.h").write_text("/* common kconfig */\n")
    (common / "arch" / "x86" / "include" / "asm" / "ptrace.h").write_text("/* ptrace */\n")
    (common / "include" / "clash.h").write_text("common\n")
    (arch / "Makefile").write_text(f"include {common}/Makefile\n")
    (arch / ".config").write_text("CONFIG_X=y\n")
    (arch / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X 1\n")
    (arch / "include" / "clash.h").write_text("flavour\n")
    (arch / "arch" / "x86" / "include" / "generated" / "asm.h").write_text("/* gen */\n")
    return arch, common


@pytest.fixture
def fake(tmp_path):
    src = tmp_path / "usr_src"
    src.mkdir()
    (src / "python3.11").mkdir()
    return {"src": src, "modules": tmp_path / "lib_modules", "cache": tmp_path / "cache", "tmp": tmp_path}


def find(fake, release, **kw):
    return headers.find_headers(release, modules_dir=str(fake["modules"]), src_dirs=(str(fake["src"]),),
                                cache_dirs=(str(fake["cache"]),), env=kw.pop("env", {}), **kw)


def test_merged_tree(fake):
    arch, common = make_debian_pair(fake["src"], "6.1.0-56")
    path, msg = find(fake, "6.18.44-custom")
    assert msg == f"using headers of 6.1.0-56-amd64 for kernel 6.18.44-custom ({path})"
    assert path == fake["cache"] / "kernel-headers" / "6.1.0-56-amd64"
    # union of both halves, files are symlinks, the flavour tree wins on clashes
    assert (path / "include" / "linux" / "skbuff.h").read_text() == "/* common skbuff */\n"
    assert (path / "include" / "generated" / "autoconf.h").is_file()
    assert (path / "include" / "clash.h").read_text() == "flavour\n"
    assert (path / "arch" / "x86" / "include" / "asm" / "ptrace.h").is_file()
    assert (path / "arch" / "x86" / "include" / "generated" / "asm.h").is_file()
    assert (path / "Makefile").resolve() == (arch / "Makefile").resolve()
    assert (path / "include" / "clash.h").is_symlink()
    assert not (path / "include").is_symlink()            # present in both: merged
    assert (path / "include" / "linux").is_symlink()      # only in common: one link
    # nothing written into the source trees
    assert sorted(p.name for p in common.iterdir()) == ["Makefile", "arch", "include"]


def test_cached_then_rebuilt_when_stale(fake):
    arch, common = make_debian_pair(fake["src"], "6.1.0-56")
    path, _ = find(fake, "6.18")
    stamp = path / headers.STAMP
    before = stamp.stat().st_mtime_ns
    assert find(fake, "6.18")[0] == path and stamp.stat().st_mtime_ns == before  # cached
    (common / "include" / "linux" / "new.h").write_text("x\n")     # changes nothing at the top
    os.utime(common, ns=(before + 10**9, before + 10**9))           # upgrade touches the tree
    (common / "include" / "brand_new").mkdir()
    os.utime(common, ns=(before + 2 * 10**9, before + 2 * 10**9))
    path2, _ = find(fake, "6.18")
    assert path2 == path and (path / "include" / "brand_new").exists()


def test_nearest_version_wins(fake):
    make_debian_pair(fake["src"], "6.1.0-56")
    make_debian_pair(fake["src"], "6.12.117+deb12")
    assert find(fake, "6.18.44")[1].startswith("using headers of 6.12.117+deb12-amd64 ")
    assert find(fake, "6.2.0")[1].startswith("using headers of 6.1.0-56-amd64 ")
    ranked = headers.ranked_trees("6.18.44", src_dirs=(str(fake["src"]),))
    assert [r[0] for r in ranked] == ["6.12.117+deb12-amd64", "6.1.0-56-amd64"]


def test_single_tree_used_as_is(fake):
    tree = fake["src"] / "kernels" / "6.8.9-300.fc40.x86_64"
    (tree / "include" / "generated").mkdir(parents=True)
    (tree / "Makefile").write_text("# full tree\n")
    path, msg = headers.find_headers("6.9.0", modules_dir=str(fake["modules"]),
                                     src_dirs=(str(fake["src"] / "kernels"),), cache_dirs=(str(fake["cache"]),), env={})
    assert path == tree and "6.8.9-300.fc40.x86_64" in msg
    assert not fake["cache"].exists() or not any(fake["cache"].rglob("*.h"))


def test_own_release_left_to_bcc(fake):
    arch, _common = make_debian_pair(fake["src"], "6.1.0-56")
    mod = fake["modules"] / "6.1.0-56-amd64"
    mod.mkdir(parents=True)
    (mod / "build").symlink_to(arch)
    assert find(fake, "6.1.0-56-amd64") == (None, None)


def test_preset_env(fake):
    assert find(fake, "6.18", env={"BCC_KERNEL_SOURCE": str(fake["tmp"])}) == (
        fake["tmp"], f"using BCC_KERNEL_SOURCE={fake['tmp']}")
    with pytest.raises(EnvError, match="not a directory"):
        find(fake, "6.18", env={"BCC_KERNEL_SOURCE": str(fake["tmp"] / "nope")})


def test_no_headers_at_all(fake):
    (fake["src"] / "linux-headers-6.1.0-56-common" / "include").mkdir(parents=True)  # a half is not a tree
    with pytest.raises(EnvError, match="no kernel headers found.*apt install linux-headers") as exc:
        find(fake, "6.18.44")
    assert "\n" not in str(exc.value)


def test_hostile_release_string(fake):
    make_debian_pair(fake["src"], "6.1.0-56")
    path, _ = find(fake, "../../etc")
    assert path.parent == fake["cache"] / "kernel-headers"


def test_unwritable_cache(fake, monkeypatch):
    make_debian_pair(fake["src"], "6.1.0-56")
    blocker = fake["tmp"] / "file"
    blocker.write_text("x")
    with pytest.raises(EnvError, match="no writable cache directory"):
        headers.find_headers("6.18", modules_dir=str(fake["modules"]), src_dirs=(str(fake["src"]),),
                             cache_dirs=(str(blocker / "sub"),), env={})


# -- this machine --------------------------------------------------------------------------------
def test_host_headers(tmp_path):
    try:
        path, msg = headers.find_headers(cache_dirs=(str(tmp_path),), env={})
    except EnvError as exc:
        pytest.skip(str(exc))
    if path is None:
        assert Path(f"/lib/modules/{platform.release()}/build").is_dir()
        return
    assert (path / "include" / "linux" / "skbuff.h").is_file()
    assert (path / "include" / "generated").is_dir() or (path / ".config").is_file()
    assert platform.release() in msg


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_bcc_compiles_with_found_headers(tmp_path, monkeypatch):
    bcc = pytest.importorskip("bcc")
    try:
        path, _msg = headers.find_headers(cache_dirs=(str(tmp_path),), env={})
    except EnvError as exc:
        pytest.skip(str(exc))
    if path is not None:
        monkeypatch.setenv("BCC_KERNEL_SOURCE", str(path))
    prog = bcc.BPF(text=b"""
#include <uapi/linux/ptrace.h>
#include <linux/skbuff.h>
RAW_TRACEPOINT_PROBE(netif_receive_skb) {
    struct sk_buff *skb = (struct sk_buff *)ctx->args[0];
    return skb != 0;
}
""")
    prog.cleanup()
