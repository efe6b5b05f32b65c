package nodeinstall

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Node annotations and labels the installer sets; the operator reads them
// into the CocoonRuntime's per-node status.
const (
	LabelPrefix        = "cocoon.io/runtime-" // + flavour: "true" where installed
	AnnotationPhase    = "cocoon.io/install-phase"
	AnnotationGuest    = "cocoon.io/install-guest"
	AnnotationFlavours = "cocoon.io/install-flavours"
	AnnotationMessage  = "cocoon.io/install-message"
	AnnotationRuntime  = "cocoon.io/install-runtime" // the CocoonRuntime's name
	// AnnotationSnapshotter says how cocoon-snapshotter runs.
	AnnotationSnapshotter = "cocoon.io/install-snapshotter"
)

// Phases of a node's installation.
const (
	PhaseInstalling = "Installing"
	PhaseInstalled  = "Installed"
	PhaseFailed     = "Failed"
	PhaseRemoving   = "Removing"
	PhaseRemoved    = "Removed"
)

// AllFlavours are the flavours a node can be labelled for.
var AllFlavours = []string{"qemu", "qemu-snp", "qemu-tdx", "local"}

// NodeState is what the installer records on its node.
type NodeState struct {
	Runtime  string
	Phase    string
	Guest    string
	Flavours []string // labelled; the others' labels are removed
	Message  string
	// Snapshotter says how cocoon-snapshotter runs ("": not installed).
	Snapshotter string
}

// Record patches the node's labels and annotations to state.
func Record(ctx context.Context, cs kubernetes.Interface, node string, s NodeState) error {
	labels := map[string]any{}
	for _, f := range AllFlavours {
		labels[LabelPrefix+f] = nil
	}
	for _, f := range s.Flavours {
		labels[LabelPrefix+f] = "true"
	}
	str := func(v string) any {
		if v == "" {
			return nil
		}
		return v
	}
	annotations := map[string]any{
		AnnotationRuntime:     str(s.Runtime),
		AnnotationPhase:       str(s.Phase),
		AnnotationGuest:       str(s.Guest),
		AnnotationFlavours:    str(strings.Join(s.Flavours, ",")),
		AnnotationMessage:     str(s.Message),
		AnnotationSnapshotter: str(s.Snapshotter),
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels, "annotations": annotations}})
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("record the installation on node %s: %w", node, err)
	}
	return nil
}
