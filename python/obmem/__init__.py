"""obmem/__init__.py — the package shim that lets `python -m obmem run ...` work.

The module obmem is a C extension (obmem.<EXT_SUFFIX>, beside this directory).  An extension
cannot be run with -m (it has no code object), a package can: so this directory, found
first by the import system, loads the extension from beside it under the name obmem, with
this directory as its __path__ (so that obmem.__main__ is found), and puts it in sys.modules
in its own place: `import obmem` gives the extension module itself, as before.
"""
import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys


def _load():
    here = _os.path.dirname(_os.path.abspath(__file__))
    parent = _os.path.dirname(here)
    for suffix in _machinery.EXTENSION_SUFFIXES:
        path = _os.path.join(parent, "obmem" + suffix)
        if _os.path.isfile(path):
            break
    else:
        raise ImportError("obmem: the extension module obmem%s is not in %s (build it: make "
                          "build, or pip install .)" % (_machinery.EXTENSION_SUFFIXES[0], parent),
                          name="obmem")
    loader = _machinery.ExtensionFileLoader("obmem", path)
    spec = _util.spec_from_file_location("obmem", path, loader=loader,
                                         submodule_search_locations=[here])
    module = _util.module_from_spec(spec)
    _sys.modules["obmem"] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del _sys.modules["obmem"]
        raise


_load()
