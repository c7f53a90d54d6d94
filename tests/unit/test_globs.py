"""Globs as models write them: names at any depth, ``**`` across directories, choices."""

from __future__ import annotations

import pytest

from actors.workspace.globs import BadGlob, compile_glob


@pytest.mark.parametrize(("glob", "yes", "no"), [
    ("*.py", ["a.py", "src/a.py", "src/deep/b.py"], ["a.pyc", "src/a.txt"]),
    ("src/*.py", ["src/a.py"], ["src/deep/b.py", "a.py", "lib/src/a.py"]),
    ("src/**/*.py", ["src/a.py", "src/deep/b.py", "src/x/y/z.py"], ["a.py", "lib/a.py"]),
    ("**/test_*.py", ["test_a.py", "tests/test_a.py", "a/b/test_c.py"], ["tests/a_test.py"]),
    ("src/**", ["src/a.py", "src/x/y"], ["srcx/a.py", "a/src/b"]),
    ("*.{py,md}", ["a.py", "docs/b.md"], ["c.txt"]),
    ("file?.txt", ["file1.txt", "d/fileA.txt"], ["file10.txt"]),
    ("[ab]*.py", ["a1.py", "b.py"], ["c.py"]),
    ("[!ab]*.py", ["c.py"], ["a.py"]),
    ("./src/*.py", ["src/a.py"], ["a.py"]),
    ("/src/*.py", ["src/a.py"], ["x/src/a.py"]),
    ("a.b+c(d).py", ["a.b+c(d).py"], ["aXb+c(d).py"]),
])
def test_glob_semantics(glob, yes, no):
    g = compile_glob(glob)
    assert [p for p in yes if not g.matches(p)] == []
    assert [p for p in no if g.matches(p)] == []


@pytest.mark.parametrize("bad", ["", "   ", "[abc", "{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}"])
def test_bad_globs_say_what_is_wrong(bad):
    with pytest.raises(BadGlob, match="glob"):
        compile_glob(bad)
