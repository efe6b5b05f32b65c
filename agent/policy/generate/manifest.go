package generate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sjson "sigs.k8s.io/json"
)

// MaxManifestSize bounds the manifests one generation reads.
const MaxManifestSize = 4 << 20

// ErrManifest is returned for manifests the generator cannot read or
// will not write a policy for; nothing is written then.
var ErrManifest = errors.New("invalid manifest")

// Manifests are Kubernetes objects read from YAML documents, in order:
// the workloads a policy is generated for, the ConfigMaps and Secrets
// their containers reference, and the documents themselves so the
// annotated YAML can be written back with everything else unchanged.
type Manifests struct {
	docs       []*yaml.Node
	Workloads  []*Workload
	ConfigMaps map[string]*corev1.ConfigMap // by namespace/name
	Secrets    map[string]*corev1.Secret
	size       int // bytes read
}

// Workload is an object whose pods the policy is for.
type Workload struct {
	Kind, Name, Namespace string
	// PodName is a regular expression of the names the workload's pods
	// get (the CRI sandbox name): a Pod's own name, a Deployment's
	// name-<template hash>-<5 characters>, ...
	PodName  string
	Template corev1.PodTemplateSpec
	// tmpl is the pod template's node in its document (a Pod's own), where
	// the initdata annotation and the images' digests go.
	tmpl *yaml.Node
}

// typeMeta is what tells a document's kind.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Kubernetes names: a DNS subdomain.
var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Parse reads the documents of one or more YAML streams (or JSON objects):
// the manifests a policy is generated for and written back. Documents of
// kinds the generator does not handle are kept as they are.
func Parse(streams ...[]byte) (*Manifests, error) {
	m := &Manifests{ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{}}
	for _, s := range streams {
		if err := m.add(s, true); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AddReferences reads the ConfigMaps and Secrets of a stream whose
// documents are not written back (objects the workloads reference, kept
// elsewhere); its other documents are ignored.
func (m *Manifests) AddReferences(stream []byte) error {
	return m.add(stream, false)
}

func (m *Manifests) add(stream []byte, keep bool) error {
	if m.size += len(stream); m.size > MaxManifestSize {
		return fmt.Errorf("%w: more than %d bytes", ErrManifest, MaxManifestSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(stream))
	for n := 1; ; n++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: document %d: %v", ErrManifest, n, err)
		}
		if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
			continue // an empty document
		}
		workloads := len(m.Workloads)
		if err := m.object(&doc); err != nil {
			return fmt.Errorf("%w: document %d: %w", ErrManifest, n, err)
		}
		if !keep {
			m.Workloads = m.Workloads[:workloads]
			continue
		}
		m.docs = append(m.docs, &doc)
	}
}

// controller is a workload kind: where its pod template is and the
// names its controller gives pods (a suffix to the workload's name).
type controller struct {
	decode    func(*yaml.Node) (metav1.ObjectMeta, *corev1.PodTemplateSpec, error)
	path      []string
	podSuffix string
}

var controllers = map[string]controller{
	"v1 Pod": {decode: templateOf(func(o *corev1.Pod) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}
	})},
	// The ReplicaSet's name ends with the pod template's hash (at most 10
	// characters of a safe alphabet), the pod's with 5 more.
	"apps/v1 Deployment": {decode: templateOf(func(o *appsv1.Deployment) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.Template
	}), path: []string{"spec", "template"}, podSuffix: "-[a-z0-9]{1,10}-[a-z0-9]{5}"},
	"apps/v1 ReplicaSet": {decode: templateOf(func(o *appsv1.ReplicaSet) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.Template
	}), path: []string{"spec", "template"}, podSuffix: "-[a-z0-9]{5}"},
	"apps/v1 StatefulSet": {decode: templateOf(func(o *appsv1.StatefulSet) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.Template
	}), path: []string{"spec", "template"}, podSuffix: "-(0|[1-9][0-9]*)"},
	"apps/v1 DaemonSet": {decode: templateOf(func(o *appsv1.DaemonSet) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.Template
	}), path: []string{"spec", "template"}, podSuffix: "-[a-z0-9]{5}"},
	// An Indexed Job's pods carry their index.
	"batch/v1 Job": {decode: templateOf(func(o *batchv1.Job) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.Template
	}), path: []string{"spec", "template"}, podSuffix: "(-(0|[1-9][0-9]*))?-[a-z0-9]{5}"},
	// A CronJob's Jobs are named after the scheduled time, in minutes.
	"batch/v1 CronJob": {decode: templateOf(func(o *batchv1.CronJob) (*metav1.ObjectMeta, *corev1.PodTemplateSpec) {
		return &o.ObjectMeta, &o.Spec.JobTemplate.Spec.Template
	}), path: []string{"spec", "jobTemplate", "spec", "template"}, podSuffix: "-[0-9]{1,12}(-(0|[1-9][0-9]*))?-[a-z0-9]{5}"},
}

// templateOf decodes a workload of type T strictly and finds its metadata
// and pod template.
func templateOf[T any](get func(*T) (*metav1.ObjectMeta, *corev1.PodTemplateSpec)) func(*yaml.Node) (metav1.ObjectMeta, *corev1.PodTemplateSpec, error) {
	return func(root *yaml.Node) (metav1.ObjectMeta, *corev1.PodTemplateSpec, error) {
		var o T
		if err := decodeStrict(root, &o, true); err != nil {
			return metav1.ObjectMeta{}, nil, err
		}
		meta, tmpl := get(&o)
		return *meta, tmpl, nil
	}
}

// object decodes one document into the typed object of its kind.
func (m *Manifests) object(doc *yaml.Node) error {
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return errors.New("not an object")
	}
	var tm typeMeta
	if err := decodeStrict(root, &tm, false); err != nil {
		return err
	}
	kind := tm.APIVersion + " " + tm.Kind
	switch kind {
	case "v1 ConfigMap":
		var o corev1.ConfigMap
		if err := decodeStrict(root, &o, true); err != nil {
			return err
		}
		m.ConfigMaps[key(o.Namespace, o.Name)] = &o
		return nil
	case "v1 Secret":
		var o corev1.Secret
		if err := decodeStrict(root, &o, true); err != nil {
			return err
		}
		// The API server merges stringData into data.
		for k, v := range o.StringData {
			if o.Data == nil {
				o.Data = map[string][]byte{}
			}
			o.Data[k] = []byte(v)
		}
		m.Secrets[key(o.Namespace, o.Name)] = &o
		return nil
	}
	ctl, ok := controllers[kind]
	if !ok {
		return nil // not a workload: written back as it is
	}
	meta, tmpl, err := ctl.decode(root)
	if err != nil {
		return err
	}
	w := &Workload{Kind: tm.Kind, Name: meta.Name, Namespace: meta.Namespace, Template: *tmpl, tmpl: mappingAt(root, ctl.path...),
		PodName: "^" + regexp.QuoteMeta(meta.Name) + ctl.podSuffix + "$"}
	if w.Namespace == "" {
		w.Namespace = "default"
	}
	switch {
	case w.Name == "" && tm.Kind == "Pod" && meta.GenerateName != "":
		w.PodName = "^" + regexp.QuoteMeta(meta.GenerateName) + "[a-z0-9]{5}$"
	case w.Name == "":
		return fmt.Errorf("%s has no name", tm.Kind)
	case !dnsSubdomain.MatchString(w.Name):
		return fmt.Errorf("%s name %q is not a DNS subdomain", tm.Kind, w.Name)
	}
	m.Workloads = append(m.Workloads, w)
	return nil
}

// key names a namespaced object.
func key(namespace, name string) string {
	if namespace == "" {
		namespace = "default"
	}
	return namespace + "/" + name
}

// decodeStrict decodes a YAML node into v through JSON, as the API server
// reads it (field names are case-sensitive); strict refuses fields v does
// not have: a field the generator does not know could change what a
// container runs.
func decodeStrict(n *yaml.Node, v any, strict bool) error {
	var tree any
	if err := n.Decode(&tree); err != nil {
		return err
	}
	b, err := json.Marshal(tree)
	if err != nil {
		return err
	}
	if !strict {
		return k8sjson.UnmarshalCaseSensitivePreserveInts(b, v)
	}
	strictErrs, err := k8sjson.UnmarshalStrict(b, v, k8sjson.DisallowUnknownFields, k8sjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// mappingAt is the mapping node at keys below n, created when missing.
func mappingAt(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		next := valueAt(n, k)
		switch {
		case next == nil:
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, next)
		case next.Kind != yaml.MappingNode: // null: the decoder took it for an empty object
			*next = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		n = next
	}
	return n
}

// valueAt is the value of key in mapping n; nil when there is none.
func valueAt(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
