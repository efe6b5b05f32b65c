// Package tpm collects TPM evidence inside the guest: a TPM2_Quote of the
// SHA-256 PCR bank signed by the attestation key (AK), with the report data
// as the quote's nonce, written in the JSON form guest-components' TPM
// attester produces and attestation/verifier/tpm (and Trustee) verify.
package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// Options configure Open.
type Options struct {
	// TPM is a device path (DefaultTPM when empty) or a simulator's command
	// socket, "tcp://127.0.0.1:2321" or "unix:///run/swtpm.sock".
	TPM string
	// AKHandle is the AK's persistent handle; zero means DefaultAKHandle.
	// When the handle is empty Open creates the AK and persists it there.
	AKHandle uint32
	// AKAlgorithm is the kind of AK Open creates. An existing AK is used
	// whatever its kind.
	AKAlgorithm AKAlgorithm
}

// Attester produces TPM evidence. It is safe for concurrent use.
type Attester struct {
	mu        sync.Mutex
	tpm       transport.TPMCloser
	ak        *ak
	akPublic  string
	selection tpm2.TPMLPCRSelection
}

// ErrInitDataBound reports that PCR 8 already holds another initdata
// digest, or other measurements: the guest cannot be bound to this one.
var ErrInitDataBound = errors.New("tpm: PCR 8 is already extended with other data")

// quoteAttempts bounds retries when a PCR changes between quote and read.
const quoteAttempts = 3

// Open connects to the TPM and loads (or creates) the AK.
func Open(opts Options) (*Attester, error) {
	if opts.TPM == "" {
		opts.TPM = DefaultTPM
	}
	if opts.AKHandle == 0 {
		opts.AKHandle = DefaultAKHandle
	}
	t, err := openTPM(opts.TPM)
	if err != nil {
		return nil, fmt.Errorf("tpm: open %s: %w", opts.TPM, err)
	}
	a, err := newAttester(t, tpm2.TPMHandle(opts.AKHandle), opts.AKAlgorithm)
	if err != nil {
		t.Close()
		return nil, err
	}
	return a, nil
}

func newAttester(t transport.TPMCloser, handle tpm2.TPMHandle, alg AKAlgorithm) (*Attester, error) {
	k, err := loadAK(t, handle, alg)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(k.public)
	if err != nil {
		return nil, fmt.Errorf("tpm: encode AK: %w", err)
	}
	return &Attester{
		tpm:       t,
		ak:        k,
		akPublic:  base64.StdEncoding.EncodeToString(der),
		selection: pcrSelection(allPCRs()),
	}, nil
}

// Close releases the TPM; the AK stays persisted.
func (a *Attester) Close() error {
	return a.tpm.Close()
}

// AKPublic is the AK's public key, for enrolment as a trusted AK.
func (a *Attester) AKPublic() crypto.PublicKey {
	return a.ak.public
}

// Evidence quotes all SHA-256 PCRs with the report data, fitted to 32 bytes,
// as the nonce and returns the evidence JSON.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	q, err := a.Quote(ctx, vtpm.Nonce(reportData))
	if err != nil {
		return nil, err
	}
	ev := vtpm.Evidence{AKPublic: a.akPublic, TPMQuote: vtpm.Quote{
		Signature: base64.StdEncoding.EncodeToString(q.RawSignature),
		Message:   base64.StdEncoding.EncodeToString(q.Message),
	}}
	for _, p := range q.PCRs {
		ev.TPMQuote.PCRs = append(ev.TPMQuote.PCRs, hex.EncodeToString(p))
	}
	return json.Marshal(ev)
}

// Quote is a TPM2_Quote as the TPM returned it, with the PCR values it
// covers (index = PCR).
type Quote struct {
	Message      []byte // TPMS_ATTEST
	RawSignature []byte // TPMT_SIGNATURE
	Signature    *vtpm.Signature
	PCRs         [][]byte
}

// Quote quotes all SHA-256 PCRs with nonce as the qualifying data.
func (a *Attester) Quote(ctx context.Context, nonce []byte) (*Quote, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	for range quoteAttempts {
		if err = ctx.Err(); err != nil {
			return nil, err
		}
		var q *Quote
		if q, err = a.quote(nonce); err == nil {
			return q, nil
		}
		if !errors.Is(err, errPCRsMoved) {
			return nil, err
		}
	}
	return nil, err
}

var errPCRsMoved = errors.New("tpm: PCRs changed while quoting")

// quote signs the PCRs and reads their values. A PCR extended between the
// two makes the values disagree with the signed digest: that is detected
// here, where a retry can fix it, rather than by the verifier.
func (a *Attester) quote(nonce []byte) (*Quote, error) {
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: a.ak.handle.Handle, Name: a.ak.handle.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      a.selection,
	}.Execute(a.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpm: quote: %w", err)
	}
	q := &Quote{Message: rsp.Quoted.Bytes(), RawSignature: tpm2.Marshal(rsp.Signature)}
	attest, err := vtpm.ParseAttest(q.Message)
	if err != nil {
		return nil, fmt.Errorf("tpm: quote: %w", err)
	}
	if q.Signature, err = vtpm.ParseSignature(q.RawSignature); err != nil {
		return nil, fmt.Errorf("tpm: quote: %w", err)
	}
	if q.PCRs, err = readPCRs(a.tpm); err != nil {
		return nil, err
	}
	h := q.Signature.Hash.New()
	for _, p := range q.PCRs {
		h.Write(p)
	}
	if !bytes.Equal(h.Sum(nil), attest.PCRDigest) {
		return nil, errPCRsMoved
	}
	return q, nil
}

// ExtendInitData binds the guest to an initdata digest by extending it,
// fitted to 32 bytes, into PCR 8 of the SHA-256 bank. It is idempotent: a
// PCR 8 that already holds exactly this digest is left alone, so a restarted
// agent can bind again. Any other non-zero PCR 8 is ErrInitDataBound.
func (a *Attester) ExtendInitData(digest []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pcrs, err := readPCRs(a.tpm)
	if err != nil {
		return err
	}
	switch cur := pcrs[vtpm.InitDataPCR]; {
	case bytes.Equal(cur, vtpm.ReplayInitData(digest)):
		return nil
	case !bytes.Equal(cur, make([]byte, sha256.Size)):
		return ErrInitDataBound
	}
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(vtpm.InitDataPCR), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256,
			Digest:  vtpm.InitDataExtension(digest),
		}}},
	}.Execute(a.tpm)
	if err != nil {
		return fmt.Errorf("tpm: extend PCR %d: %w", vtpm.InitDataPCR, err)
	}
	return nil
}

// Tee implements attester.Attester.
func (a *Attester) Tee() protocol.Tee { return protocol.TeeTPM }
