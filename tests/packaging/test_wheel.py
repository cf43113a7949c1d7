"""The wheel is a real package: built from the repo, installed into a fresh venv outside it,
``ringrun`` and ``import ringrt`` work there, and it claims no generic top-level name.

The venv gets the wheel with ``--no-deps``; numpy, pyzmq, msgpack and click come from the
test environment's site-packages through a ``.pth`` line (a path, not a site dir, so the
editable install's finder is not loaded there), which keeps this offline and ~20 s.
"""

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.world import scratch_directory

REPO = Path(__file__).resolve().parents[2]
HELLO = """
import numpy as np
import ringrt as dist
dist.init_process_group()
x = np.full(3, dist.get_rank() + 1.0)
dist.all_reduce(x)
print("SUM", dist.__file__, x.tolist())
dist.destroy_process_group()
"""

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import build"]
                                                ).returncode != 0,
                                 reason="needs build (pip install -e '.[test]')")]


def _run(*command, cwd, timeout=120):
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_wheel_installs_and_runs_outside_the_repo():
    with scratch_directory("rrw-") as scratch:
        root = Path(scratch)
        # The sdist, then the wheel from the unpacked sdist (build's default): files left in
        # the repo's build/ by an earlier build cannot leak into it.
        _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"),
             str(REPO), cwd=root, timeout=180)
        assert len(list((root / "dist").glob("ringrt-*.tar.gz"))) == 1
        (wheel,) = (root / "dist").glob("ringrt-*.whl")
        tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
        assert {t for t in tops if not t.endswith(".dist-info")} == \
            {"ringrt", "ringrt_launcher", "_ringrt_autoload.py"}
        assert "ringrt/py.typed" in zipfile.ZipFile(wheel).namelist()

        env_dir = root / "venv"
        venv.create(env_dir, with_pip=False)
        python = env_dir / "bin" / "python"
        _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
             "--no-deps", "--no-index", str(wheel), cwd=root)
        own_site = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                        cwd=root).strip()
        Path(own_site, "deps-from-tests.pth").write_text("\n".join(site.getsitepackages()) + "\n")

        version = _run(str(env_dir / "bin" / "ringrun"), "--version", cwd=root)
        imported = _run(str(python), "-c", "import ringrt, importlib.util; "
                        "print(ringrt.__version__, ringrt.__file__, "
                        "importlib.util.find_spec('launcher'))", cwd=root).split()
        assert version.strip() == f"ringrun, version {imported[0]}"
        assert imported[1].startswith(str(env_dir)) and imported[2] == "None"

        (root / "hello.py").write_text(HELLO)
        out = _run(str(env_dir / "bin" / "ringrun"), "-n", "2", "hello.py", cwd=root)
        sums = [line for line in out.splitlines() if "SUM" in line]
        assert len(sums) == 2 and all(str(env_dir) in s and "[3.0, 3.0, 3.0]" in s for s in sums)
