// Command kbs-client talks to a KBS: it attests, fetches resources and
// drives the admin API, with Trustee's kbs-client commands and flags.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kbs-client:", err)
		os.Exit(1)
	}
}
