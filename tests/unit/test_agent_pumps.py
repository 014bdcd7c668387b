"""The line pumps (worker-side tagger, agent's log pipe) are linear in line length.

Splitting the whole buffer on every read made one 64 MiB line without a
newline take ~28 s; each pump here must pass it, in bounded pieces, well
within the tests' time limits.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable

import pytest

from sshdeploy.remote import tagger
from sshdeploy.remote.agent import protocol
from sshdeploy.remote.agent.wire import Wire

BIG = 64 * 1024 * 1024


def naive_lines(data: bytes) -> list[bytes]:
    *lines, rest = data.split(b"\n")
    return [*lines, rest] if rest else lines


@pytest.mark.parametrize("splitter_cls", [tagger.LineSplitter, protocol.LineSplitter])
def test_splitter_gives_the_lines_of_any_chunking(splitter_cls: Callable[..., object]) -> None:
    rng = random.Random(7)
    data = b"".join(rng.choice([b"a", b"bb", b"\n", b"cccc", b"\n\n"]) for _ in range(5000))
    for _ in range(20):
        s = splitter_cls(limit=1 << 30)
        out: list[bytes] = []
        i = 0
        while i < len(data):
            n = rng.randint(1, 200)
            out += s.feed(data[i:i + n])  # type: ignore[attr-defined]
            i += n
        out += s.flush()  # type: ignore[attr-defined]
        assert out == naive_lines(data)


@pytest.mark.parametrize("splitter_cls", [tagger.LineSplitter, protocol.LineSplitter])
def test_splitter_hands_out_a_long_line_in_bounded_pieces(
    splitter_cls: Callable[..., object],
) -> None:
    s = splitter_cls(limit=10)
    pieces: list[bytes] = []
    for _ in range(7):
        pieces += s.feed(b"xyz")  # type: ignore[attr-defined]
    pieces += s.feed(b"\nnext\n")  # type: ignore[attr-defined]
    assert b"".join(pieces[:-1]) == b"xyz" * 7
    assert all(len(p) <= 10 + 3 for p in pieces)
    assert pieces[-1] == b"next"


def feed_big_line(w: int) -> None:
    """Write BIG bytes without a newline to *w*, then close it."""
    chunk = b"x" * (1 << 20)
    for _ in range(BIG // len(chunk)):
        _write_all(w, chunk)
    os.close(w)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def drain(fd: int) -> bytes:
    out = []
    while data := os.read(fd, 1 << 20):
        out.append(data)
    os.close(fd)
    return b"".join(out)


@pytest.mark.timeout(20)
def test_tagger_pump_passes_a_64_mib_line_without_newline() -> None:
    src_r, src_w = os.pipe()
    out_r, out_w = os.pipe()
    prefix = tagger.line_prefix("node2-0", "stdout")
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(drain(out_r)))
    reader.start()
    writer = threading.Thread(target=feed_big_line, args=(src_w,))
    writer.start()
    tagger.pump(src_r, out_w, prefix)  # returns at EOF
    os.close(out_w)
    writer.join()
    reader.join()
    os.close(src_r)
    lines = result[0].split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert all(line.startswith(prefix) for line in lines)
    assert all(len(line) + 1 <= tagger.PIPE_BUF for line in lines)
    assert sum(len(line) - len(prefix) for line in lines) == BIG


@pytest.mark.timeout(20)
def test_agent_pump_passes_a_64_mib_line_without_newline() -> None:
    src_r, src_w = os.pipe()
    out_r, out_w = os.pipe()
    wire = Wire(out_w)
    wire.label = "node2"
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(drain(out_r)))
    reader.start()
    writer = threading.Thread(target=feed_big_line, args=(src_w,))
    writer.start()
    wire.pump_logs(src_r)  # returns at EOF
    os.close(out_w)
    writer.join()
    reader.join()
    os.close(src_r)
    total = 0
    for raw in result[0].splitlines():
        assert raw.startswith(protocol.EVENT)
        ev = json.loads(raw[len(protocol.EVENT):])
        assert ev["ev"] == "logs"
        for src, stream, line in ev["lines"]:
            assert (src, stream) == ("node2", "stderr")
            assert set(line) == {"x"} and len(line) <= 2 * protocol.MAX_LINE
            total += len(line)
    assert total == BIG


def test_agent_pump_attributes_tagged_lines() -> None:
    src_r, src_w = os.pipe()
    out_r, out_w = os.pipe()
    wire = Wire(out_w)
    wire.label = "node2"
    os.write(src_w, tagger.line_prefix("node2-0", "stdout") + b"hello\nplain\n")
    os.close(src_w)
    wire.pump_logs(src_r)
    os.close(out_w)
    (raw,) = drain(out_r).splitlines()
    assert json.loads(raw[len(protocol.EVENT):]) == {
        "ev": "logs", "lines": [["node2-0", "stdout", "hello"], ["node2", "stderr", "plain"]]}
