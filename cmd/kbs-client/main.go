// Command kbs-client talks to a KBS: it attests, fetches resources and
// drives the admin API, with Trustee's kbs-client commands and flags.
package main

import (
	"fmt"
	"os"
)

func main() {
	root, g := newRoot()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kbs-client:", withHint(err, g))
		os.Exit(1)
	}
}
