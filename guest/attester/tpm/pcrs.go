package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// numPCRs is the PC Client profile's PCR count, all of which guest-components
// quotes and reports.
const numPCRs = 24

func allPCRs() []int {
	out := make([]int, numPCRs)
	for i := range out {
		out[i] = i
	}
	return out
}

// pcrSelection selects pcrs in the SHA-256 bank.
func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	bitmap := make([]byte, numPCRs/8)
	for _, i := range pcrs {
		bitmap[i/8] |= 1 << (i % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: bitmap,
	}}}
}

// selected lists the PCRs a one-bank SHA-256 selection names, ascending.
func selected(sel tpm2.TPMLPCRSelection) ([]int, error) {
	if len(sel.PCRSelections) != 1 || sel.PCRSelections[0].Hash != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("tpm: PCR_Read answered another bank")
	}
	var out []int
	for i, b := range sel.PCRSelections[0].PCRSelect {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				out = append(out, 8*i+bit)
			}
		}
	}
	return out, nil
}

// readPCRs reads the whole SHA-256 bank. TPM2_PCR_Read returns at most
// eight digests per call, so it asks again for what is still missing.
func readPCRs(t transport.TPM) ([][]byte, error) {
	values := make([][]byte, numPCRs)
	missing := allPCRs()
	for len(missing) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(missing)}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("tpm: read PCRs: %w", err)
		}
		got, err := selected(rsp.PCRSelectionOut)
		if err != nil {
			return nil, err
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("tpm: PCR_Read returned %d values for %d PCRs", len(rsp.PCRValues.Digests), len(got))
		}
		for k, i := range got {
			if i >= numPCRs || values[i] != nil {
				return nil, fmt.Errorf("tpm: PCR_Read returned unrequested PCR %d", i)
			}
			values[i] = rsp.PCRValues.Digests[k].Buffer
		}
		missing = missing[:0]
		for i, v := range values {
			if v == nil {
				missing = append(missing, i)
			}
		}
	}
	return values, nil
}
