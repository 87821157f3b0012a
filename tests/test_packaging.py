"""The wheel carries what the product owner asked for: static/, templates/ and bpf/ (and data/)."""
import glob
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_carries_static_templates_bpf(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    names = set(zipfile.ZipFile(glob.glob(str(tmp_path / "*.whl"))[0]).namelist())
    for path in ("ipft_web/bpf/ipft.bpf.c", "ipft_web/bpf/prebuilt/x86_64.json.gz", "ipft_web/bpf/prebuilt/x86_64-fields.json.gz",
                 "ipft_web/templates/index.html", "ipft_web/static/style.css",
                 "ipft_web/static/js/app.js", "ipft_web/static/vendor/socket.io.min.js",
                 "ipft_web/data/layers.json", "ipft_web/data/scripts/gso.toml"):
        assert path in names, path
    # every module of the source tree, subpackages included (a package left out of pyproject.toml
    # works in an editable install and breaks every real one)
    for path in sorted((REPO / "ipft_web").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        assert rel in names, f"{rel} is not in the wheel: list its package in pyproject.toml"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(glob.glob(str(tmp_path / "*.whl"))[0]).read(entry).decode()
    assert "ipft = ipft_web.cli:main" in text and "ipft-web = ipft_web.web.server:main" in text
