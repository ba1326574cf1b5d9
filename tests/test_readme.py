"""Every ```python block of README.md runs, so the README cannot drift from the code.

Each block is executed on its own, in a fresh namespace (a README reader pastes one block at a
time), in this process under a wall-clock limit (``SIGALRM``), with one torch thread and a
fresh Pyro parameter store. A failure names the block's index and the README line that
raised: the block is compiled with its README line numbers, so the traceback points into
README.md.
"""

from __future__ import annotations

import ast
import re
import signal
import threading
import traceback
from pathlib import Path

import pyro
import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

#: Wall-clock limit per block (s), to catch a hang: the blocks take 5-60 s on a loaded 2-core box.
TIME_LIMIT_S = 300

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def readme_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown ``text`` as ``(first code line, source)`` pairs.

    Line numbers are 1-based lines of ``text``: the line after the opening fence.
    """
    blocks = []
    for match in _FENCE.finditer(text):
        first = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first, match.group(1)))
    return blocks


def test_readme_blocks_found():
    """The extractor sees the blocks that are there (a broken regex would pass every block)."""
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\nc = 3\n```\n"
    assert readme_blocks(text) == [(3, "a = 1\n"), (9, "b = 2\nc = 3\n")]
    assert len(readme_blocks(README.read_text(encoding="utf-8"))) >= 2


class _BlockTimeout(Exception):
    """A README block ran past :data:`TIME_LIMIT_S`."""


def _on_alarm(signum, frame):
    raise _BlockTimeout(f"ran longer than {TIME_LIMIT_S} s")


_BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture
def _quiet_torch():
    """One torch thread (small tensors; shared CI machine), a fresh Pyro parameter store."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        pyro.clear_param_store()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("index", "line", "source"),
    [(i, line, src) for i, (line, src) in enumerate(_BLOCKS)],
    ids=[f"block{i}-line{line}" for i, (line, _) in enumerate(_BLOCKS)],
)
def test_readme_block_runs(index, line, source, _quiet_torch):
    # pad so that the compiled code carries README.md's own line numbers
    code = compile("\n" * (line - 1) + source, str(README), "exec")
    namespace = {"__name__": f"readme_block_{index}"}
    use_alarm = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(TIME_LIMIT_S)
    failure = None
    try:
        exec(code, namespace)  # the README's own code, on purpose
    except Exception as exc:  # report any failure with its README line
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(README)]
        where = f"README.md line {frames[-1].lineno}" if frames else f"block starting line {line}"
        failure = (
            f"README python block {index} (starts at README.md line {line}) failed at {where}: "
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        )
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    # it ran to its end: every name the block binds at top level is bound
    bound = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign | ast.AnnAssign)
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(t, ast.Name)}
    assert bound <= set(namespace), f"README block {index} left unbound: {bound - set(namespace)}"
