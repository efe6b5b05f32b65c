package generate

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/cocoon-cc/cocoon/initdata"
)

// PolicyOf is the agent policy a document gives: the text of a policy
// (package agent_policy), an initdata TOML's policy.rego, or the policy in
// the initdata annotation of a manifest's first workload.
func PolicyOf(doc []byte) (string, error) {
	if d, err := initdata.Parse(doc); err == nil {
		return policyIn(d)
	}
	if m, err := Parse(doc); err == nil {
		for _, w := range m.Workloads {
			if a, ok := w.Template.Annotations[InitdataAnnotation]; ok {
				body, err := decodeAnnotation(a)
				if err != nil {
					return "", err
				}
				d, err := initdata.Parse(body)
				if err != nil {
					return "", err
				}
				return policyIn(d)
			}
		}
	}
	if strings.Contains(string(doc), "package agent_policy") {
		return string(doc), nil
	}
	return "", fmt.Errorf("%w: neither an agent policy, initdata nor a manifest with the %s annotation", ErrManifest, InitdataAnnotation)
}

func policyIn(d *initdata.Document) (string, error) {
	p, ok := d.Data[initdata.PolicyRego]
	if !ok {
		return "", fmt.Errorf("%w: the initdata has no %s", initdata.ErrInvalid, initdata.PolicyRego)
	}
	return p, nil
}

// decodeAnnotation reverses annotation, bounded by initdata's size.
func decodeAnnotation(a string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(a)
	if err != nil {
		return nil, fmt.Errorf("%w: annotation: %v", initdata.ErrInvalid, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: annotation: %v", initdata.ErrInvalid, err)
	}
	body, err := io.ReadAll(io.LimitReader(zr, initdata.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: annotation: %v", initdata.ErrInvalid, err)
	}
	if len(body) > initdata.MaxSize {
		return nil, fmt.Errorf("%w: annotation: more than %d bytes", initdata.ErrInvalid, initdata.MaxSize)
	}
	return body, nil
}

// Reasons splits a refusal message of the generated rules into its
// reasons: they are joined by "; ", and every value in them is JSON, so a
// "; " inside a JSON string is not a separator.
func Reasons(msg string) []string {
	var out []string
	inString, escaped, start := false, false, 0
	for i := 0; i < len(msg); i++ {
		switch c := msg[i]; {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && strings.HasPrefix(msg[i:], "; "):
			out = append(out, msg[start:i])
			start = i + 2
			i++
		}
	}
	return append(out, msg[start:])
}
