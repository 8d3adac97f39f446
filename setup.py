"""Build metarecipe and its compiled kernels (metarecipe._C).

The extension builds against the torch already installed, so install without build isolation:

    pip install torch==2.13.0
    pip install --no-build-isolation -e .

C++ with OpenMP is always built; CUDA sources are added when torch has CUDA and nvcc is found.
METARECIPE_NO_EXT=1 skips the extension (the package then runs on its numba and torch fallbacks);
METARECIPE_REQUIRE_EXT=1 turns a failed extension build into an error instead of a warning.
"""

import glob
import os
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def extension_build():
    """Returns (ext_modules, cmdclass) for metarecipe._C, or empty ones when it cannot or must not build."""
    if os.environ.get("METARECIPE_NO_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as err:
        warnings.warn(f"metarecipe._C not built ({err}); install torch first for the compiled kernels", stacklevel=2)
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as err:  # a missing or broken compiler must not stop the install
                if os.environ.get("METARECIPE_REQUIRE_EXT") == "1":
                    raise
                warnings.warn(f"metarecipe._C failed to build ({err}); kernels fall back to numba and torch",
                              stacklevel=2)
                self.extensions = []  # nothing to copy or install

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cxx_flags = ["-O3", "-fopenmp", "-std=c++20"]
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if os.environ.get("METARECIPE_NO_CUDA") == "1":
        with_cuda = False
    if with_cuda:
        ext = CUDAExtension(
            "metarecipe._C",
            sources + sorted(glob.glob(os.path.join("csrc", "*.cu"))),
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("metarecipe._C", sources, extra_compile_args={"cxx": cxx_flags},
                           extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = extension_build()

setup(
    name="metarecipe",
    version="0.1.0",
    description="Low-resource speech recognition by meta-learning: Kaldi-style recipes with compiled kernels",
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["metarecipe", "metarecipe.*"]),
    install_requires=["torch>=2.1", "numpy", "numba>=0.58", "soundfile>=0.12", "soxr>=0.3", "kaldiio>=2.17",
                      "kaldi-native-fbank>=1.18", "tqdm", "matplotlib", "pyyaml>=6", "num2words>=0.5.14",
                      "silero-vad>=6.2", "onnxruntime>=1.20", "onnx>=1.17"],
    extras_require={"test": ["pytest", "ruff", "jiwer", "flashlight-text", "tensorboard"],
                    "tensorboard": ["tensorboard"]},
    entry_points={"console_scripts": ["metarecipe=metarecipe.cli.main:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
