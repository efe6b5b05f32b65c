package svid

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/protocol"
)

// Limits of an SVID request.
const (
	maxCSR       = 8 << 10
	maxAudiences = 16
	maxAudience  = 256
)

// ParseRequest reads the payload of a signed SVID request of kind typ
// (protocol.SVIDTypeX509 or SVIDTypeJWT): exactly the members that kind
// takes, a nonce, and for X.509 a CSR whose signature its own key makes
// (the guest holds the key the SVID certifies).
func ParseRequest(typ string, payload []byte) (*protocol.SVIDRequest, *x509.CertificateRequest, error) {
	var req protocol.SVIDRequest
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: data after the request", ErrBadRequest)
	}
	if req.Nonce == "" {
		return nil, nil, fmt.Errorf("%w: no nonce", ErrBadRequest)
	}
	switch typ {
	case protocol.SVIDTypeX509:
		if len(req.Audience) > 0 {
			return nil, nil, fmt.Errorf("%w: an X.509-SVID has no audience", ErrBadRequest)
		}
		csr, err := parseCSR(req.CSR)
		if err != nil {
			return nil, nil, err
		}
		return &req, csr, nil
	case protocol.SVIDTypeJWT:
		if len(req.CSR) > 0 {
			return nil, nil, fmt.Errorf("%w: a JWT-SVID takes no CSR", ErrBadRequest)
		}
		if err := checkAudience(req.Audience); err != nil {
			return nil, nil, err
		}
		return &req, nil, nil
	}
	return nil, nil, fmt.Errorf("%w: SVID type %q", ErrBadRequest, typ)
}

func parseCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > maxCSR {
		return nil, fmt.Errorf("%w: CSR of %d bytes (1 to %d)", ErrBadRequest, len(der), maxCSR)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: CSR: %v", ErrBadRequest, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: CSR signature: %v", ErrBadRequest, err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

func checkAudience(aud []string) error {
	if len(aud) == 0 || len(aud) > maxAudiences {
		return fmt.Errorf("%w: %d audiences (1 to %d)", ErrBadRequest, len(aud), maxAudiences)
	}
	for _, a := range aud {
		if a == "" || len(a) > maxAudience {
			return fmt.Errorf("%w: an audience must have 1 to %d bytes", ErrBadRequest, maxAudience)
		}
	}
	return nil
}
