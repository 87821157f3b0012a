"""scripts/install.sh, scripts/test-image.sh and the Dockerfile: syntax, lint, and install.sh for real."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
SCRIPTS = [INSTALL, ROOT / "scripts" / "test-image.sh"]
IS_ROOT = os.geteuid() == 0


def run(args, env=None, timeout=600, cwd=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd)


def system_bcc() -> bool:
    if not os.path.exists("/usr/bin/python3"):
        return False
    return run(["/usr/bin/python3", "-c", "import bcc; bcc.BPF"]).returncode == 0


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax_and_strict_mode(script):
    assert run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt install shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    r = run(["shellcheck", str(script)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_help():
    r = run([str(INSTALL), "--help"])
    assert r.returncode == 0
    assert "usage: sudo scripts/install.sh" in r.stdout and "--uninstall" in r.stdout


def test_dry_run_plans_venv_pip_and_start(tmp_path):
    venv = tmp_path / "venv"
    r = run([str(INSTALL), "--dry-run", "--venv", str(venv), "--port", "9999", "--", "--host", "::1"],
            env={"IPFT_BIN_DIR": str(tmp_path / "bin")})
    assert r.returncode == 0, r.stderr
    assert f"/usr/bin/python3 -m venv --system-site-packages {venv}" in r.stderr
    assert f"{venv}/bin/python -m pip install" in r.stderr and str(ROOT) in r.stderr
    assert f"ln -sfn -- {venv}/bin/ipft-web {tmp_path}/bin/ipft-web" in r.stderr
    assert f"would start: {venv}/bin/ipft-web --port 9999 --host ::1" in r.stderr
    assert not venv.exists() and not (tmp_path / "bin").exists()


@pytest.mark.parametrize("os_release,expect", [
    ('ID=fedora\nVERSION_ID=40\n', "sudo dnf install -y python3 python3-bcc bpftool iptables-nft kernel-devel-"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "sudo dnf install -y python3 python3-bcc"),
])
def test_fedora_and_rhel_get_the_dnf_line(tmp_path, os_release, expect):
    (tmp_path / "os-release").write_text(os_release)
    r = run([str(INSTALL), "--dry-run", "--no-run", "--venv", str(tmp_path / "venv")],
            env={"IPFT_OS_RELEASE": str(tmp_path / "os-release"), "IPFT_BIN_DIR": str(tmp_path / "bin")})
    assert expect in r.stderr
    assert "apt-get" not in r.stderr
    if system_bcc():
        assert r.returncode == 0 and "going on" in r.stderr


def test_debian_derivatives_use_apt(tmp_path):
    (tmp_path / "os-release").write_text('ID=linuxmint\nID_LIKE="ubuntu debian"\n')
    r = run([str(INSTALL), "--dry-run", "--no-run", "--venv", str(tmp_path / "venv")],
            env={"IPFT_OS_RELEASE": str(tmp_path / "os-release"), "IPFT_BIN_DIR": str(tmp_path / "bin")})
    assert r.returncode == 0, r.stderr
    assert "dnf" not in r.stderr
    assert "install: system packages: all present" in r.stderr or "install: installing: " in r.stderr


@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_refuses_without_root(tmp_path):
    # a copy `nobody` can read: the checkout may sit in a directory only root can enter
    public = Path(tempfile.mkdtemp(prefix="ipft-install-test-"))
    try:
        os.chmod(public, 0o755)
        (public / "scripts").mkdir(mode=0o755)
        script = public / "scripts" / "install.sh"
        shutil.copy(INSTALL, script)
        os.chmod(script, 0o755)
        r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script), "--no-run",
                 "--venv", str(tmp_path / "venv")])
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert r.returncode == 1
    assert "install: error: run as root: sudo" in r.stderr


@pytest.mark.skipif(not IS_ROOT, reason="needs root")
def test_refuses_to_replace_a_directory_that_is_not_a_venv(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data.txt").write_text("keep me")
    r = run([str(INSTALL), "--no-run", "--skip-packages", "--venv", str(target)],
            env={"IPFT_BIN_DIR": str(tmp_path / "bin")})
    assert r.returncode == 1 and "is not a venv" in r.stderr
    assert (target / "data.txt").read_text() == "keep me"


@pytest.mark.skipif(not IS_ROOT or not system_bcc(), reason="needs root and python3-bpfcc for /usr/bin/python3")
def test_install_for_real_is_idempotent_and_uninstalls(tmp_path):
    """A real venv and pip install (from PyPI) into a temporary place; no system packages touched."""
    venv, bindir = tmp_path / "opt" / "venv", tmp_path / "bin"
    env = {"IPFT_BIN_DIR": str(bindir)}
    # A venv that cannot see BCC (no --system-site-packages) is remade, not trusted.
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    args = [str(INSTALL), "--no-run", "--skip-packages", "--venv", str(venv)]

    first = run(args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "cannot import bcc" in first.stderr and "remaking it" in first.stderr
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    for name in ("ipft", "ipft-web"):
        link = bindir / name
        assert link.is_symlink() and os.readlink(link) == str(venv / "bin" / name)
    assert "ipft doctor:" in first.stdout
    assert run([str(bindir / "ipft"), "--help"]).returncode == 0
    assert run([str(bindir / "ipft-web"), "--help"]).returncode == 0
    r = run([str(venv / "bin" / "python"), "-c", "import bcc, ipft_web.doctor; print(bcc.__file__)"])
    assert r.returncode == 0 and r.stdout.startswith("/usr/lib/python3/")
    # the installed copy (not the work tree) has every module and its data: import them all
    code = ("import pkgutil, ipft_web\n"
            "assert '/opt/venv/' in ipft_web.__file__, ipft_web.__file__\n"
            "for m in pkgutil.walk_packages(ipft_web.__path__, 'ipft_web.'):\n"
            "    __import__(m.name)\n"
            "from ipft_web.config import TraceConfig; TraceConfig(mark=1, fields=['skb->len'])\n")
    r = run([str(venv / "bin" / "python"), "-c", code], cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    scripts = run([str(bindir / "ipft"), "--scripts"], cwd=str(tmp_path))
    assert scripts.returncode == 0 and "gso" in scripts.stdout, scripts.stderr

    second = run(args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"venv: {venv} (kept)" in second.stderr

    gone = run([str(INSTALL), "--uninstall", "--venv", str(venv)], env=env)
    assert gone.returncode == 0, gone.stderr
    assert not venv.exists() and not (bindir / "ipft").exists() and not (bindir / "ipft-web").exists()


def test_dockerfile_and_dockerignore():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM debian:bookworm-slim\n") == 1
    assert 'ENTRYPOINT ["/opt/ipft-web/venv/bin/ipft-web"]' in text
    assert 'CMD ["--host", "127.0.0.1", "--port", "8080"]' in text
    assert "install.sh --packages-only" in text and "--venv /opt/ipft-web/venv" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests"):
        assert entry in ignored
    for needed in ("README.md", "pyproject.toml", "ipft_web", "bpf", "static", "templates", "scripts"):
        assert needed not in ignored
