"""The start stages have one table (sshdeploy.stages) that every stage sent has a row in."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from sshdeploy import bootstrap, stages
from sshdeploy.remote import agent
from sshdeploy.remote.agent import protocol
from sshdeploy.views import livestatus

AGENT = Path(agent.__file__).parent


def stages_sent() -> set[str]:
    """Every stage name the remote side can send: the agent's parts, the launcher, the shell."""
    sent: set[str] = set()
    for part in agent.PARTS:
        module = importlib.import_module(f"{agent.__name__}.{part}")
        tree = ast.parse((AGENT / f"{part}.py").read_text())
        for node in ast.walk(tree):  # wire.emit(ev="stage", stage=X): X a literal or a constant
            if isinstance(node, ast.Call):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if kw.get("ev") == "'stage'":
                    name = kw["stage"]
                    sent.add(ast.literal_eval(name) if name[0] in "'\""
                             else getattr(module, name))
    found = re.compile(r'\\?"stage\\?": \\?"(\w+)')
    sent.update(found.findall(bootstrap.program_text("launcher", one_line=True)))
    sent.update(found.findall(bootstrap.build_command("python3", setup="true")))
    return sent


def test_every_stage_the_remote_side_sends_has_a_row() -> None:
    sent = stages_sent()
    assert {"login", "setup", "python", "import"} <= sent  # the scan finds them all
    assert sent == set(protocol.STAGES)
    assert sent <= {s.name for s in stages.STAGES}


def test_the_table_and_the_agent_list_the_stages_in_the_same_order() -> None:
    assert tuple(s.name for s in stages.STAGES[1:]) == protocol.STAGES
    assert stages.STAGES[0] is stages.BEFORE_ANY and stages.BEFORE_ANY.name is None


def test_every_stage_state_is_a_host_state_the_live_status_orders() -> None:
    assert livestatus.STATE_ORDER == stages.HOST_STATES
    assert {s.state for s in stages.STAGES} <= set(stages.HOST_STATES)
    assert len(set(stages.HOST_STATES)) == len(stages.HOST_STATES)


def test_every_remedy_formats_with_the_launch_fields() -> None:
    for s in stages.STAGES:
        assert s.remedy.format(setup="conda activate x", python="python3")
        assert s.stalled and s.state


def test_an_unknown_stage_counts_as_before_any() -> None:
    assert stages.stage_info("forkserver") is stages.BEFORE_ANY
    assert stages.stage_info(None) is stages.BEFORE_ANY
