package controllers

import (
	"testing"

	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
)

// TestRuntimeClasses: deploy/runtimeclasses.yaml, as embedded, has a
// RuntimeClass for every flavour the installer offers, scheduled onto the
// nodes it labels, with an overhead.
func TestRuntimeClasses(t *testing.T) {
	for _, f := range nodeinstall.AllFlavours {
		rc, err := runtimeClass(f)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Name != nodeinstall.Handler(f) || rc.Handler != nodeinstall.Handler(f) {
			t.Errorf("%s: name %q, handler %q", f, rc.Name, rc.Handler)
		}
		if rc.Scheduling == nil || rc.Scheduling.NodeSelector[nodeinstall.LabelPrefix+f] != "true" {
			t.Errorf("%s: scheduling %+v", f, rc.Scheduling)
		}
		if rc.Overhead == nil || rc.Overhead.PodFixed.Memory().IsZero() || rc.Overhead.PodFixed.Cpu().IsZero() {
			t.Errorf("%s: overhead %+v", f, rc.Overhead)
		}
	}
	if _, err := runtimeClass("qemu-sev"); err == nil {
		t.Error("a flavour without a RuntimeClass gave one")
	}
	if _, err := parseRuntimeClasses([]byte("handler: [")); err == nil {
		t.Error("a broken document parsed")
	}
}
