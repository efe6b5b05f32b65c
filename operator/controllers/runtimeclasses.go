package controllers

import (
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
)

// overheads are the RuntimeClasses' pod overheads, as measured for
// deploy/runtimeclasses.yaml (README "Kubernetes").
var overheads = map[string][2]string{
	"qemu":     {"576Mi", "250m"},
	"qemu-snp": {"576Mi", "250m"},
	"qemu-tdx": {"576Mi", "250m"},
	"local":    {"64Mi", "50m"},
}

// runtimeClass is a flavour's RuntimeClass: the handler the installer
// adds to containerd, the overhead, and scheduling onto the nodes the
// installer labelled for it.
func runtimeClass(flavour string) *nodev1.RuntimeClass {
	o := overheads[flavour]
	h := nodeinstall.Handler(flavour)
	return &nodev1.RuntimeClass{
		Handler: h,
		Overhead: &nodev1.Overhead{PodFixed: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse(o[0]),
			corev1.ResourceCPU:    resource.MustParse(o[1]),
		}},
		Scheduling: &nodev1.Scheduling{NodeSelector: map[string]string{nodeinstall.LabelPrefix + flavour: "true"}},
	}
}
