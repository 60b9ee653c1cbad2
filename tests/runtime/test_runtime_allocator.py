"""The `dermlens` command re-executes itself with jemalloc (purging off) when it can, and only then."""
import subprocess
import sys

import pytest

from dermlens import runtime


def test_no_library_means_no_reexec(monkeypatch):
    monkeypatch.setattr(runtime, "jemalloc_path", lambda: None)
    assert runtime.allocator_environment({"PATH": "/bin"}) is None


def test_opt_out_and_already_preloaded_are_respected(monkeypatch):
    monkeypatch.setattr(runtime, "jemalloc_path", lambda: "/lib/libjemalloc.so.2")
    assert runtime.allocator_environment({"DERMLENS_NO_JEMALLOC": "1"}) is None
    assert runtime.allocator_environment({"LD_PRELOAD": "/lib/libjemalloc.so.2"}) is None


def test_environment_preloads_jemalloc_and_keeps_user_settings(monkeypatch):
    monkeypatch.setattr(runtime, "jemalloc_path", lambda: "/lib/libjemalloc.so.2")
    env = runtime.allocator_environment({"LD_PRELOAD": "/lib/other.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"].split(":") == ["/lib/libjemalloc.so.2", "/lib/other.so"]
    assert env["MALLOC_CONF"] == runtime.JEMALLOC_CONF
    assert env["PATH"] == "/bin"
    env = runtime.allocator_environment({"MALLOC_CONF": "narenas:1"})
    assert env["MALLOC_CONF"] == "narenas:1"  # a user's own tuning wins


@pytest.mark.skipif(runtime.jemalloc_path() is None, reason="libjemalloc2 not installed")
def test_console_entry_point_reexecutes_into_a_working_command():
    # main() replaces the process by `python -m dermlens ...` under jemalloc; the re-executed command must still work.
    code = "import sys; sys.argv = ['dermlens', 'taxonomy', 'show']; from dermlens.cli import main; main()"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "malignant_melanocytic" in out.stdout
