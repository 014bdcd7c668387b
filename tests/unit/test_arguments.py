"""SSHCluster's keywords, declared once (sshdeploy.arguments): every use of them follows.

A keyword added to the signature but not to the declaration (or the other way
round), not planned, not kept by a named cluster's record, or not reachable
from the ``dask-ssh`` option the declaration names, fails a test here.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from typing import Any

import pytest

from sshdeploy import SSHCluster
from sshdeploy.arguments import KEYWORDS, ClusterArgs, Keyword
from sshdeploy.errors import ConfigError
from sshdeploy.plan import ClusterPlan, plan_cluster

pytestmark = pytest.mark.timeout(60)

BY_NAME = {kw.name: kw for kw in KEYWORDS}

#: Every keyword at its example value (each is declared with one).
EXAMPLES = ClusterArgs(**{kw.name: kw.example for kw in KEYWORDS})

#: Keywords the plan does not see, and why.
NOT_PLANNED = {
    "progress": "the notebook display of the start: read by SSHCluster itself",
    "worker_module": "deprecated: the values it accepts mean the default worker class",
}


def test_sshclusters_signature_is_the_declaration() -> None:
    """Same names, order, kinds (positional or keyword-only), defaults and types."""
    signature = dict(inspect.signature(SSHCluster.__init__).parameters)
    signature.pop("self")
    assert signature.pop("kwargs").kind is inspect.Parameter.VAR_KEYWORD
    declared = inspect.signature(ClusterArgs).parameters
    assert [(p.name, p.kind, p.default, p.annotation) for p in signature.values()] == [
        (p.name, p.kind, p.default, p.annotation) for p in declared.values()]
    assert [kw.name for kw in KEYWORDS] == list(declared)


def test_remote_commands_takes_the_same_arguments_as_sshcluster() -> None:
    (sched, worker) = SSHCluster.remote_commands(["s", "a"], None, {"nthreads": 2},
                                                 progress=False)
    assert (sched.role, worker.role, worker.options["nthreads"]) == ("scheduler", "worker", 2)
    with pytest.raises(TypeError):
        SSHCluster.remote_commands(["s", "a"], not_a_keyword=1)


def test_every_keyword_is_documented_in_sshclusters_docstring() -> None:
    doc = inspect.getdoc(SSHCluster) or ""
    documented = {name.strip() for line in doc.splitlines()
                  if (m := re.fullmatch(r"(\w+(?:, \w+)*) :.*", line))
                  for name in m.group(1).split(",")}
    assert [kw.name for kw in KEYWORDS if kw.name not in documented] == []


def test_every_keyword_is_declared_with_doc_and_an_example_other_than_its_default() -> None:
    for kw in KEYWORDS:
        assert kw.doc, kw.name
        assert kw.example != kw.default, kw.name
        assert kw.compared is False or kw.record not in ("no", "spares"), kw.name


def _plan(args: ClusterArgs) -> ClusterPlan | ConfigError:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # worker_module
            return plan_cluster(args)
    except ConfigError as err:
        return err


@pytest.mark.parametrize("kw", [kw for kw in KEYWORDS if kw.name not in NOT_PLANNED],
                         ids=lambda kw: kw.name)
def test_every_keyword_changes_the_plan(kw: Keyword) -> None:
    # Every other keyword at its example (new TLS credentials would differ each time).
    base = dataclasses.replace(EXAMPLES, security=None, worker_module=None)
    at_default = _plan(dataclasses.replace(base, **{kw.name: kw.default}))
    at_example = _plan(dataclasses.replace(base, **{kw.name: kw.example}))
    assert isinstance(at_example, ClusterPlan), at_example
    # (a keyword that cannot be left at its default beside the others is read too)
    assert at_default != at_example


@pytest.mark.parametrize(("name", "value", "message"), [
    ("hosts", ["a", None], "hosts[1]: must be a host name or Host"),
    ("connect_options", "x", "connect_options: must be a dict of asyncssh.connect keywords"),
    ("worker_options", ["x"], "worker_options: must be a dict of keywords"),
    ("scheduler_options", {"port": "x"}, "scheduler_options['port']: must be a port number"),
    ("worker_class", None, "worker_class: must be an import path"),
    ("remote_python", "", "remote_python: must be the path or name of an interpreter"),
    ("setup", 3, "setup: must be shell commands"),
    ("env", {"A": None}, "env['A']: must be a string"),
    ("inherit_config", "yes", "inherit_config: must be True or False or None"),
    ("scheduler_class", 3, "scheduler_class: must be an import path"),
    ("restart_workers", None, "restart_workers: must be True or False, got None"),
    ("forward_ports", 1, "forward_ports: must be True or False or None"),
    ("min_workers", -1, "min_workers: must be a whole number >= 0"),
])
def test_a_wrong_value_is_refused_naming_its_keyword(name: str, value: Any,
                                                      message: str) -> None:
    given = {"hosts": ["s", "a"], name: value}
    with pytest.raises(ConfigError) as info:
        ClusterArgs(**given).check()
    assert str(info.value).startswith(message), info.value
    with pytest.raises(ConfigError, match=re.escape(message)):
        SSHCluster.remote_commands(**given)


def test_kwargs_are_every_keyword_and_copies() -> None:
    args = ClusterArgs(["s", "a"], env={"A": "1"}, packages=["p"])
    kwargs = args.kwargs()
    assert list(kwargs) == [kw.name for kw in KEYWORDS]
    kwargs["env"]["B"] = "2"
    kwargs["packages"].append("q")
    assert args.env == {"A": "1"} and args.packages == ["p"]
