// Package respolicy holds the built-in resource policies, shared by the KBS
// (its default) and kbs-client (set-resource-policy --allow-all, ...).
package respolicy

import _ "embed"

// Default releases resources only to affirming tokens of a real TEE.
//
//go:embed default.rego
var Default string

// AllowAll releases every resource to any verified token.
//
//go:embed allow_all.rego
var AllowAll string

// DenyAll releases nothing.
//
//go:embed deny_all.rego
var DenyAll string

// Affirming releases resources to affirming tokens of any TEE.
//
//go:embed affirming.rego
var Affirming string
