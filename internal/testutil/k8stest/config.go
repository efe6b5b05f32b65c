package k8stest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// identities are the cluster's certificates: a serving certificate each
// for the API server and the kubelet, and a client certificate per
// component, named as RBAC's default bindings and the Node authorizer
// expect.
func (c *Cluster) identities() []identity {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(c.NodeIP), net.ParseIP(c.slot.ServiceIP)}
	return []identity{
		{file: "apiserver", cn: "kube-apiserver", ips: ips, server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{file: "kubelet-serving", cn: NodeName, ips: ips[:2], dns: []string{NodeName}, server: true},
		{file: "admin", cn: "cocoon-admin", orgs: []string{"system:masters"}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{file: "controller-manager", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		{file: "kubelet", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}},
		{file: "kube-proxy", cn: "system:kube-proxy"},
	}
}

// kubeconfig writes a kubeconfig for a client certificate of the PKI.
func (c *Cluster) kubeconfig(user string) (string, error) {
	path := filepath.Join(c.dir, user+".kubeconfig")
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: cocoon
  cluster: {server: "https://%s:6443", certificate-authority: %q}
users:
- name: %[3]s
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: cocoon
  context: {cluster: cocoon, user: %[3]s}
current-context: cocoon
`, c.NodeIP, c.pki.path("ca", ".crt"), user, c.pki.path(user, ".crt"), c.pki.path(user, ".key"))
	return path, os.WriteFile(path, []byte(doc), 0o600)
}

// kubeletConfig is the kubelet's configuration: cgroupfs under the
// cluster's own cgroup root (hosts here have cgroup v1), its directories
// under the cluster's, relaxed eviction (a shared test machine's disk),
// clients authenticated by the cluster's CA and authorized by the API
// server.
func (c *Cluster) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
tlsCertFile: %q
tlsPrivateKeyFile: %q
containerRuntimeEndpoint: "unix://%s"
cgroupDriver: cgroupfs
cgroupRoot: %q
failCgroupV1: false
failSwapOn: false
podCIDR: %q
podLogsDir: %q
volumePluginDir: %q
clusterDomain: cluster.local
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, c.pki.path("ca", ".crt"), c.pki.path("kubelet-serving", ".crt"), c.pki.path("kubelet-serving", ".key"),
		c.Containerd.Address, c.slot.Cgroup, c.PodCIDR, filepath.Join(c.dir, "pod-logs"), filepath.Join(c.dir, "kubelet-plugins"))
}

// proxyConfig is kube-proxy's: iptables mode, and no change to the
// host-wide conntrack sysctls.
func (c *Cluster) proxyConfig(kubeconfig string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: iptables
clusterCIDR: %q
hostnameOverride: %q
healthzBindAddress: "127.0.0.1:10256"
metricsBindAddress: "127.0.0.1:10249"
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, kubeconfig, c.PodCIDR, NodeName)
}

// cniConfig is the node's pod network: a bridge with host-local addresses
// from the pod CIDR (kept in the cluster's directory) and port mappings;
// no masquerade: nothing leaves the machine.
func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "cocoon-k8stest",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, c.PodCIDR, filepath.Join(c.dir, "cni-ipam"))
}

// shimConfigs are the coco shim's configurations, one per RuntimeClass
// handler (deploy/runtimeclasses.yaml): QEMU (TCG here, KVM where the host
// has it), QEMU with SEV-SNP or TDX (no node here has the hardware: their
// pods stay unscheduled) and the local backend.
func shimConfigs(kernel, initrd, agent string) map[string]string {
	qemu := func(tee string) string {
		return fmt.Sprintf("[sandbox]\nbackend = \"qemu\"\nstart_timeout = \"90s\"\n[qemu]\nkernel = %q\ninitrd = %q\ntee = %q\n",
			kernel, initrd, tee)
	}
	return map[string]string{
		"cocoon-qemu":     qemu("none"),
		"cocoon-qemu-snp": qemu("snp"),
		"cocoon-qemu-tdx": qemu("tdx"),
		"cocoon-local":    fmt.Sprintf("[sandbox]\nbackend = \"local\"\nstart_timeout = \"30s\"\n[local]\nagent_path = %q\n", agent),
	}
}
