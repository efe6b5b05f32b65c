// Package initdata parses the initdata document a pod is started with and
// computes the digest the TEE binds (SNP HOST_DATA, TDX MRCONFIGID, TPM PCR 8).
package initdata

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/BurntSushi/toml"
)

// Version is the initdata format version understood.
const Version = "0.1.0"

// MaxSize bounds an initdata document.
const MaxSize = 256 << 10

// ErrInvalid is returned for an initdata document that cannot be used.
var ErrInvalid = errors.New("invalid initdata")

// Document is a parsed initdata TOML.
type Document struct {
	Version   string            `toml:"version"`
	Algorithm string            `toml:"algorithm"`
	Data      map[string]string `toml:"data"`
}

// Parse reads an initdata TOML document.
func Parse(body []byte) (*Document, error) {
	if len(body) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(body), MaxSize)
	}
	var d Document
	md, err := toml.Decode(string(body), &d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// The TOML decoder silently drops a non-table value for a map.
	if t := md.Type("data"); t != "" && t != "Hash" {
		return nil, fmt.Errorf("%w: data must be a table, not %s", ErrInvalid, t)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return nil, fmt.Errorf("%w: unknown key %s", ErrInvalid, un[0])
	}
	if d.Version != Version {
		return nil, fmt.Errorf("%w: version %q, want %s", ErrInvalid, d.Version, Version)
	}
	if _, err := newHash(d.Algorithm); err != nil {
		return nil, err
	}
	return &d, nil
}

func newHash(alg string) (hash.Hash, error) {
	switch alg {
	case "sha256":
		return sha256.New(), nil
	case "sha384":
		return sha512.New384(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("%w: algorithm %q", ErrInvalid, alg)
}

// Digest is the document's algorithm over its raw bytes, as the host
// computed it when it launched the TEE.
func Digest(body []byte) ([]byte, *Document, error) {
	d, err := Parse(body)
	if err != nil {
		return nil, nil, err
	}
	h, _ := newHash(d.Algorithm)
	h.Write(body)
	return h.Sum(nil), d, nil
}

// Claims are the document's data entries as policies see them: the TOML
// configs (aa.toml, cdh.toml) parsed into objects, the rest as strings.
func (d *Document) Claims() map[string]any {
	out := make(map[string]any, len(d.Data))
	for k, v := range d.Data {
		if strings.HasSuffix(k, ".toml") {
			var parsed map[string]any
			if _, err := toml.Decode(v, &parsed); err == nil {
				out[k] = parsed
				continue
			}
		}
		out[k] = v
	}
	return out
}
