"""What a local cell is made of, as data: its components' command lines, its KWOK nodes and the
scheduler's configuration. Nothing here starts a process or talks to the API.

Every component is a plain host process started from the cached upstream binaries (cell.upstream)
or this Python (the extensions), listening on loopback on ports picked free at `cell up`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template
from typing import Any

import yaml

from cell import pki, upstream
from cell.errors import CellError
from cell.names import KWOK_NODE_ANNOTATION, RACK_LABEL, ZONE_LABEL
from cell.state import CellPaths, CellRecord, Component

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "cluster"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
ZONES = ("zone-a", "zone-b", "zone-c")
RACKS_PER_ZONE = 2
NODE_CAPACITY = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}
# Components whose absence a developer may ask for (CELL_WITHOUT=extender,webhook,operator), e.g. to
# run a stock cell; the scheduler then runs without the extender.
EXTENSIONS = ("extender", "webhook", "operator")
# The user each extension acts as: cluster/base/rbac-extensions.yaml grants each what it needs.
EXTENSION_USERS = {name: f"cell-{name}" for name in EXTENSIONS}
PORTS = ("etcd", "etcd_peer", "etcd_metrics", "apiserver", "controller_manager", "scheduler", "kwok", "extender",
         "webhook", "operator")


def check_without(without: tuple[str, ...]) -> list[str]:
    unknown = sorted(set(without) - set(EXTENSIONS))
    if unknown:
        raise CellError(f"CELL_WITHOUT names unknown extensions {unknown}; known: {', '.join(EXTENSIONS)}")
    return list(without)


def enabled_extensions(record: CellRecord) -> list[str]:
    return [name for name in EXTENSIONS if name not in record.without]


def _ports(paths: CellPaths, record: CellRecord) -> dict[str, int]:
    missing = [name for name in PORTS if name not in record.ports]
    if missing:
        raise CellError(f"the cell at {paths.root} was made by an older Cell (its record has no port for "
                        f"{', '.join(missing)}): run `cell down`, then `cell up`")
    return record.ports


def extender_url(record: CellRecord) -> str:
    return f"https://127.0.0.1:{record.ports['extender']}"


def components(paths: CellPaths, record: CellRecord) -> list[Component]:
    """The cell's own components in start order (a real node's come after them)."""
    p, ports, bins = paths, _ports(paths, record), Path(record.bin_dir)
    pki_dir, etcd_pki = p.pki_dir, p.pki_dir / pki.ETCD_DIR
    etcd_url = f"https://127.0.0.1:{ports['etcd']}"
    peer_url = f"https://127.0.0.1:{ports['etcd_peer']}"
    py = sys.executable
    comps = [
        Component("etcd", [
            str(bins / "etcd"), "--name=cell", f"--data-dir={p.etcd_data}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=cell={peer_url}",
            # As kubeadm runs it: TLS both ways, clients and peers shown by etcd's own CA.
            f"--cert-file={etcd_pki / 'server.crt'}", f"--key-file={etcd_pki / 'server.key'}",
            "--client-cert-auth=true", f"--trusted-ca-file={etcd_pki / 'ca.crt'}",
            f"--peer-cert-file={etcd_pki / 'peer.crt'}", f"--peer-key-file={etcd_pki / 'peer.key'}",
            "--peer-client-cert-auth=true", f"--peer-trusted-ca-file={etcd_pki / 'ca.crt'}",
            # /health and /metrics only, plain HTTP on loopback (kubeadm's probe does the same).
            f"--listen-metrics-urls=http://127.0.0.1:{ports['etcd_metrics']}",
            "--log-level=warn", "--quota-backend-bytes=4294967296",
            # A test cell is disposable: skip fsync-heavy durability for speed.
            "--unsafe-no-fsync=true",
        ], f"http://127.0.0.1:{ports['etcd_metrics']}/health"),
        Component("kube-apiserver", [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={etcd_url}", f"--etcd-cafile={etcd_pki / 'ca.crt'}",
            f"--etcd-certfile={pki_dir / (pki.APISERVER_ETCD_CLIENT + '.crt')}",
            f"--etcd-keyfile={pki_dir / (pki.APISERVER_ETCD_CLIENT + '.key')}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}", f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            # A real node's name (real-1) resolves nowhere; its InternalIP does (logs, exec).
            "--kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP",
            f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # 127.0.0.1 may not appear in Endpoints; the cell's API is reached by its URL anyway.
            "--endpoint-reconciler-type=none",
            # Borg reschedules tasks of a lost machine quickly; 300 s defaults make labs drag.
            "--default-not-ready-toleration-seconds=30", "--default-unreachable-toleration-seconds=30",
            "--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
            "--profiling=false", "--v=1",
        ], f"https://127.0.0.1:{ports['apiserver']}/readyz", "client"),
        Component("kube-controller-manager", [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
            f"--authentication-kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
            f"--authorization-kubeconfig={p.component_kubeconfig('kube-controller-manager')}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
            f"--cert-dir={p.root / 'kcm-certs'}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}", f"--root-ca-file={pki_dir / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}", f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
            "--use-service-account-credentials=true", "--leader-elect=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--allocate-node-cidrs=false",
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10", "--v=1",
        ], f"https://127.0.0.1:{ports['controller_manager']}/healthz", "insecure"),
    ]
    extensions = enabled_extensions(record)
    if "extender" in extensions:
        comps.append(Component("extender", [
            py, "-m", "scheduler_ext.extender", "--kubeconfig", str(p.component_kubeconfig("extender")),
            "--host", "127.0.0.1", "--port", str(ports["extender"]),
            "--tls-cert-file", str(pki_dir / f"{pki.EXTENDER_SERVING}.crt"),
            "--tls-key-file", str(pki_dir / f"{pki.EXTENDER_SERVING}.key"),
            "--client-ca-file", str(pki_dir / f"{pki.EXTENDER_CLIENT_CA}.crt"),
        ], f"{extender_url(record)}/healthz", "extender-client"))
    comps.append(Component("kube-scheduler", [
        str(bins / "kube-scheduler"), f"--config={p.scheduler_config}",
        f"--authentication-kubeconfig={p.component_kubeconfig('kube-scheduler')}",
        f"--authorization-kubeconfig={p.component_kubeconfig('kube-scheduler')}",
        "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
        f"--cert-dir={p.root / 'scheduler-certs'}", "--v=1",
    ], f"https://127.0.0.1:{ports['scheduler']}/healthz", "insecure"))
    comps.append(Component("kwok", [
        str(bins / "kwok"), f"--kubeconfig={p.kubeconfig}", "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--config={bins / upstream.KWOK_STAGES_FILE}", "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}", "--node-ip=10.0.0.1",
        f"--server-address=127.0.0.1:{ports['kwok']}", "--v=WARN",
    ], f"http://127.0.0.1:{ports['kwok']}/healthz"))
    if "webhook" in extensions:
        comps.append(Component("webhook", [
            py, "-m", "scheduler_ext.webhook", "--kubeconfig", str(p.component_kubeconfig("webhook")),
            "--host", "127.0.0.1",
            "--port", str(ports["webhook"]), "--tls-cert", str(pki_dir / "webhook.crt"),
            "--tls-key", str(pki_dir / "webhook.key"),
        ], f"https://127.0.0.1:{ports['webhook']}/healthz", "ca"))
    if "operator" in extensions:
        comps.append(Component("operator", [
            py, "-m", "scheduler_ext.operator", "--kubeconfig", str(p.component_kubeconfig("operator")),
            "--health-port", str(ports["operator"]),
        ], f"http://127.0.0.1:{ports['operator']}/healthz"))
    return comps


def kwok_node_manifest(name: str, index: int) -> dict[str, Any]:
    """A simulated node: KWOK keeps it Ready; zone and rack labels give Borg failure domains."""
    zone_index = (index - 1) % len(ZONES)
    rack = zone_index * RACKS_PER_ZONE + ((index - 1) // len(ZONES)) % RACKS_PER_ZONE + 1
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                "type": "kwok", ZONE_LABEL: ZONES[zone_index], RACK_LABEL: f"rack-{rack}",
            },
        },
        "spec": {},
        "status": {
            "allocatable": dict(NODE_CAPACITY),
            "capacity": dict(NODE_CAPACITY),
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": f"v{upstream.KUBERNETES_VERSION}",
                         "kubeProxyVersion": f"v{upstream.KUBERNETES_VERSION}",
                         "containerRuntimeVersion": "kwok", "kernelVersion": "", "osImage": "", "machineID": "",
                         "systemUUID": "", "bootID": ""},
            "phase": "Running",
        },
    }


def scheduler_config(paths: CellPaths, record: CellRecord) -> tuple[str, str | None]:
    """kube-scheduler's configuration file, and the extender's URL when the scheduler calls one."""
    with_extender = "extender" in enabled_extensions(record)
    name = "kube-scheduler-config.yaml" if with_extender else "kube-scheduler-stock.yaml"
    text = (CLUSTER_DIR / "scheduler" / name).read_text()
    if not with_extender:
        text = text.replace("schedulerName: stock-scheduler", "schedulerName: default-scheduler")
    url = extender_url(record)
    config_text = Template(text).safe_substitute(
        KUBECONFIG=str(paths.component_kubeconfig("kube-scheduler")), EXTENDER_URL=url)
    if not with_extender:
        return config_text, None
    # The shared file leaves HTTPS off for the cloud (see its comment); here the extender takes
    # kube-scheduler's client certificate only, so the scheduler shows it and checks the extender's.
    config = yaml.safe_load(config_text)
    (extender,) = config["extenders"]
    pki_dir = paths.pki_dir
    extender["enableHTTPS"] = True
    extender["tlsConfig"] = {"certFile": str(pki_dir / f"{pki.SCHEDULER_EXTENDER_CLIENT}.crt"),
                             "keyFile": str(pki_dir / f"{pki.SCHEDULER_EXTENDER_CLIENT}.key"),
                             "caFile": str(pki_dir / "ca.crt")}
    header = f"# Written by `cell up` from {CLUSTER_DIR / 'scheduler' / name} (its comments say why), with TLS.\n"
    return header + yaml.safe_dump(config, sort_keys=False), url


def webhook_registration(record: CellRecord, ca_bundle: str) -> str:
    """The ValidatingWebhookConfiguration that sends the API server's admissions to the cell's webhook."""
    template = (CLUSTER_DIR / "webhook" / "validating-webhook.yaml").read_text()
    return Template(template).safe_substitute(
        CA_BUNDLE=ca_bundle, WEBHOOK_URL=f"https://127.0.0.1:{record.ports['webhook']}/validate")
