// Package deploy gives Go code the manifests of this directory, so that a
// figure kept in one of them has one home: the operator makes the
// RuntimeClasses of runtimeclasses.yaml.
package deploy

import _ "embed"

// RuntimeClasses is runtimeclasses.yaml: Cocoon's RuntimeClasses, one
// document each, with their overhead and scheduling.
//
//go:embed runtimeclasses.yaml
var RuntimeClasses []byte
