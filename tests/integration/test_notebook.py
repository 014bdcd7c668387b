"""SSHCluster in a real Jupyter kernel: the start-up progress is a notebook output.

A small notebook is executed by nbclient in a real IPython kernel (the one a
user's notebook runs in): it starts a cluster on the bed, computes with a
Client and closes it, then does the same with ``progress=False``. The saved
outputs are what a user would see after the run.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import pytest

from sshdeploy import testbed

pytestmark = pytest.mark.timeout(300)

nbclient = pytest.importorskip("nbclient", reason="needs nbclient (the test extra)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (the test extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (the test extra)")

ROOT = Path(__file__).resolve().parents[2]
n1, n2, n3, _ = testbed.host_names(4, os.environ.get("SSHDEPLOY_TEST_BED", testbed.DEFAULT_NAME))
TITLE = "SSHCluster: starting on"


def _start_cell(hosts: list[str], options: dict[str, object], progress: str) -> str:
    return f"""\
import sshdeploy
from distributed import Client
from sshdeploy import SSHCluster
cluster = SSHCluster({hosts!r}, connect_options={options!r}{progress})
client = Client(cluster)
print("sum:", client.submit(sum, [1, 2, 3]).result(), "from", sshdeploy.__file__)
"""


_CLOSE_CELL = "client.close()\ncluster.close()\nprint('closed:', cluster.status.name)\n"


def _failing_cell(hosts: list[str], options: dict[str, object]) -> str:
    return f"SSHCluster({hosts!r}, connect_options={options!r})\n"


def _async_cell(hosts: list[str], options: dict[str, object]) -> str:
    return f"""\
async with SSHCluster({hosts!r}, connect_options={options!r}, asynchronous=True) as acluster:
    async with Client(acluster, asynchronous=True) as aclient:
        print("async sum:", await aclient.submit(sum, [4, 5]))
"""


def _html_text(output: dict[str, Any]) -> str:
    """The text of an output's HTML (tags dropped), or "" without HTML."""
    markup = output.get("data", {}).get("text/html", "")
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def _stream(outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_the_start_shows_in_the_notebook_unless_turned_off(bed: testbed.Bed) -> None:
    options = bed.connect_options()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(_start_cell([n1, n2, n3], options, "")),
        nbformat.v4.new_code_cell(_CLOSE_CELL),
        nbformat.v4.new_code_cell(_start_cell([n1, n2], options, ", progress=False")),
        nbformat.v4.new_code_cell(_CLOSE_CELL),
        nbformat.v4.new_code_cell(_failing_cell([n1, f"{n2}:2"], options),  # nothing on port 2
                                  metadata={"tags": ["raises-exception"]}),
        nbformat.v4.new_code_cell(_async_cell([n1, n3], options)),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=120, startup_timeout=60, kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # the kernel imports this tree's sshdeploy
    )
    client.execute()  # shuts the kernel down at the end, whatever happens

    shown, _, off, _, failed, awaited = (cell.outputs for cell in nb.cells)
    assert f"sum: 6 from {ROOT}" in _stream(shown)
    assert "closed: closed" in _stream(nb.cells[1].outputs)
    progress = [o for o in shown if TITLE in _html_text(o)]
    assert len(progress) == 1, "one output, updated in place"
    assert progress[0]["output_type"] == "display_data"
    assert progress[0]["data"]["text/html"].startswith("<pre")  # rich's HTML
    final = _html_text(progress[0])
    for host in (n1, n2, n3):
        assert re.search(rf"@{host}(:\d+)?\s.*\bready\b", final), f"{host} not ready:\n{final}"
    assert "workers 2/2 ready" in final and "started in" in final

    assert "sum: 6" in _stream(off)
    assert not [o for o in off if "data" in o], "progress=False displayed something"
    assert "closed: closed" in _stream(nb.cells[3].outputs)

    # A start that fails ends on the failed host, its error and why the start failed.
    assert any(o["output_type"] == "error" and o["ename"] == "ConnectError" for o in failed)
    final = "".join(_html_text(o) for o in failed if TITLE in _html_text(o))
    assert re.search(rf"@{n2}:2\s.*\bfailed\b.*connection refused", final), final
    assert "start failed after" in final

    # The asynchronous cluster (top-level await in the kernel) shows the same.
    assert "async sum: 9" in _stream(awaited)
    final = "".join(_html_text(o) for o in awaited if TITLE in _html_text(o))
    assert re.search(rf"@{n3}(:\d+)?\s.*\bready\b", final) and "started in" in final, final
