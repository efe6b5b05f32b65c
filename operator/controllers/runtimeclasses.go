package controllers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/cocoon-cc/cocoon/deploy"
	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
)

// runtimeClasses are deploy/runtimeclasses.yaml's RuntimeClasses by
// handler: the overheads measured for it (README "Kubernetes") and the
// scheduling onto the nodes the installer labels.
var runtimeClasses = sync.OnceValues(func() (map[string]*nodev1.RuntimeClass, error) {
	return parseRuntimeClasses(deploy.RuntimeClasses)
})

func parseRuntimeClasses(b []byte) (map[string]*nodev1.RuntimeClass, error) {
	out := map[string]*nodev1.RuntimeClass{}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		rc := &nodev1.RuntimeClass{}
		if err := dec.Decode(rc); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("deploy/runtimeclasses.yaml: %w", err)
		}
		if rc.Handler != "" {
			out[rc.Handler] = rc
		}
	}
}

// runtimeClass is a flavour's RuntimeClass: the handler the installer
// adds to containerd, with deploy/runtimeclasses.yaml's overhead and
// scheduling.
func runtimeClass(flavour string) (*nodev1.RuntimeClass, error) {
	rcs, err := runtimeClasses()
	if err != nil {
		return nil, err
	}
	rc, ok := rcs[nodeinstall.Handler(flavour)]
	if !ok {
		return nil, fmt.Errorf("deploy/runtimeclasses.yaml has no RuntimeClass for handler %s", nodeinstall.Handler(flavour))
	}
	return rc.DeepCopy(), nil // the caller's client may decode into it
}
