// Package generate writes a pod's agent policy from its Kubernetes YAML, as
// Kata Containers' genpolicy does: the containers' images (pinned by
// digest), commands, environment (values from ConfigMaps, hashes of
// Secrets', forms of the downward API's), mounts and volumes, security
// context and exec probes become the policy's data, checked by rules that
// name every field a request changes. What the kubelet and containerd add
// (/etc/hosts, resolv.conf, the termination log, the service-account
// token, Service variables) is allowed in the forms they take, as observed
// on a real node (test/k8s). The policy goes, with the KBS and image
// signature settings, into the pod's initdata annotation.
package generate

import (
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"

	cdhconfig "github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/image/signature"
	"github.com/cocoon-cc/cocoon/initdata"
)

//go:embed rules.rego
var rules string

// InitdataAnnotation is the pod annotation carrying initdata (Kata's).
const InitdataAnnotation = "io.katacontainers.config.hypervisor.cc_init_data"

// Formats of the policy.
const (
	FormatCocoon = "cocoon" // rules.rego and policy_data of this package
	FormatKata   = "kata"   // genpolicy's layout, for Kata Containers' agent
)

// ErrOptions is returned for options that cannot make a policy.
var ErrOptions = errors.New("invalid options")

// Options say how to generate.
type Options struct {
	Resolver  Resolver
	Format    string // FormatCocoon (default) or FormatKata
	AllowExec bool   // kubectl exec: any command, as the container's process runs
	AllowLogs bool   // kubectl logs: the containers' output
	// KBSURL is the KBS the guest attests to (aa.toml, cdh.toml); none:
	// the pod has no KBS (plain images only).
	KBSURL string
	// KBSCert is the KBS's HTTPS certificate (PEM), when not a public one.
	KBSCert string
	// ImagePolicy is the image signature policy (policy.json) the guest
	// enforces; ImagePolicyURI names one at the KBS (kbs:///...) instead.
	ImagePolicy    []byte
	ImagePolicyURI string
}

// Pod is one workload's generated policy.
type Pod struct {
	Workload *Workload
	Data     *PolicyData
	// Policy is the agent policy's text; Initdata the initdata TOML
	// holding it; Annotation that document as the pod's annotation
	// value (gzip, base64).
	Policy, Initdata, Annotation string
}

// Generate writes a policy for each workload of m and sets its initdata
// annotation in m's documents (Write writes them).
func Generate(ctx context.Context, m *Manifests, opts Options) ([]*Pod, error) {
	if opts.Resolver == nil {
		return nil, fmt.Errorf("%w: no image resolver", ErrOptions)
	}
	if len(m.Workloads) == 0 {
		return nil, fmt.Errorf("%w: no Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob", ErrManifest)
	}
	var pods []*Pod
	for _, w := range m.Workloads {
		b := &builder{m: m, w: w, res: opts.Resolver}
		pd, err := b.policyData(ctx, &opts)
		if err != nil {
			return nil, err
		}
		p := &Pod{Workload: w, Data: pd}
		switch opts.Format {
		case "", FormatCocoon:
			p.Policy, err = cocoonPolicy(pd)
		case FormatKata:
			p.Policy, err = kataPolicy(pd)
		default:
			err = fmt.Errorf("%w: format %q (cocoon or kata)", ErrOptions, opts.Format)
		}
		if err != nil {
			return nil, err
		}
		if p.Initdata, err = initdataDoc(p.Policy, &opts); err != nil {
			return nil, err
		}
		if p.Annotation, err = annotation(p.Initdata); err != nil {
			return nil, err
		}
		setAnnotation(mappingAt(w.tmpl, "metadata"), InitdataAnnotation, p.Annotation)
		setImages(mappingAt(w.tmpl, "spec"), pd)
		pods = append(pods, p)
	}
	return pods, nil
}

// cocoonPolicy is the rules with the pod's data, as genpolicy ends its
// policies with policy_data (which Trustee and the KBS read back).
func cocoonPolicy(pd *PolicyData) (string, error) {
	b, err := json.Marshal(pd)
	if err != nil {
		return "", err
	}
	return rules + "\npolicy_data := " + string(b) + "\n", nil
}

// initdataDoc is the initdata TOML: the KBS (aa.toml, cdh.toml, with the
// image signature policy) and the agent policy.
func initdataDoc(policy string, opts *Options) (string, error) {
	data := map[string]string{initdata.PolicyRego: policy}
	if opts.KBSURL == "" && (len(opts.ImagePolicy) > 0 || opts.ImagePolicyURI != "" || opts.KBSCert != "") {
		return "", fmt.Errorf("%w: an image signature policy or KBS certificate needs the KBS's URL", ErrOptions)
	}
	if opts.KBSURL != "" {
		u, err := url.Parse(opts.KBSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return "", fmt.Errorf("%w: KBS URL %q is not an http(s) URL", ErrOptions, opts.KBSURL)
		}
		if len(opts.ImagePolicy) > 0 && opts.ImagePolicyURI != "" {
			return "", fmt.Errorf("%w: an image signature policy or its URI, not both", ErrOptions)
		}
		if len(opts.ImagePolicy) > 0 {
			if _, err := signature.ParsePolicy(opts.ImagePolicy); err != nil {
				return "", fmt.Errorf("%w: image signature policy: %w", ErrOptions, err)
			}
		}
		aa := map[string]any{"token_configs": map[string]any{"kbs": tomlKBS(opts, "cert")}}
		cdh := map[string]any{"kbc": tomlKBS(opts, "kbs_cert")}
		cdh["kbc"].(map[string]any)["name"] = cdhconfig.KBCName
		image := map[string]any{}
		if len(opts.ImagePolicy) > 0 {
			image["image_security_policy"] = string(opts.ImagePolicy)
		}
		if opts.ImagePolicyURI != "" {
			image["image_security_policy_uri"] = opts.ImagePolicyURI
		}
		if len(image) > 0 {
			cdh["image"] = image
		}
		var err2 error
		if data[initdata.AATOML], err2 = tomlText(aa); err2 != nil {
			return "", err2
		}
		if data[initdata.CDHTOML], err2 = tomlText(cdh); err2 != nil {
			return "", err2
		}
		if _, err := cdhconfig.Parse([]byte(data[initdata.CDHTOML])); err != nil {
			return "", fmt.Errorf("%w: %w", ErrOptions, err)
		}
	}
	var doc strings.Builder
	fmt.Fprintf(&doc, "version = %q\nalgorithm = \"sha384\"\n\n[data]\n", initdata.Version)
	for _, k := range sortedKeys(data) {
		v, err := tomlString(data[k])
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&doc, "%q = %s\n", k, v)
	}
	d, err := initdata.Parse([]byte(doc.String()))
	if err != nil || !maps.Equal(d.Data, data) {
		return "", fmt.Errorf("%w: the generated initdata does not read back (%v)", ErrOptions, err)
	}
	return doc.String(), nil
}

// tomlString is s as a TOML value: a multi-line literal string, which
// keeps the text as it is for people reading the annotation, when s allows.
func tomlString(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: initdata text must be UTF-8", ErrOptions)
	}
	if !strings.Contains(s, "'''") && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f }) {
		return "'''\n" + s + "'''", nil
	}
	b, err := tomlText(map[string]string{"v": s})
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimPrefix(b, "v = "), "\n"), nil
}

func tomlKBS(opts *Options, certKey string) map[string]any {
	kbs := map[string]any{"url": opts.KBSURL}
	if opts.KBSCert != "" {
		kbs[certKey] = opts.KBSCert
	}
	return kbs
}

func tomlText(v any) (string, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// annotation is initdata as the annotation carries it: gzip, base64.
func annotation(doc string) (string, error) {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	zw.Write([]byte(doc))
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b.Bytes()), nil
}

// setAnnotation sets metadata.annotations[key] in a metadata node.
func setAnnotation(meta *yaml.Node, key, value string) {
	annotations := mappingAt(meta, "annotations")
	for i := 0; i+1 < len(annotations.Content); i += 2 {
		if annotations.Content[i].Value == key {
			annotations.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			return
		}
	}
	annotations.Content = append(annotations.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// setImages names each container's image by the digest the policy pins.
func setImages(spec *yaml.Node, pd *PolicyData) {
	for _, key := range []string{"initContainers", "containers"} {
		list := valueAt(spec, key)
		if list == nil {
			continue
		}
		for _, c := range list.Content {
			name := valueAt(c, "name")
			if name == nil || pd.Containers[name.Value] == nil {
				continue
			}
			if image := valueAt(c, "image"); image != nil {
				*image = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: pd.Containers[name.Value].Image}
			}
		}
	}
}

// Write writes the documents, annotated, as one YAML stream.
func (m *Manifests) Write() ([]byte, error) {
	var b bytes.Buffer
	if len(m.docs) == 0 {
		return nil, nil
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	for _, d := range m.docs {
		if err := enc.Encode(d); err != nil {
			return nil, err
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// PolicyName names a workload's policy file: kind-name.rego.
func (w *Workload) PolicyName() string {
	return strings.ToLower(w.Kind) + "-" + w.Name + ".rego"
}
