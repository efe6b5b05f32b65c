package testutil

import (
	"bytes"

	"github.com/spf13/cobra"
)

// Execute runs a command line of root (a cobra CLI's root command) and
// returns what it wrote to its standard output and error.
func Execute(root *cobra.Command, args ...string) (string, error) {
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}
