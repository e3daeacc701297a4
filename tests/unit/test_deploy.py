"""deploy/ checked offline: the DaemonSet against Kubernetes' own schemas, the host mounts,
capabilities, ports and config it needs; the image build file against pyproject and the
DaemonSet; the Prometheus scrape job with promtool and by applying its relabeling to the
targets Kubernetes discovery would make of the DaemonSet's pods.

Needs: PyYAML and kubernetes-validate (PyPI; the latter bundles the JSON schemas of every
Kubernetes release it knows, so nothing is fetched), promtool (Debian package prometheus)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

import observer
from observer.host.configfile import parse_config

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
MANIFEST = os.path.join(DEPLOY, "beanwatch.yaml")
CONTAINERFILE = os.path.join(DEPLOY, "Containerfile")
SCRAPE = os.path.join(DEPLOY, "prometheus-scrape.yaml")
UNIT = os.path.join(ROOT, "packaging", "beanwatch.service")

# The oldest Kubernetes release the manifest is meant for, and the newest whose schemas
# kubernetes-validate carries.
OLDEST_KUBERNETES = "1.29"

# mount path -> (host path, read-only)
HOST_MOUNTS = {
    "/sys/fs/cgroup": ("/sys/fs/cgroup", False),      # freeze and kill write here
    "/sys/kernel/btf": ("/sys/kernel/btf", True),
    "/sys/kernel/tracing": ("/sys/kernel/tracing", True),
    "/lib/modules": ("/lib/modules", True),           # kernel headers for bcc
    "/usr/src": ("/usr/src", True),                   # where their links point
    "/run/beanwatch": ("/run/beanwatch", False),      # the frozen-cgroup ledger
}


def kubernetes_validate():
    try:
        from kubernetes_validate import utils
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install kubernetes-validate "
                    "(a test dependency of beanwatch)")
    return utils


def documents() -> dict[str, dict]:
    with open(MANIFEST) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one document of each kind"
    return by_kind


@pytest.fixture(scope="module")
def docs():
    return documents()


@pytest.fixture(scope="module")
def pod(docs):
    return docs["DaemonSet"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod):
    (c,) = pod["spec"]["containers"]
    return c


# --- the schemas --------------------------------------------------------------------------

def latest_kubernetes() -> str:
    return ".".join(kubernetes_validate().latest_version().split(".")[:2])


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_every_document_validates_strictly(docs, version):
    """Strict: a field the schema does not know (a typo such as hostPid) is an error."""
    utils = kubernetes_validate()
    version = latest_kubernetes() if version == "latest" else version
    assert set(docs) == {"ServiceAccount", "ConfigMap", "DaemonSet", "NetworkPolicy"}
    for kind, doc in docs.items():
        try:
            utils.validate(doc, version, strict=True)
        except utils.ValidationError as e:
            pytest.fail(f"{kind} does not validate against Kubernetes {version}: "
                        f"{'.'.join(map(str, e.path))}: {e.message}")


def test_the_validator_catches_a_typo(docs):
    utils = kubernetes_validate()
    broken = json.loads(json.dumps(docs["DaemonSet"]))
    broken["spec"]["template"]["spec"]["hostPid"] = broken["spec"]["template"]["spec"].pop("hostPID")
    with pytest.raises(utils.ValidationError):
        utils.validate(broken, OLDEST_KUBERNETES, strict=True)


# --- what beanwatch needs from the node -------------------------------------------------------

def test_one_pod_per_node_on_every_node(docs, pod):
    ds, spec = docs["DaemonSet"], pod["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["hostPID"] is True            # the node's /proc, pidfds and signals
    assert not spec.get("hostNetwork", False)
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]   # every taint, every effect
    assert spec["terminationGracePeriodSeconds"] >= 10      # time to thaw and detach
    namespaces = {d["metadata"]["namespace"] for d in docs.values()}
    assert namespaces == {"kube-system"}


def test_host_mounts(pod, container):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    host = {}
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        if "hostPath" in v:
            host[m["mountPath"]] = (v["hostPath"]["path"], m.get("readOnly", False))
    assert host == HOST_MOUNTS
    # Nothing else of the node: no /proc (hostPID gives the node's), no runtime socket.
    assert {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v} == {
        path for path, _ in HOST_MOUNTS.values()}
    assert volumes["state"]["hostPath"]["type"] == "DirectoryOrCreate"
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def unit_capabilities() -> set[str]:
    text = open(UNIT).read()
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.M)
    return {c.removeprefix("CAP_") for c in line.split()}


def test_capabilities_are_the_units_plus_what_systemd_otherwise_provides(container):
    sc = container["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = set(sc["capabilities"]["add"])
    # The unit gets by without these through LimitMEMLOCK= and OOMScoreAdjust=.
    assert added == unit_capabilities() | {"IPC_LOCK", "SYS_RESOURCE"}
    assert sc.get("privileged", False) is False
    assert sc["runAsUser"] == 0                 # beanwatch refuses to run as another user
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    # The API server refuses allowPrivilegeEscalation: false next to SYS_ADMIN (the
    # schemas cannot say so).
    assert not ("SYS_ADMIN" in added and sc.get("allowPrivilegeEscalation") is False)


def test_resources_are_limited_and_guaranteed(container):
    res = container["resources"]
    assert set(res["limits"]) == {"cpu", "memory"}
    # Guaranteed QoS: the kubelet's oom_score_adj is -997, below beanwatch's -900.
    assert res["requests"] == res["limits"]


def test_service_account_gets_no_token(docs, pod):
    assert docs["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]


def test_image_tag_is_this_version(container):
    assert container["image"].rsplit(":", 1)[1] == observer.__version__


# --- config and arguments --------------------------------------------------------------------

def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_config_is_the_configmaps_file_and_parses(docs, pod, container):
    args = container["args"]
    assert args[0] == "watch" and "--json" in args
    path = option(args, "--config")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    cm = docs["ConfigMap"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    # a single file (subPath), not the directory of symlinks beanwatch would refuse
    assert mount["subPath"] == os.path.basename(path)
    assert volume["configMap"]["defaultMode"] & 0o022 == 0   # not group/world writable
    parsed = parse_config(cm["data"][mount["subPath"]], source="ConfigMap beanwatch-config")
    assert parsed.cgroups and all(c.limit.action.value == "report" for c in parsed.cgroups)


def test_metrics_port_agrees_everywhere(pod, container):
    (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
    env = {e["name"]: e["value"] for e in container["env"]}
    listen = option(container["args"], "--metrics")
    host, _, var = listen.rpartition(":")
    assert var == "$(METRICS_PORT)" and host == "0.0.0.0"   # expanded by the kubelet
    assert int(env["METRICS_PORT"]) == port["containerPort"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"]
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == "metrics" and probe["path"] == annotations["prometheus.io/path"]


def test_metrics_on_every_address_only_behind_a_network_policy(docs, pod, container):
    """0.0.0.0 in the pod's namespace means any pod of the cluster could read what every
    cgroup of the node holds: only with a NetworkPolicy that selects these pods and lets in
    nothing but a named scraper on the metrics port (and no egress)."""
    host = option(container["args"], "--metrics").rpartition(":")[0]
    assert not pod["spec"].get("hostNetwork", False)
    if host in ("127.0.0.1", "::1", "[::1]"):
        return
    policy = docs["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec.get("egress", []) == []
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"], "an empty 'from' lets everyone in"
    for peer in rule["from"]:
        assert "ipBlock" not in peer
        assert peer.get("namespaceSelector", {}).get("matchLabels")
        assert peer.get("podSelector", {}).get("matchLabels")
    # the reason is written next to the binding
    text = open(MANIFEST).read()
    assert "NetworkPolicy beanwatch-metrics" in text


# --- the image build file --------------------------------------------------------------------

def instructions(path: str = CONTAINERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line runs off the end"
    return out


def test_containerfile_builds_on_debian_bookworm_with_distribution_bcc():
    steps = instructions()
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    froms = [a.split()[0].replace("${DEBIAN_RELEASE}", args["DEBIAN_RELEASE"])
             for w, a in steps if w == "FROM"]
    assert froms and all(f.startswith("debian:bookworm") for f in froms)
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM"):]
    packages = set()
    for w, a in final:
        for m in re.finditer(r"apt-get install ([^&;]*)", a if w == "RUN" else ""):
            packages |= {p for p in m.group(1).split() if not p.startswith("-")}
    assert {"python3-bpfcc", "python3-venv", "util-linux"} <= packages
    # kernel headers come from the node; bpftool is not needed at run time
    assert not {p for p in packages if p.startswith("linux-headers") or p == "bpftool"}


def test_containerfile_copies_what_pyproject_builds_from():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    setuptools = project["tool"]["setuptools"]
    dirs = setuptools.get("package-dir", {})
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {dirs.get(p, p.replace(".", "/")) for p in setuptools["packages"]}
    needed = {n for n in needed if not any(n.startswith(o + "/") for o in needed)}
    copied = set()
    for w, a in instructions():
        if w == "COPY" and not a.startswith("--from"):
            copied |= set(a.split()[:-1])
    assert needed <= copied, needed - copied
    for src in copied:
        assert os.path.exists(os.path.join(ROOT, src)), src


def exec_form(steps, word) -> list[str]:
    (a,) = [a for w, a in steps if w == word]
    value = json.loads(a)   # exec form: signals reach beanwatch, not a shell
    assert isinstance(value, list)
    return value


def test_image_runs_beanwatch_in_the_nodes_cgroup_namespace(container):
    steps = instructions()
    entry, cmd = exec_form(steps, "ENTRYPOINT"), exec_form(steps, "CMD")
    assert entry == ["nsenter", "--cgroup=/proc/1/ns/cgroup", "--", "beanwatch"]
    assert cmd == ["watch", "--config", "/etc/beanwatch/beanwatch.toml", "--json",
                   "--metrics", "127.0.0.1:9638"]   # by hand: loopback
    # The DaemonSet's args are the image's CMD with the port as a parameter, on the pod's
    # address (behind its NetworkPolicy).
    env = {e["name"]: e["value"] for e in container["env"]}
    args = [a.replace("$(METRICS_PORT)", env["METRICS_PORT"]) for a in container["args"]]
    assert args == [a.replace("127.0.0.1:", "0.0.0.0:") for a in cmd]
    assert "command" not in container   # the entrypoint (nsenter) stays


def cli_params(args: list[str]) -> dict:
    """The options as beanwatch's own command line parses them (callbacks included),
    without running the command."""
    from observer.app.cli import cli
    command = cli.commands[args[0]]
    return command.make_context(args[0], list(args[1:])).params


def test_beanwatch_accepts_the_image_and_daemonset_command_lines(container):
    cmd = exec_form(instructions(), "CMD")
    env = {e["name"]: e["value"] for e in container["env"]}
    for args in (cmd, [a.replace("$(METRICS_PORT)", env["METRICS_PORT"]) for a in container["args"]]):
        params = cli_params(args)
        assert params["config_path"] == "/etc/beanwatch/beanwatch.toml"
        assert params["as_json"] is True
        assert params["metrics_addr"].endswith(f":{env['METRICS_PORT']}")


def test_nsenter_knows_the_cgroup_option():
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        pytest.fail("nsenter is missing (Debian package util-linux)")
    res = subprocess.run([nsenter, "--help"], capture_output=True, text=True, timeout=30)
    assert "--cgroup" in res.stdout


# --- the Prometheus scrape job ----------------------------------------------------------------

def scrape_job() -> dict:
    with open(SCRAPE) as f:
        config = yaml.safe_load(f)
    (job,) = config["scrape_configs"]
    return job


def _label_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discovered_targets(pod: dict, namespace: str, pod_ip: str = "10.1.2.3") -> list[dict]:
    """The labels Kubernetes service discovery (role: pod) gives each container port of a
    pod, as Prometheus documents them."""
    meta = pod["metadata"]
    base = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": meta.get("name", "beanwatch-x7k2p"),
        "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_ip": pod_ip,
        "__scheme__": "http",
        "__metrics_path__": "/metrics",
    }
    for k, v in meta.get("labels", {}).items():
        base["__meta_kubernetes_pod_label_" + _label_name(k)] = v
    for k, v in meta.get("annotations", {}).items():
        base["__meta_kubernetes_pod_annotation_" + _label_name(k)] = v
    targets = []
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            t = dict(base, __address__=f"{pod_ip}:{p['containerPort']}")
            t["__meta_kubernetes_pod_container_name"] = c["name"]
            t["__meta_kubernetes_pod_container_port_name"] = p.get("name", "")
            t["__meta_kubernetes_pod_container_port_number"] = str(p["containerPort"])
            targets.append(t)
    return targets


def relabel(labels: dict, rules: list[dict]) -> dict | None:
    """Prometheus relabeling for the actions the job uses (keep, drop, replace)."""
    labels = dict(labels)
    for r in rules:
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        match = re.fullmatch(str(r.get("regex", "(.*)")), value)
        action = r.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            out = re.sub(r"\$\{?(\d+)\}?", lambda m: match.group(int(m.group(1))) or "",
                         r.get("replacement", "$1"))
            if out:
                labels[r["target_label"]] = out
            else:
                labels.pop(r["target_label"], None)
        assert action in ("keep", "drop", "replace"), action
    return labels


def test_scrape_job_keeps_exactly_beanwatchs_metrics_port(pod):
    job = scrape_job()
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == ["kube-system"]
    ours = json.loads(json.dumps(pod))
    ours["spec"]["containers"][0]["ports"].append(
        {"name": "debug", "containerPort": 6060})   # another port of the same pod
    other = {"metadata": {"labels": {"app.kubernetes.io/name": "node-exporter"},
                          "annotations": {"prometheus.io/scrape": "true"}},
             "spec": {"containers": [{"name": "x", "ports": [{"name": "metrics",
                                                                "containerPort": 9100}]}]}}
    kept = [t for t in (relabel(t, job["relabel_configs"])
                        for t in discovered_targets(ours, "kube-system")
                        + discovered_targets(other, "kube-system", "10.9.9.9")) if t]
    assert len(kept) == 1
    (t,) = kept
    assert t["__address__"] == "10.1.2.3:9638"
    assert t["__metrics_path__"] == "/metrics"
    assert t["node"] == "node-1" and t["namespace"] == "kube-system"


def test_scrape_job_passes_promtool(tmp_path):
    """promtool checks everything but the discovery block: Debian's Prometheus is built
    without Kubernetes discovery ("field kubernetes_sd_configs not found"), so the check
    runs on a copy where a static target stands in for it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install the Debian package prometheus")
    with open(SCRAPE) as f:
        config = yaml.safe_load(f)
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9638"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    res = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # and the check can fail
    config["scrape_configs"][0]["relabel_configs"][0]["action"] = "kep"
    path.write_text(yaml.safe_dump(config))
    res = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0 and "kep" in res.stdout + res.stderr


# --- the README's commands ---------------------------------------------------------------------

def test_readme_commands_name_files_that_exist():
    text = open(os.path.join(DEPLOY, "README.md")).read()
    for path in set(re.findall(r"\b(deploy/[\w.-]+|packaging/[\w.-]+|scripts/[\w.-]+)", text)):
        assert os.path.exists(os.path.join(ROOT, path)), path
    for line in re.findall(r"^\s*(?:docker|podman) build .*$", text, re.M):
        words = shlex.split(line)
        assert words[words.index("-f") + 1] == "deploy/Containerfile"
