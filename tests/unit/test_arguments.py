"""SSHCluster's keywords, declared once (sshdeploy.arguments): every use of them follows.

A keyword added to the signature but not to the declaration (or the other way
round), not planned, not kept by a named cluster's record, or not reachable
from the ``dask-ssh`` option the declaration names, fails a test here.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from sshdeploy import SSHCluster
from sshdeploy.arguments import KEYWORDS, ClusterArgs, Keyword
from sshdeploy.errors import ConfigError
from sshdeploy.hosts import Host
from sshdeploy.named.spec import differences
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
        assert kw.compared is False or kw.record != "no", kw.name


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


# --------------------------------------------------------------------------- the named record


def test_every_keyword_survives_a_named_clusters_record() -> None:
    """Through JSON and back: what the record keeps comes back equal, the rest as default."""
    back = ClusterArgs.from_record(json.loads(json.dumps(EXAMPLES.to_record())))
    for kw in KEYWORDS:
        got = getattr(back, kw.name)
        if kw.record == "no":  # a start-time or controller-side choice, or from_name's own
            assert got == kw.default, kw.name
        elif kw.record == "spares":  # kept in the hosts, marked
            assert got is None
            assert back.hosts == [*BY_NAME["hosts"].example,
                                  *(dataclasses.replace(h, spare=True) for h in kw.example)]
        elif kw.name != "hosts":
            assert got == kw.example, kw.name


def test_what_the_record_keeps_is_declared() -> None:
    kept = {kw.name for kw in KEYWORDS if kw.record not in ("no", "spares")}
    assert set(EXAMPLES.to_record()) == kept | {"dropped"}
    # what shapes a host or a worker started later is kept (the rest is the start's own)
    assert {kw.name for kw in KEYWORDS if kw.record == "no"} == {
        "worker_module", "min_workers", "progress", "name", "shutdown_on_close",
        "initial_workers"}


def test_relative_uploads_are_recorded_as_found_from_here(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = ClusterArgs(["s", "a"], upload=["helpers.py", "pkg/"]).to_record()
    assert spec["upload"] == [str(tmp_path / "helpers.py"), str(tmp_path / "pkg")]


def test_per_host_lists_come_back_as_given() -> None:
    args = ClusterArgs(["s", "a", "b"], remote_python=["/py1", "/py2", "/py2"],
                       connect_options=[{"port": 1}, {}, {}])
    back = ClusterArgs.from_record(args.to_record())
    assert (back.remote_python, back.connect_options) == (args.remote_python,
                                                          args.connect_options)
    plain = ClusterArgs.from_record(ClusterArgs(["s", "a"]).to_record())
    assert (plain.remote_python, plain.connect_options) == (None, None)


#: A record's spec as sshdeploy 0.1.0 (43dfe21) wrote it: before it kept the environment,
#: the uploads, the login shell and inherit_config.
RECORD_0_1_0 = """{"hosts": [{"hostname": "head", "user": "alice", "port": 2222},
{"hostname": "node1", "slots": 2}, {"hostname": "spare1", "spare": true}],
"connect_options": [{"known_hosts": "/kh"}, {"known_hosts": "/kh"}, {"known_hosts": "/kh"}],
"worker_options": {"n_workers": 2, "death_timeout": "7s"}, "scheduler_options": {"port": 0},
"worker_class": "distributed.Nanny", "scheduler_class": null,
"remote_python": ["/py/a", "/py/b", "/py/b"], "setup": ["module load python", "conda activate x"],
"env": {"A": "1"}, "restart_workers": false, "security": true, "forward_ports": true,
"idle_timeout": 3600.0, "max_lifetime": null, "wanted": 2, "dropped": []}"""


def test_a_record_written_before_the_new_keywords_still_reads() -> None:
    old = json.loads(RECORD_0_1_0)
    args = ClusterArgs.from_record(old)
    assert args == ClusterArgs(
        hosts=[Host("head", "alice", 2222), Host("node1", slots=2), Host("spare1", spare=True)],
        connect_options={"known_hosts": "/kh"},
        worker_options={"n_workers": 2, "death_timeout": "7s"}, scheduler_options={"port": 0},
        remote_python=["/py/a", "/py/b", "/py/b"],
        setup=["module load python", "conda activate x"], env={"A": "1"},
        restart_workers=False, security=True, forward_ports=True, idle_timeout=3600.0)
    # Written again, it is the same cluster: a later `up` or from_name takes it over.
    assert differences(old, args.to_record()) == []


@pytest.mark.parametrize("kw", [kw for kw in KEYWORDS if kw.record not in ("no",)],
                         ids=lambda kw: kw.name)
def test_an_up_that_changes_a_compared_keyword_asks_for_another_cluster(kw: Keyword) -> None:
    if kw.name == "hosts":  # (it has no default that could be recorded)
        base, changed = EXAMPLES, dataclasses.replace(EXAMPLES, hosts=[Host("head"), Host("x")])
    else:
        base = dataclasses.replace(EXAMPLES, **{kw.name: kw.default})
        changed = dataclasses.replace(base, **{kw.name: kw.example})
    found = differences(base.to_record(), changed.to_record())
    assert bool(found) is kw.compared, (kw.name, found)
