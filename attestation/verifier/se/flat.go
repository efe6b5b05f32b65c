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
// answers (FuzzFlatFields checks it). vals (one per name, all nil) get
// the values' text, for decodeAll; the caller's array spares an
// allocation.
func flatFields(raw []byte, names []string, vals [][]byte) bool {
	p := skipSpace(raw, 0)
	if p >= len(raw) || raw[p] != '{' {
		return false
	}
	p = skipSpace(raw, p+1)
	if p < len(raw) && raw[p] == '}' {
		return skipSpace(raw, p+1) == len(raw)
	}
	for {
		key, q, ok := plainString(raw, p)
		if !ok {
			return false
		}
		p = skipSpace(raw, q)
		if p >= len(raw) || raw[p] != ':' {
			return false
		}
		i, ok := slot(vals, names, key)
		if !ok {
			return false
		}
		read := plainString
		if i >= 0 {
			read = base64String
		}
		val, q, ok := read(raw, skipSpace(raw, p+1))
		if !ok {
			return false
		}
		if i >= 0 {
			vals[i] = val
		}
		p = skipSpace(raw, q)
		switch {
		case p < len(raw) && raw[p] == ',':
			p = skipSpace(raw, p+1)
		case p < len(raw) && raw[p] == '}':
			return skipSpace(raw, p+1) == len(raw)
		default:
			return false
		}
	}
}

// slot is the index of the name that key is (-1 for another key),
// refusing a repeated one and a key encoding/json would take for another
// case of a name.
func slot(vals [][]byte, names []string, key []byte) (int, bool) {
	for i, n := range names {
		if string(key) == n {
			return i, vals[i] == nil
		}
	}
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return 0, false
		}
	}
	return -1, true
}

// decodeAll decodes the base64 values in place of their text, into one
// buffer, *scratch when it is large enough (else a new one, left there);
// false if one is not base64, or holds a CR or LF (a JSON string cannot
// hold them raw; the decoder skips them, so the value decodes to fewer
// bytes than its length promises).
func decodeAll(vals [][]byte, scratch *[]byte) bool {
	size := 0
	for _, v := range vals {
		size += base64.StdEncoding.DecodedLen(len(v))
	}
	if *scratch == nil || cap(*scratch) < size {
		*scratch = make([]byte, size)
	}
	buf := (*scratch)[:size]
	for i, v := range vals {
		if v == nil {
			continue
		}
		n, err := base64.StdEncoding.Decode(buf, v)
		if err != nil || len(v)%4 != 0 || n != len(v)/4*3-padding(v) {
			return false
		}
		vals[i], buf = buf[:n:n], buf[n:]
	}
	return true
}

// padding is the number of '=' that end v.
func padding(v []byte) int {
	n := 0
	for n < 2 && n < len(v) && v[len(v)-1-n] == '=' {
		n++
	}
	return n
}

func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// quoted reads a JSON string at p up to the next quote, returning its
// text and the index after it; the callers check the text.
func quoted(b []byte, p int) ([]byte, int, bool) {
	if p >= len(b) || b[p] != '"' {
		return nil, 0, false
	}
	end := bytes.IndexByte(b[p+1:], '"')
	if end < 0 {
		return nil, 0, false
	}
	return b[p+1 : p+1+end], p + 2 + end, true
}

// plainString reads a JSON string without escapes or control characters
// at p, returning its contents and the index after it.
func plainString(b []byte, p int) ([]byte, int, bool) {
	s, next, ok := quoted(b, p)
	for _, c := range s {
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, 0, false
		}
	}
	return s, next, ok
}

// base64String is plainString for a value decodeAll will decode: the
// decoder refuses escapes, control characters and non-ASCII bytes
// itself; CR and LF, which it skips, it refuses for decodeAll.
func base64String(b []byte, p int) ([]byte, int, bool) {
	return quoted(b, p)
}
