"""build_backend.py — the PEP 517 backend behind `pip install .` (pyproject.toml).

Builds the CPython module `obmem` the way python/CMakeLists.txt does: python/*.c plus
obmem's sources (OBMEM_SOURCES in CMakeLists.txt, read here so that there is one list) less
src/trace/autostart.c (so that no tracer starts at load), with a version script that exports PyInit_obmem
alone.  The compiler and flags are the interpreter's own (sysconfig: CC, CFLAGS, CCSHARED,
LDSHARED), as setuptools would use them; the wheel is written with zipfile.  Standard library
only: no setuptools, no wheel package, no network.

    pip install .                          (offline; build isolation is fine)
    python3 python/build_backend.py DIR    (just the module, into DIR: for a quick try)
"""
import base64
import concurrent.futures
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_SOURCES = ["python/module.c", "python/allocator.c", "python/footprint.c",
                  "python/trace.c", "python/frames.c", "python/capture.c"]
# pure Python, installed beside the module (which imports it)
MODULE_PYTHON = ["python/_obmem_tracing.py"]
# the package shim that makes `python -m obmem run` work (python/obmem/__init__.py), installed
# as the directory obmem/ beside the module
PACKAGE_PYTHON = ["python/obmem/__init__.py", "python/obmem/__main__.py"]
# what CMake's obmem_setup_target and python/CMakeLists.txt add (see there)
OBMEM_FLAGS = ["-std=gnu11", "-fvisibility=hidden", "-ftls-model=initial-exec",
               "-fno-semantic-interposition", "-fno-tree-slp-vectorize",
               "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src")]


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def version():
    return re.search(r'#define OBM_VERSION_STRING "([^"]+)"', _read("include/obmem.h")).group(1)


def sources():
    match = re.search(r"set\(OBMEM_SOURCES\s+(.*?)\)", _read("CMakeLists.txt"), re.S)
    if match is None:
        raise RuntimeError("build_backend: no OBMEM_SOURCES list in CMakeLists.txt")
    library = [s for s in match.group(1).split() if s != "src/trace/autostart.c"]
    return MODULE_SOURCES + library


def _config(name):
    return shlex.split(sysconfig.get_config_var(name) or "")


def build_module(out_dir):
    """Compiles and links the module into out_dir; returns its path."""
    work = tempfile.mkdtemp(prefix="obmem-build-")
    cc = _config("CC")
    cflags = (_config("CFLAGS") + _config("CCSHARED") + OBMEM_FLAGS +
              ["-I" + sysconfig.get_paths()["include"]])

    def compile_one(source):
        obj = os.path.join(work, source.replace("/", "_") + ".o")
        cmd = cc + cflags + ["-c", os.path.join(ROOT, source), "-o", obj]
        subprocess.run(cmd, check=True)
        return obj

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources()))
    target = os.path.join(out_dir, "obmem" + sysconfig.get_config_var("EXT_SUFFIX"))
    link = (_config("LDSHARED") + objects + ["-o", target, "-pthread",
            "-Wl,--version-script=" + os.path.join(ROOT, "python", "obmem.map"),
            "-lm", "-ldl"])
    subprocess.run(link, check=True)
    for source in MODULE_PYTHON:
        shutil.copy(os.path.join(ROOT, source), out_dir)
    os.makedirs(os.path.join(out_dir, "obmem"), exist_ok=True)
    for source in PACKAGE_PYTHON:
        shutil.copy(os.path.join(ROOT, source), os.path.join(out_dir, "obmem"))
    return target


def _tag():
    impl = "cp%d%d" % sys.version_info[:2]
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return "%s-%s-%s" % (impl, impl, platform)


def _metadata():
    return ("Metadata-Version: 2.1\nName: obmem\nVersion: %s\nRequires-Python: >=3.11\n"
            "Summary: CPython's allocator on obmem, its statistics, and real object footprints\n"
            % version())


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d\n" % (name, digest, len(data))


# ---- PEP 517 hooks ------------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = "obmem-%s.dist-info" % version()
    os.makedirs(os.path.join(metadata_directory, info), exist_ok=True)
    with open(os.path.join(metadata_directory, info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    module = build_module(tempfile.mkdtemp(prefix="obmem-module-"))
    info = "obmem-%s.dist-info" % version()
    wheel_name = "obmem-%s-%s.whl" % (version(), _tag())
    with open(module, "rb") as f:
        files = {os.path.basename(module): f.read()}
    for source in MODULE_PYTHON:
        files[os.path.basename(source)] = _read(source).encode()
    for source in PACKAGE_PYTHON:
        files["obmem/" + os.path.basename(source)] = _read(source).encode()
    files[info + "/METADATA"] = _metadata().encode()
    files[info + "/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: obmem build_backend\n"
                              "Root-Is-Purelib: false\nTag: %s\n" % _tag()).encode()
    record = "".join(_record_line(name, data) for name, data in files.items())
    record += info + "/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(info + "/RECORD", record)
    return wheel_name


if __name__ == "__main__":
    print(build_module(sys.argv[1] if len(sys.argv) > 1 else "."))
