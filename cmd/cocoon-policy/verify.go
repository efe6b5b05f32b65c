package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/agent/policy/generate"
)

// errRefused makes the exit status say that a request was refused.
var errRefused = errors.New("refused by the policy")

func verifyCmd() *cobra.Command {
	var (
		policyFile string
		requests   []string
	)
	c := &cobra.Command{
		Use:   "verify --policy FILE --request [RULE=]FILE...",
		Short: "Say, one line per field, why the agent would refuse requests",
		Long: `Evaluate agent requests, in order (a request may depend on an earlier one: an exec on
its container's creation), against a policy as the agent does, and print for each whether
it is allowed or, one line per field, why it is refused. The policy is a .rego file, an
initdata TOML or a manifest carrying the initdata annotation (cocoon-policy generate's
output; its first workload's). A request is the input the agent's policy sees, as Kata's agent renders it
(agent/policy/testdata/input holds one of each); RULE is its message name
(CreateContainerRequest, ExecProcessRequest, ...), by default the file's name when it ends
in Request.json, else CreateContainerRequest. Exits 1 when a request is refused.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			doc, err := os.ReadFile(policyFile)
			if err != nil {
				return err
			}
			text, err := generate.PolicyOf(doc)
			if err != nil {
				return err
			}
			e, err := policy.New(c.Context(), text)
			if err != nil {
				return err
			}
			refused := 0
			for _, r := range requests {
				rule, file := requestRule(r)
				input, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				err = e.CheckInput(c.Context(), rule, input)
				if err == nil {
					fmt.Fprintf(c.OutOrStdout(), "%s %s: allowed\n", rule, file)
					continue
				}
				if !errors.Is(err, policy.ErrDenied) {
					return err
				}
				refused++
				for _, line := range explain(err) {
					fmt.Fprintf(c.OutOrStdout(), "%s %s: refused: %s\n", rule, file, line)
				}
			}
			if refused > 0 {
				return fmt.Errorf("%d of %d requests %w", refused, len(requests), errRefused)
			}
			return nil
		},
	}
	c.Flags().StringVar(&policyFile, "policy", "", "the policy: .rego, initdata TOML or an annotated manifest (its first workload's)")
	c.Flags().StringArrayVar(&requests, "request", nil, "[RULE=]FILE: a request's policy input (JSON); repeat for several, in order")
	c.MarkFlagRequired("policy")
	c.MarkFlagRequired("request")
	return c
}

// requestRule splits RULE=FILE.
func requestRule(arg string) (rule, file string) {
	if r, f, ok := strings.Cut(arg, "="); ok && r != "" && !strings.ContainsAny(r, "/.") {
		return r, f
	}
	base := strings.TrimSuffix(filepath.Base(arg), ".json")
	if strings.HasSuffix(base, "Request") && base != filepath.Base(arg) {
		return base, arg
	}
	return "CreateContainerRequest", arg
}

// explain splits a refusal into its fields (generate.Reasons): the
// message follows the rule's name.
func explain(err error) []string {
	msg := err.Error()
	if _, why, ok := strings.Cut(msg, policy.ErrDenied.Error()+": "); ok {
		return generate.Reasons(why)
	}
	return []string{msg + " (the policy gives no reason)"}
}
