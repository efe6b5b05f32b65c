package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/agent/policy/generate"
)

func generateCmd() *cobra.Command {
	var (
		opts                                 generate.Options
		output, policyDir, platform, kbsCert string
		imagePolicy                          string
		references                           []string
		insecure                             bool
	)
	c := &cobra.Command{
		Use:   "generate FILE... (- for standard input)",
		Short: "Write each workload's agent policy into its initdata annotation",
		Long: `Read Kubernetes manifests (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
CronJob; several documents per file, with the ConfigMaps and Secrets their containers
reference), resolve every image's digest from its registry, and write the manifests back
with each pod template's images named by digest and its initdata annotation
(io.katacontainers.config.hypervisor.cc_init_data) holding the generated agent policy and,
with --kbs-url, the KBS and image signature settings.

The policy lets the host create exactly the containers of the YAML: image, command and
arguments, environment (ConfigMap values, SHA-256 of Secret values, the forms of downward
API values), working directory, user, capabilities, mounts and volumes, and the exec
commands of probes and lifecycle hooks. kubectl exec and kubectl logs stay refused unless
--allow-exec / --allow-logs. Objects referenced but kept in other files: --references.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var streams [][]byte
			for _, a := range args {
				b, err := readInput(c.InOrStdin(), a)
				if err != nil {
					return err
				}
				streams = append(streams, b)
			}
			m, err := generate.Parse(streams...)
			if err != nil {
				return err
			}
			for _, r := range references {
				b, err := os.ReadFile(r)
				if err != nil {
					return err
				}
				if err := m.AddReferences(b); err != nil {
					return fmt.Errorf("%s: %w", r, err)
				}
			}
			reg := &generate.Registry{Insecure: insecure}
			if platform != "" {
				p, err := v1.ParsePlatform(platform)
				if err != nil {
					return fmt.Errorf("--platform: %w", err)
				}
				reg.Platform = p
			}
			opts.Resolver = reg
			if kbsCert != "" {
				b, err := os.ReadFile(kbsCert)
				if err != nil {
					return err
				}
				opts.KBSCert = string(b)
			}
			if imagePolicy != "" {
				if opts.ImagePolicy, err = os.ReadFile(imagePolicy); err != nil {
					return err
				}
			}
			pods, err := generate.Generate(c.Context(), m, opts)
			if err != nil {
				return err
			}
			if policyDir != "" {
				for _, p := range pods {
					if err := os.WriteFile(filepath.Join(policyDir, p.Workload.PolicyName()), []byte(p.Policy), 0o644); err != nil {
						return err
					}
				}
			}
			out, err := m.Write()
			if err != nil {
				return err
			}
			if output == "" || output == "-" {
				_, err = c.OutOrStdout().Write(out)
				return err
			}
			return os.WriteFile(output, out, 0o644)
		},
	}
	f := c.Flags()
	f.StringVarP(&output, "output", "o", "", "write the annotated manifests here (default: standard output; may be an input file)")
	f.StringVar(&policyDir, "policy-dir", "", "also write each policy as <kind>-<name>.rego in this directory")
	f.StringSliceVar(&references, "references", nil, "files of ConfigMaps and Secrets the workloads reference, not written out")
	f.StringVar(&opts.Format, "format", generate.FormatCocoon, "policy format: cocoon (Cocoon's agent) or kata (Kata's agent: genpolicy's policy_data layout)")
	f.BoolVar(&opts.AllowExec, "allow-exec", false, "let the host run any command in the containers (kubectl exec), as their process runs")
	f.BoolVar(&opts.AllowLogs, "allow-logs", false, "let the host read the containers' output (kubectl logs)")
	f.StringVar(&opts.KBSURL, "kbs-url", "", "the KBS the guest attests to (aa.toml, cdh.toml); none: plain images only")
	f.StringVar(&kbsCert, "kbs-cert", "", "PEM file of the KBS's HTTPS certificate, when no public CA signed it")
	f.StringVar(&imagePolicy, "image-policy", "", "the image signature policy (containers-policy.json) the guest enforces")
	f.StringVar(&opts.ImagePolicyURI, "image-policy-uri", "", "the image signature policy at the KBS instead (kbs:///repo/type/tag)")
	f.BoolVar(&insecure, "insecure", false, "reach registries over plain HTTP (local registries)")
	f.StringVar(&platform, "platform", "linux/amd64", "the platform of multi-platform images")
	return c
}

// readInput reads a file, or standard input for "-".
func readInput(stdin io.Reader, name string) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, generate.MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > generate.MaxManifestSize {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", strings.TrimSpace(name), generate.ErrManifest, generate.MaxManifestSize)
	}
	return b, nil
}
