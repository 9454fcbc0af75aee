"""Benchmark hook of benchmarks/bench_pipeline.py: where a pipeline command's time goes.

Python imports this module at start-up when its directory is on PYTHONPATH (the benchmark's PORTAL_PYTHON wrapper
adds it). With PIPELINE_BENCH_TIMINGS set, the public methods (and `with`) of integrations.vcenter.VcenterClient
and integrations.f5.F5Client, and pipeline.portal.PortalClient's requests to the portal, are timed once their
module is imported, whichever checkout's code imports it (this one or the baseline's); at exit (os._exit too) the
process appends one line to that file: "pid vcenter f5 portal alive argv", the seconds inside each client's calls
and from this hook's start to the exit. A call inside another timed call counts once. Nothing is imported here
that the command would not import anyway, so a command that talks to none of them pays only these few lines.
"""

import os
import sys
import time

_PATH = os.environ.get("PIPELINE_BENCH_TIMINGS")
_STARTED = time.monotonic()
_CLASSES = {
    "integrations.vcenter": ("VcenterClient", "vcenter"),
    "integrations.f5": ("F5Client", "f5"),
    "pipeline.portal": ("PortalClient", "portal"),
}
_totals = {"vcenter": 0.0, "f5": 0.0, "portal": 0.0}
_depth = [0]
_function = type(lambda: None)


def _timed(system, fn):
    def timed(*args, **kwargs):
        if _depth[0]:
            return fn(*args, **kwargs)
        _depth[0] += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _depth[0] -= 1
            _totals[system] += time.perf_counter() - started

    return timed


def _patch(module, name):
    class_name, system = _CLASSES[name]
    cls = getattr(module, class_name)
    names = {
        attr
        for klass in cls.__mro__[:-1]
        for attr, value in vars(klass).items()
        if isinstance(value, _function) and (not attr.startswith("_") or attr in ("__enter__", "__exit__"))
    }
    for attr in names:
        setattr(cls, attr, _timed(system, getattr(cls, attr)))


class _Finder:
    @staticmethod
    def find_spec(name, path, target=None):
        if name not in _CLASSES:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(module, name)

        spec.loader.exec_module = exec_module
        return spec


def _write():
    seconds = " ".join(f"{_totals[system]:.6f}" for system in ("vcenter", "f5", "portal"))
    line = f"{os.getpid()} {seconds} {time.monotonic() - _STARTED:.6f} {' '.join(sys.argv[1:])}\n"
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _exit_written(code):
    _write()
    _os_exit(code)


if _PATH:
    import atexit

    sys.meta_path.insert(0, _Finder)
    atexit.register(_write)
    _os_exit = os._exit  # a command that leaves with os._exit (no atexit handlers) writes its line first
    os._exit = _exit_written
