"""The real node's configuration, as kubeadm would write it: pure functions of where the node keeps
its files (RealNodePaths) and what the cell recorded of it (RealNodeRecord). Nothing here touches
the machine; tests/unit/cell/test_realnode_config.py checks it without root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cell.localcell.topology import RACKS_PER_ZONE, ZONES
from cell.names import RACK_LABEL, REAL_LABEL, ZONE_LABEL
from cell.state import CellPaths, Component, RealNodeRecord

NODE_NAME = "real-1"
TAINT = f"{REAL_LABEL}=true:NoSchedule"
POD_CIDR = "10.245.0.0/24"  # beside the KWOK nodes' 10.244.0.0/16, which is never routed
BRIDGE = "cell0"
CNI_NETWORK = "cell"
COMPONENTS = ("containerd", "kubelet", "kube-proxy")
PORTS = ("kubelet", "kubelet_healthz", "containerd_metrics", "kube_proxy_healthz", "kube_proxy_metrics")
# A unix socket path must fit sockaddr_un (108 bytes with its terminator).
MAX_SOCKET_PATH = 100


class RealNodePaths:
    """The node's files, all inside the cell's state directory (the kubelet's root-dir too)."""

    def __init__(self, paths: CellPaths) -> None:
        self.cell_paths = paths
        self.root = paths.root / "realnode"
        self.containerd_config = self.root / "containerd" / "config.toml"
        self.containerd_root = self.root / "containerd" / "root"
        self.containerd_state = self.root / "containerd" / "state"
        self.containerd_socket = self.root / "containerd.sock"
        self.runc_root = self.root / "runc"
        self.cni_conf_dir = self.root / "cni" / "net.d"
        self.cni_ipam_dir = self.root / "cni" / "ipam"
        self.kubelet_root = self.root / "kubelet"
        self.kubelet_config = self.root / "kubelet.yaml"
        self.kube_proxy_config = self.root / "kube-proxy.yaml"
        self.pod_logs = self.root / "pod-logs"
        self.pki = self.root / "pki"
        self.images = self.root / "images"
        self.crictl_config = self.root / "crictl.yaml"
        self.kubelet_kubeconfig = paths.component_kubeconfig("kubelet")
        self.kube_proxy_kubeconfig = paths.component_kubeconfig("kube-proxy")
        self.ansible_dir = paths.logs_dir / "realnode-ansible"
        self.images_log = paths.log("realnode-images")


def node_record(node_ip: str, ports: dict[str, int], paths: CellPaths, bin_dir: Path) -> RealNodeRecord:
    """The node as the cell records it: in the first zone, on a rack past the KWOK racks (a machine
    of its own), with its components, which the cell runs after its own."""
    real = RealNodeRecord(node=NODE_NAME, node_ip=node_ip, zone=ZONES[0],
                          rack=f"rack-{len(ZONES) * RACKS_PER_ZONE + 1}", ports=dict(ports))
    real.components = components(RealNodePaths(paths), real, bin_dir)
    return real


def role_extravars(rp: RealNodePaths, real: RealNodeRecord | None, bin_dir: Path) -> dict[str, Any]:
    """Where this cell's node keeps containerd's and the CNI's files; the rest is in the local inventory."""
    metrics_port = real.ports.get("containerd_metrics") if real else None
    return {
        "cell_containerd_socket": f"unix://{rp.containerd_socket}",
        "container_runtime_config_path": str(rp.containerd_config),
        "container_runtime_root_dir": str(rp.containerd_root),
        "container_runtime_state_dir": str(rp.containerd_state),
        "container_runtime_runc_root": str(rp.runc_root),
        "container_runtime_metrics_address": f"127.0.0.1:{metrics_port}" if metrics_port else "",
        "cell_cni_conf_dir": str(rp.cni_conf_dir),
        "node_crictl_config_path": str(rp.crictl_config),
        "node_local_bin_dir": str(bin_dir),
    }


def kubelet_config(rp: RealNodePaths, real: RealNodeRecord) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",  # containerd 1.6 on cgroup v1 without systemd (SystemdCgroup = false)
        "containerRuntimeEndpoint": f"unix://{rp.containerd_socket}",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(rp.cell_paths.pki_dir / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "failSwapOn": False,
        # On the node IP: the apiserver reaches the kubelet there for logs, exec and port-forward.
        "address": real.node_ip,
        "port": real.ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": real.ports["kubelet_healthz"],
        "tlsCertFile": str(rp.pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(rp.pki / "kubelet.key"),
        # Root here may not lower oom_score_adj (no CAP_SYS_RESOURCE).
        "oomScoreAdj": 0,
        "podLogsDir": str(rp.pod_logs),
        "registerWithTaints": [{"key": REAL_LABEL, "value": "true", "effect": "NoSchedule"}],
        # A shared development machine: evict only when truly short, never collect the local images.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "maxPods": 110,
    }


def kube_proxy_config(rp: RealNodePaths, real: RealNodeRecord) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(rp.kube_proxy_kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{real.ports['kube_proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{real.ports['kube_proxy_metrics']}",
        "oomScoreAdj": 0,
        # Leave the machine's conntrack table and route_localnet as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def cni_config(rp: RealNodePaths) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(rp.cni_ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def components(rp: RealNodePaths, real: RealNodeRecord, bin_dir: Path) -> list[Component]:
    """containerd, kubelet and kube-proxy, as the local cell runs them."""
    ports = real.ports
    labels = {REAL_LABEL: "true", ZONE_LABEL: real.zone, RACK_LABEL: real.rack}
    return [
        Component("containerd", ["containerd", "--config", str(rp.containerd_config)],
                  f"http://127.0.0.1:{ports['containerd_metrics']}/v1/metrics"),
        Component("kubelet", [
            str(bin_dir / "kubelet"), f"--config={rp.kubelet_config}", f"--kubeconfig={rp.kubelet_kubeconfig}",
            f"--root-dir={rp.kubelet_root}", f"--cert-dir={rp.pki}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={real.node_ip}", "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "--v=1",
        ], f"http://127.0.0.1:{ports['kubelet_healthz']}/healthz"),
        Component("kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={rp.kube_proxy_config}", "--v=1"],
                  f"http://127.0.0.1:{ports['kube_proxy_healthz']}/livez"),
    ]
