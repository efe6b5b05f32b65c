package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Flavour is a sandbox a node can offer, one RuntimeClass each
// (cocoon-<flavour>).
// +kubebuilder:validation:Enum=qemu;qemu-snp;qemu-tdx;local
type Flavour string

// The flavours: a QEMU VM without a TEE, in SEV-SNP, in TDX, and the local
// backend (namespaces only, not confidential).
const (
	FlavourQEMU    Flavour = "qemu"
	FlavourQEMUSNP Flavour = "qemu-snp"
	FlavourQEMUTDX Flavour = "qemu-tdx"
	FlavourLocal   Flavour = "local"
)

// CocoonRuntimeSpec is what to install on which nodes.
type CocoonRuntimeSpec struct {
	// NodeSelector selects the nodes to install on (all nodes when empty).
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Flavours are the sandboxes to offer. A node is labelled for those
	// its hardware supports (SEV-SNP, TDX).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:default={qemu}
	// +listType=set
	Flavours []Flavour `json:"flavours,omitempty"`

	// Guest is the pod VM's kernel and initramfs, an OCI image pinned by
	// digest.
	Guest GuestImage `json:"guest"`

	// Shim configures containerd-shim-coco-v2.
	// +optional
	Shim ShimSettings `json:"shim,omitempty"`

	// Containerd is where the node's containerd is configured and how it is
	// restarted.
	// +optional
	Containerd ContainerdSettings `json:"containerd,omitempty"`

	// Snapshotter installs cocoon-snapshotter as containerd's CRI
	// snapshotter: the images it selects are pulled only in the guest
	// (none of their layers on the host). Not installed when unset.
	// +optional
	Snapshotter *SnapshotterSettings `json:"snapshotter,omitempty"`

	// InstallDir is the host directory Cocoon's files go to.
	// +kubebuilder:default="/opt/cocoon"
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +optional
	InstallDir string `json:"installDir,omitempty"`

	// UpgradeStrategy says how many nodes are reinstalled at a time when
	// the spec changes.
	// +optional
	UpgradeStrategy UpgradeStrategy `json:"upgradeStrategy,omitempty"`

	// InstallerImage overrides the node installer's image (default: the
	// operator's --installer-image).
	// +optional
	InstallerImage string `json:"installerImage,omitempty"`
}

// GuestImage is the guest's OCI image: one layer holding vmlinuz,
// initramfs.cpio.gz and, for SEV-SNP and TDX, the firmware
// (OVMF.amdsev.fd, TDVF.fd).
type GuestImage struct {
	// Image is the reference, by digest (repository@sha256:...).
	// +kubebuilder:validation:Pattern=`^[^@\s]+@sha256:[a-f0-9]{64}$`
	Image string `json:"image"`
	// PlainHTTP pulls from a registry without TLS (a registry on the
	// cluster's own network). The digest still authenticates the content.
	// +optional
	PlainHTTP bool `json:"plainHTTP,omitempty"`
}

// ShimSettings are the shim configuration's [sandbox] and [qemu] values.
type ShimSettings struct {
	// MemoryMiB is the VM's own memory; the containers' limits are added.
	// +kubebuilder:validation:Minimum=64
	// +optional
	MemoryMiB int32 `json:"memoryMiB,omitempty"`
	// VCPUs is the VM's own vCPU count.
	// +kubebuilder:validation:Minimum=1
	// +optional
	VCPUs int32 `json:"vcpus,omitempty"`
	// StartTimeout bounds a sandbox's boot (a Go duration, e.g. "60s").
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	StartTimeout string `json:"startTimeout,omitempty"`
	// KernelParams are added to the guest kernel's command line.
	// +kubebuilder:validation:Pattern=`^[^"\\\n]*$`
	// +optional
	KernelParams string `json:"kernelParams,omitempty"`
}

// SnapshotterSettings configure cocoon-snapshotter. containerd 1.6 and
// 1.7 unpack every CRI image with the one snapshotter, runc pods' too.
type SnapshotterSettings struct {
	// Images is a regular expression (Go syntax) of the image references
	// pulled only in the guest; other images are unpacked on the host as
	// before (runc pods, the installer's own).
	// +kubebuilder:validation:MinLength=1
	Images string `json:"images"`
	// Address is the socket containerd reaches it at (a host path).
	// +kubebuilder:default="/run/cocoon-snapshotter/snapshotter.sock"
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +optional
	Address string `json:"address,omitempty"`
}

// RestartMethod is how the installer restarts containerd.
// +kubebuilder:validation:Enum=systemd;signal
type RestartMethod string

const (
	// RestartSystemd runs systemctl restart UNIT in the host's namespaces.
	RestartSystemd RestartMethod = "systemd"
	// RestartSignal sends SIGTERM to the containerd process reading
	// ConfigPath; a supervisor (systemd's Restart=, an init system) starts
	// it again.
	RestartSignal RestartMethod = "signal"
)

// ContainerdSettings locate the node's containerd.
type ContainerdSettings struct {
	// ConfigPath is containerd's configuration file (version 2).
	// +kubebuilder:default="/etc/containerd/config.toml"
	// +kubebuilder:validation:Pattern=`^/[^\x00]*\.toml$`
	// +optional
	ConfigPath string `json:"configPath,omitempty"`
	// DropInDir holds Cocoon's drop-in (an imports entry of ConfigPath).
	// +kubebuilder:default="/etc/containerd/conf.d"
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +optional
	DropInDir string `json:"dropInDir,omitempty"`
	// Address is containerd's gRPC socket.
	// +kubebuilder:default="/run/containerd/containerd.sock"
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +optional
	Address string `json:"address,omitempty"`
	// Restart is how containerd is restarted.
	// +kubebuilder:default=systemd
	// +optional
	Restart RestartMethod `json:"restart,omitempty"`
	// Unit is the systemd unit (Restart systemd).
	// +kubebuilder:default=containerd
	// +optional
	Unit string `json:"unit,omitempty"`
}

// UpgradeStrategy bounds a rollout.
type UpgradeStrategy struct {
	// MaxUnavailable is how many nodes reinstall at a time (a number or a
	// percentage; default 1).
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// NodeStatus is one node's installation.
type NodeStatus struct {
	// Name is the node's.
	Name string `json:"name"`
	// Phase is Installing, Installed, Failed, Removing or Removed.
	Phase string `json:"phase"`
	// Guest is the digest of the guest installed.
	// +optional
	Guest string `json:"guest,omitempty"`
	// Flavours are the RuntimeClasses the node was labelled for.
	// +optional
	Flavours []Flavour `json:"flavours,omitempty"`
	// Message says why a node failed.
	// +optional
	Message string `json:"message,omitempty"`
	// Snapshotter says how cocoon-snapshotter runs on the node (a systemd
	// unit, a host process).
	// +optional
	Snapshotter string `json:"snapshotter,omitempty"`
}

// CocoonRuntimeStatus is what the operator observed.
type CocoonRuntimeStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (every selected node installed with the current
	// spec), Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Nodes lists the selected nodes' installations.
	// +listType=map
	// +listMapKey=name
	// +optional
	Nodes []NodeStatus `json:"nodes,omitempty"`
	// ReadyNodes counts the nodes installed with the current guest.
	// +optional
	ReadyNodes int32 `json:"readyNodes"`
	// DesiredNodes counts the selected nodes.
	// +optional
	DesiredNodes int32 `json:"desiredNodes"`
}

// CocoonRuntime installs Cocoon's runtime (shim, guest, containerd
// configuration, RuntimeClasses) on the nodes it selects.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ccr
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Nodes",type=string,JSONPath=`.status.readyNodes`
// +kubebuilder:printcolumn:name="Desired",type=string,JSONPath=`.status.desiredNodes`
// +kubebuilder:printcolumn:name="Guest",type=string,JSONPath=`.spec.guest.image`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CocoonRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CocoonRuntimeSpec   `json:"spec,omitempty"`
	Status CocoonRuntimeStatus `json:"status,omitempty"`
}

// CocoonRuntimeList is a list of CocoonRuntimes.
// +kubebuilder:object:root=true
type CocoonRuntimeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CocoonRuntime `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CocoonRuntime{}, &CocoonRuntimeList{})
}
