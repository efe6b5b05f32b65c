package tpm

import (
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// DRTM PCRs 17 to 22 can only be extended from locality 4 and above; the
// guest runs at locality 0.
const firstDRTMPCR, lastDRTMPCR = 17, 22

// RuntimeRegister maps a PCR index to the register the attestation agent's
// event log names: on a TPM the PCR itself, in the SHA-256 bank.
func (a *Attester) RuntimeRegister(pcr uint64) (uint32, crypto.Hash, error) {
	switch {
	case pcr >= numPCRs:
		return 0, 0, fmt.Errorf("tpm: PCR %d out of range", pcr)
	case pcr >= firstDRTMPCR && pcr <= lastDRTMPCR:
		return 0, 0, fmt.Errorf("tpm: PCR %d is a DRTM PCR the guest cannot extend (set eventlog_config.init_pcr, e.g. 23)", pcr)
	}
	return uint32(pcr), crypto.SHA256, nil
}

// ExtendRuntimeRegister extends a SHA-256 event digest into the PCR.
func (a *Attester) ExtendRuntimeRegister(_ context.Context, pcr uint64, digest []byte) error {
	if pcr >= numPCRs || len(digest) != sha256.Size {
		return fmt.Errorf("tpm: cannot extend PCR %d with a %d-byte digest", pcr, len(digest))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest}}},
	}.Execute(a.tpm)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d: %w", pcr, err)
	}
	return nil
}

// BindInitData extends the initdata digest into PCR 8 (see ExtendInitData).
func (a *Attester) BindInitData(_ context.Context, digest []byte) error {
	return a.ExtendInitData(digest)
}
