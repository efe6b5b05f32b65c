// Package svid is the KBS's SPIFFE certificate authority: it derives a
// guest's SPIFFE ID from the initdata its attestation token vouches for,
// reads the SVID requests guests sign with their TEE key, and issues
// X.509-SVIDs and JWT-SVIDs with a CA key the KBS keeps.
package svid

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cocoon-cc/cocoon/attestation/ear"
)

// InitdataKey is the initdata entry that names the pod's SPIFFE ID:
//
//	id = "/ns/prod/sa/web"      # or "spiffe://<trust domain>/ns/prod/sa/web"
//
// The owner writes initdata and the TEE measures it, so the ID is an
// attested fact; nothing the host says about the pod (its name, namespace,
// labels) can change it.
const InitdataKey = "spiffe.toml"

// Errors of SVID requests.
var (
	// ErrNoID: the token's initdata names no SPIFFE ID.
	ErrNoID = errors.New("no SPIFFE ID in the token's initdata")
	// ErrBadID: the initdata names an ID that is not a workload ID of the
	// KBS's trust domain.
	ErrBadID = errors.New("bad SPIFFE ID in initdata")
	// ErrBadRequest: an SVID request that cannot be read.
	ErrBadRequest = errors.New("bad SVID request")
)

// maxEntry bounds the spiffe.toml entry read.
const maxEntry = 4 << 10

// Entry is the parsed spiffe.toml initdata entry.
type Entry struct {
	ID string `toml:"id"`
}

// IDFromClaims returns the SPIFFE ID the token's cpu0 initdata asks for,
// in trust domain td. Only init_data_claims count: the attestation service
// puts them in a token only when the TEE's evidence binds the initdata
// digest (HOST_DATA, MRCONFIGID, PCR 8).
func IDFromClaims(td spiffeid.TrustDomain, c *ear.Claims) (spiffeid.ID, error) {
	cpu, ok := c.Submods["cpu0"]
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: the token has no cpu0 appraisal", ErrNoID)
	}
	raw, ok := cpu.AnnotatedEvidence["init_data_claims"]
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: the token carries no initdata", ErrNoID)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(raw, &data); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: init_data_claims: %v", ErrNoID, err)
	}
	entry, ok := data[InitdataKey]
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: initdata has no %s", ErrNoID, InitdataKey)
	}
	// Trustee's service keeps unknown entries as strings; one that parses
	// entries may give an object.
	var text string
	if json.Unmarshal(entry, &text) == nil {
		e, err := ParseEntry(text)
		if err != nil {
			return spiffeid.ID{}, err
		}
		return e.SPIFFEID(td)
	}
	var e Entry
	if err := json.Unmarshal(entry, &e); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %s: %v", ErrBadID, InitdataKey, err)
	}
	return e.SPIFFEID(td)
}

// ParseEntry reads a spiffe.toml entry.
func ParseEntry(text string) (*Entry, error) {
	if len(text) > maxEntry {
		return nil, fmt.Errorf("%w: %s over %d bytes", ErrBadID, InitdataKey, maxEntry)
	}
	var e Entry
	md, err := toml.Decode(text, &e)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadID, InitdataKey, err)
	}
	if t := md.Type("id"); t != "String" {
		return nil, fmt.Errorf("%w: %s: id must be a string", ErrBadID, InitdataKey)
	}
	return &e, nil
}

// SPIFFEID is the entry's ID in trust domain td: a path is taken below
// td, a full ID must be in td.
func (e *Entry) SPIFFEID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	var id spiffeid.ID
	var err error
	if strings.HasPrefix(e.ID, "/") {
		id, err = spiffeid.FromPath(td, e.ID)
	} else {
		id, err = spiffeid.FromString(e.ID)
	}
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %q: %v", ErrBadID, e.ID, err)
	}
	if id.TrustDomain() != td {
		return spiffeid.ID{}, fmt.Errorf("%w: %s is not in trust domain %s", ErrBadID, id, td)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("%w: %s names the trust domain, not a workload", ErrBadID, id)
	}
	return id, nil
}
