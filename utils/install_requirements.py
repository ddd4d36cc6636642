"""Install the pinned requirements into the running interpreter's environment: ``run.sh`` and
``test.sh`` call it with ``.venv``'s Python. Standard library only: it runs before anything is installed.

    python -m utils.install_requirements [--requirements requirements.txt]

PyPI's torch for Linux is the CUDA build, several GB with the NVIDIA libraries. On Linux with no
NVIDIA driver, the pinned torch is first taken from PyTorch's CPU index (a few hundred MB), when that
index answers; otherwise, and on other systems, torch comes from PyPI with the rest.
``TORCH_INDEX_URL=URL`` takes torch from that index instead, on any machine: a cluster's login node
that installs for its GPU nodes wants ``TORCH_INDEX_URL=https://pypi.org/simple`` (PyPI's CUDA build)
or the index of its CUDA (``https://download.pytorch.org/whl/cu126``, ...). A torch already installed
at the pinned version is kept, whichever build it is (``pip uninstall torch`` first to change builds).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 10


def pinned_torch(requirements: Path) -> str | None:
    """The version ``requirements`` pins torch to (``torch==X``), or None."""
    for line in requirements.read_text().splitlines():
        match = re.fullmatch(r"\s*torch\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if match:
            return match.group(1)
    return None


def installed_torch() -> str | None:
    """The installed torch's version (``2.13.0+cpu``), or None; read from its metadata, not imported."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def has_nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def index_answers(url: str) -> bool:
    """Whether the index serves a page for torch (a dead DNS name fails at once, a dropped one in 10 s)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/torch/", timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def torch_index(pin: str | None) -> tuple[str | None, str]:
    """The index to take torch from before the other requirements (None: PyPI, with them) and why."""
    chosen = os.environ.get("TORCH_INDEX_URL", "").strip()
    installed = installed_torch()
    if pin is None:
        return None, "requirements pin no torch"
    if installed is not None and installed.split("+")[0] == pin:
        return None, f"torch {installed} is installed"
    if chosen:
        return chosen, f"TORCH_INDEX_URL={chosen}"
    if platform.system() != "Linux":
        return None, f"PyPI's torch for {platform.system()} is a CPU build"
    if has_nvidia_driver():
        return None, "an NVIDIA driver is installed: PyPI's CUDA build"
    if not index_answers(CPU_INDEX):
        return None, (f"PyTorch's CPU index ({CPU_INDEX}) does not answer: torch comes from PyPI, or what pip is "
                      "configured with (PyPI's Linux build is the CUDA one, GBs)")
    return CPU_INDEX, "no NVIDIA driver here: PyTorch's CPU build"


def pip(*arguments: str) -> int:
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *arguments])


def install(requirements: Path) -> int:
    """Install torch (from the index :func:`torch_index` picks), then every requirement; pip's status."""
    pin = pinned_torch(requirements)
    index, reason = torch_index(pin)
    if index is not None:
        print(f"torch {pin} from {index} ({reason}); for another build, uninstall it and set TORCH_INDEX_URL "
              "(https://pypi.org/simple: PyPI's CUDA build)", flush=True)
        status = pip("--index-url", index, f"torch=={pin}")
        if status != 0:
            if index != CPU_INDEX:
                return status  # the index the user named: its failure is theirs to see
            print(f"torch {pin} could not be installed from {index}: taking it from PyPI", flush=True)
    elif reason.startswith("PyTorch's CPU index"):
        print(f"torch {pin}: {reason}", flush=True)  # why a CPU-only machine downloads GBs
    return pip("-r", str(requirements))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    args = parser.parse_args(argv)
    return install(args.requirements)


if __name__ == "__main__":
    sys.exit(main())
