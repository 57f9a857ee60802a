"""setup.py — builds lowvram by driving CMake (CMakeLists.txt is the one list
of sources): configure + build into build/cmake, then copy the shim library
into the package as lowvram/_C*.so (and beside python/lowvram/ for editable
installs). Install with `pip install --no-build-isolation .` so that the
build uses the torch already installed (build isolation would download it).

Environment: TORCH_CUDA_ARCH_LIST (default "8.0;8.6;8.9;9.0", Ampere and
Hopper), LOWVRAM_CUDA=0 for a CPU-only build, LOWVRAM_BUILD_DIR (default
build/cmake), CMAKE_BUILD_PARALLEL_LEVEL.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import torch  # the installed torch decides the ABI; never a build-isolated one

        build_dir = os.environ.get("LOWVRAM_BUILD_DIR", os.path.join(ROOT, "build", "cmake"))
        env = dict(os.environ)
        env.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;8.6;8.9;9.0")
        cuda = os.environ.get("LOWVRAM_CUDA", "")
        args = [
            "cmake", "-S", ROOT, "-B", build_dir,
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if cuda in ("0", "OFF", "off", "false"):
            args.append("-DLOWVRAM_CUDA=OFF")
        elif cuda:
            args.append("-DLOWVRAM_CUDA=ON")
        subprocess.check_call(args, env=env)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", build_dir, "-j", jobs], env=env)

        built = os.path.join(build_dir, "_C.so")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built, target)
        # An editable install imports python/lowvram directly: keep a copy there.
        inplace = os.path.join(ROOT, "python", "lowvram", os.path.basename(target))
        if os.path.abspath(inplace) != os.path.abspath(target):
            shutil.copyfile(built, inplace)


setup(
    name="lowvram",
    version="0.1.0",
    description="Run and fine-tune PyTorch models bigger than your GPU: int8 Linear, "
    "N:M pruning, micro-batch training (C/CUDA kernels behind torch ops)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"lowvram": ["data/*.txt"]},
    ext_modules=[Extension("lowvram._C", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    install_requires=["torch", "numpy"],
    zip_safe=False,
)
