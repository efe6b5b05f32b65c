# Release resources to any token whose CPU appraisal is affirming,
# whatever the TEE (the sample TEE included, if its policy affirms it).
package policy

import rego.v1

default allow := false

allow if {
	input.submods.cpu0["ear.status"] == "affirming"
}
