# Cocoon's default resource policy: release a resource only to a token whose
# CPU appraisal is affirming, and never to the sample TEE, which proves
# nothing. input = the verified token's claims; data = plugin, resource-path
# and query of the request.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	input.submods.cpu0["ear.status"] == "affirming"
	not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
