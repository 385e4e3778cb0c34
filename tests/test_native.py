"""Building the C++ custom calls: cached by source, and failures name the fix."""

import pytest

from vit_jax.kernels import native


def test_build_is_cached_per_source(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "kernel.cc"
    source.write_text('extern "C" int Answer() { return 42; }\n')
    library = native.build(source, "config.attention='cpu'")
    assert library.exists() and library.parent == tmp_path / "cache"
    assert native.build(source, "config.attention='cpu'") == library  # Reused.
    source.write_text('extern "C" int Answer() { return 43; }\n')
    assert native.build(source, "config.attention='cpu'") != library  # A new source, a new build.


def test_missing_compiler_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    source = tmp_path / "kernel.cc"
    source.write_text("int x;\n")
    with pytest.raises(RuntimeError, match=r"config.attention=.cpu. compiles .* apt install g\+\+"):
        native.build(source, "config.attention='cpu'")


def test_a_failed_build_shows_the_command_and_the_compiler_output(tmp_path, monkeypatch):
    monkeypatch.setenv("VIT_JAX_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "broken.cc"
    source.write_text("this is not C++\n")
    with pytest.raises(RuntimeError, match=r"(?s)building broken.cc failed:.*-march=native.*error"):
        native.build(source, "config.attention='cpu'")
    assert list((tmp_path / "cache").iterdir()) == []  # No partial library left behind.
