"""docs/seed.md: every code block on the page runs, in order, in one namespace (as a reader
pastes them one after another), and the history it gives is the corrected one."""

import re
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

PAGE = Path(__file__).resolve().parents[1] / "docs" / "seed.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str]]:
    return FENCE.findall(PAGE.read_text(encoding="utf-8"))


def test_every_code_block_is_python():
    blocks = _blocks()
    assert len(blocks) >= 10
    assert [lang for lang, _ in blocks if lang.strip() != "python"] == []


@pytest.mark.slow
def test_every_code_block_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")          # the digits come from scikit-learn's copy
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "seed_doc"}
    with threadpool_limits(1):
        for i, (_, code) in enumerate(_blocks()):
            try:
                exec(compile(code, f"docs/seed.md block {i + 1}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"docs/seed.md code block {i + 1} failed: "
                                     f"{type(e).__name__}: {e}\n{code}") from e
    out = capsys.readouterr().out
    assert "mistakes per epoch" in out and "weight on step 0" in out


@pytest.mark.parametrize("fact", [
    "1943 | Warren McCulloch & Walter Pitts", "1958 | Frank Rosenblatt",
    "1969 | Marvin Minsky & Seymour Papert",
    "1986 | David Rumelhart, Geoffrey Hinton & Ronald Williams", "1989 | Yann LeCun et al.",
    "1990 | Jeffrey Elman", "1997 | Sepp Hochreiter & Jürgen Schmidhuber",
    "1998 | Yann LeCun, Léon Bottou, Yoshua Bengio & Patrick Haffner",
    "2014 | Dzmitry Bahdanau, Kyunghyun Cho & Yoshua Bengio", "2017 | Ashish Vaswani et al.",
])
def test_history_rows(fact):
    assert f"| {fact} |" in PAGE.read_text(encoding="utf-8")
