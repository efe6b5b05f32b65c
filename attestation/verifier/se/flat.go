package se

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// Trustee's SE evidence is one flat object of base64 strings. flatFields
// reads that shape directly, as encoding/json would but without its
// reflection (which costs several times the measurement's HMAC): keys and
// values as plain strings (no escapes: base64 never needs one), each key
// at most once. It returns false for anything else, which ParseEvidence
// then reads with encoding/json, so both paths agree wherever this one
// answers (FuzzFlatFields checks it).
func flatFields(raw []byte, names []string) ([][]byte, bool) {
	vals := make([][]byte, len(names))
	p := skipSpace(raw, 0)
	if p >= len(raw) || raw[p] != '{' {
		return nil, false
	}
	p = skipSpace(raw, p+1)
	if p < len(raw) && raw[p] == '}' {
		return vals, skipSpace(raw, p+1) == len(raw)
	}
	for {
		key, q, ok := plainString(raw, p)
		if !ok {
			return nil, false
		}
		p = skipSpace(raw, q)
		if p >= len(raw) || raw[p] != ':' {
			return nil, false
		}
		val, q, ok := plainString(raw, skipSpace(raw, p+1))
		if !ok || !keep(vals, names, key, val) {
			return nil, false
		}
		p = skipSpace(raw, q)
		switch {
		case p < len(raw) && raw[p] == ',':
			p = skipSpace(raw, p+1)
		case p < len(raw) && raw[p] == '}':
			out := decodeAll(vals)
			return out, out != nil && skipSpace(raw, p+1) == len(raw)
		default:
			return nil, false
		}
	}
}

// keep records val as the (base64) value of the name that key is,
// refusing a repeated one and a key encoding/json would take for another
// case of a name.
func keep(vals [][]byte, names []string, key, val []byte) bool {
	for i, n := range names {
		if string(key) == n {
			if vals[i] != nil {
				return false
			}
			vals[i] = val
			return true
		}
	}
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return false
		}
	}
	return true
}

// decodeAll decodes the base64 values in place of their text, into one
// buffer; nil if one is not base64.
func decodeAll(vals [][]byte) [][]byte {
	size := 0
	for _, v := range vals {
		size += base64.StdEncoding.DecodedLen(len(v))
	}
	buf := make([]byte, size)
	for i, v := range vals {
		if v == nil {
			continue
		}
		n, err := base64.StdEncoding.Decode(buf, v)
		if err != nil {
			return nil
		}
		vals[i], buf = buf[:n:n], buf[n:]
	}
	return vals
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// plainString reads a JSON string without escapes or control characters
// at p, returning its contents and the index after it.
func plainString(b []byte, p int) ([]byte, int, bool) {
	if p >= len(b) || b[p] != '"' {
		return nil, 0, false
	}
	end := bytes.IndexByte(b[p+1:], '"')
	if end < 0 {
		return nil, 0, false
	}
	s := b[p+1 : p+1+end]
	for _, c := range s {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, 0, false
		}
	}
	return s, p + 2 + end, true
}
