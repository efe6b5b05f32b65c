package protocol

import "encoding/json"

// SVID kinds, the last segment of the KBS's SPIFFE endpoints
// (POST /kbs/v0/spiffe/<kind>).
const (
	SVIDTypeX509 = "x509-svid"
	SVIDTypeJWT  = "jwt-svid"
	// SPIFFEBundle is the trust bundle endpoint (GET /kbs/v0/spiffe/bundle).
	SPIFFEBundle = "bundle"
)

// SVIDRequest is what a guest asks the KBS to certify. It travels as the
// payload of a compact JWS signed by the guest's TEE key (the key its
// attestation token vouches for) and carries the nonce of the RCAR
// session that token came from, so a request seen on the way cannot be
// replayed with another session's token.
type SVIDRequest struct {
	Nonce string `json:"nonce"`
	// CSR is the PKCS#10 request (DER) of the SVID key the guest made,
	// for an X.509-SVID.
	CSR []byte `json:"csr,omitempty"`
	// Audience is the JWT-SVID's aud.
	Audience []string `json:"audience,omitempty"`
}

// X509SVIDResponse is an issued X.509-SVID; the KBS answers with it sealed
// to the TEE key (a Response, as for resources).
type X509SVIDResponse struct {
	SPIFFEID string `json:"spiffe_id"`
	// CertChain is the SVID and the CA certificates up to (not including)
	// the trust bundle's root, DER, leaf first.
	CertChain [][]byte `json:"cert_chain"`
	// Bundle is the trust domain's SPIFFE bundle (JWKS): its X.509 and
	// JWT authorities.
	Bundle    json.RawMessage `json:"bundle"`
	ExpiresAt int64           `json:"expires_at"`
}

// JWTSVIDResponse is an issued JWT-SVID, sealed to the TEE key.
type JWTSVIDResponse struct {
	SPIFFEID  string `json:"spiffe_id"`
	Token     string `json:"token"`
	ExpiresAt int64  `json:"expires_at"`
}
