"""Installing without a working compiler still gives a package that runs on the fallbacks."""

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_install_without_compiler_falls_back_to_numba_and_torch(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "csrc", source / "csrc")
    shutil.copytree(ROOT / "metarecipe", source / "metarecipe",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METARECIPE_")}
    env.update(CC="/bin/false", CXX="/bin/false")
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps", "--no-index", "--target",
         str(site), str(source)], env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "metarecipe._C failed to build" in install.stdout + install.stderr
    check = ("import math, torch\n"
             "from metarecipe.kernels import available_backends, ctc_loss\n"
             "import metarecipe\n"
             "print(metarecipe.__file__)\n"
             "print(available_backends())\n"
             "uniform = torch.full((4, 1, 3), -math.log(3))\n"
             "print(float(ctc_loss(uniform, torch.tensor([[1]]), [4], [1], reduction='sum')))\n")
    # -S: no .pth files, so an editable install of this checkout cannot answer for metarecipe._C
    packages = Path(torch.__file__).parents[1]
    run = subprocess.run([sys.executable, "-S", "-c", check], env={**env, "PYTHONPATH": f"{site}:{packages}"},
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    path, backends, loss = run.stdout.strip().splitlines()
    assert path.startswith(str(site))
    assert backends == "['numba', 'torch']"
    # uniform scores over 3 tokens: 4 frames, label 1: 10 alignments of probability 3^-4 each
    assert abs(float(loss) - (4 * math.log(3) - math.log(10))) < 1e-5
