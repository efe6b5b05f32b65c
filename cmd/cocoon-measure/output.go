package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/rvps/refvalues"
)

// output prints reference values (hex strings, or lists of them, by name)
// as the user asked.
type output struct {
	format  string
	message bool
}

func (o *output) add(c *cobra.Command) {
	c.Flags().StringVarP(&o.format, "output", "o", "hex", "hex, base64 or json (the reference values by name)")
	c.Flags().BoolVar(&o.message, "message", false,
		"print an RVPS sample message registering the values, ready for POST /kbs/v0/reference-value")
}

func (o *output) print(w io.Writer, values map[string]any) error {
	if o.message {
		msg, err := refvalues.Message(values)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(msg))
		return err
	}
	var encode func(string) (string, error)
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(values)
	case "hex":
		encode = func(s string) (string, error) { return s, nil }
	case "base64":
		encode = func(s string) (string, error) {
			b, err := hex.DecodeString(s)
			return base64.StdEncoding.EncodeToString(b), err
		}
	default:
		return fmt.Errorf("unknown output format %q (hex, base64, json)", o.format)
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var items []string
		switch v := values[n].(type) {
		case string:
			items = []string{v}
		case []string:
			items = v
		}
		for i, s := range items {
			e, err := encode(s)
			if err != nil {
				return err
			}
			items[i] = e
		}
		line := strings.Join(items, " ")
		if len(values) > 1 {
			line = n + ": " + line
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
