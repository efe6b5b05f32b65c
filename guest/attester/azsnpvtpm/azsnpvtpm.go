// Package azsnpvtpm collects the evidence of Azure SEV-SNP confidential VMs
// (az-snp-vtpm) as guest-components does: the vTPM half (azvtpm) and the
// chip's VCEK, which Azure's instance metadata service serves, in
// Trustee's evidence JSON version 2.
package azsnpvtpm

import (
	"context"
	"encoding/pem"
	"fmt"

	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// certsPath is where IMDS serves the VCEK and AMD's chain.
const certsPath = "/metadata/THIM/amd/certification"

// Open opens the vTPM for az-snp-vtpm evidence.
func Open(o azvtpm.Options) (*azvtpm.Attester, error) {
	return azvtpm.NewAttester(o, vcek{})
}

// vcek adds the chip's VCEK, from IMDS.
type vcek struct{}

func (vcek) Tee() protocol.Tee { return protocol.TeeAzSNPvTPM }

func (vcek) Member(ctx context.Context, v *azvtpm.VTPM, _ *azvtpm.Collected) (string, []byte, error) {
	var certs struct {
		VCEK string `json:"vcekCert"`
	}
	if err := v.IMDS(ctx, certsPath, nil, &certs); err != nil {
		return "", nil, err
	}
	block, _ := pem.Decode([]byte(certs.VCEK))
	if block == nil {
		return "", nil, fmt.Errorf("azsnpvtpm: IMDS sent no PEM VCEK")
	}
	return "vcek", block.Bytes, nil
}
