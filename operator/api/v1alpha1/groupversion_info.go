// Package v1alpha1 is Cocoon's Kubernetes API (group cocoon.io): the
// CocoonRuntime that installs Cocoon's runtime on nodes and the KeyBroker
// that runs a KBS.
// +kubebuilder:object:generate=true
// +groupName=cocoon.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is cocoon.io/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "cocoon.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this version.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
