package controllers

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kbsclient "github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
	"github.com/cocoon-cc/cocoon/operator/launchmeasure"
	"github.com/cocoon-cc/cocoon/protocol"
	"github.com/cocoon-cc/cocoon/rvps/refvalues"
)

// Annotations of a selected Secret that place its keys in the KBS.
const (
	AnnotationRepository = "cocoon.io/kbs-repository"
	AnnotationType       = "cocoon.io/kbs-type"
)

// What the KBS holds, by kind, in the status.
const (
	kindResource = "resource"
	kindPolicy   = "policy"
	kindRefValue = "reference value"
)

// policyResource is the status name of the resource policy.
const policyResource = "resource-policy"

// item is one thing to register in the KBS.
type item struct {
	kind, name string
	value      []byte
	push       func(context.Context, *kbsclient.Admin) error
}

// desired are the items of the spec and the objects it names, and the
// launch measurements of the runtime it names.
func (r *KeyBrokerReconciler) desired(ctx context.Context, kb *cocoonv1.KeyBroker) ([]item, []cocoonv1.Measurement, error) {
	items, err := r.resources(ctx, kb)
	if err != nil {
		return nil, nil, err
	}
	if ref := kb.Spec.ResourcePolicy; ref != nil {
		rego, err := r.configMapKey(ctx, kb.Namespace, "resourcePolicy", ref)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, item{kindPolicy, policyResource, []byte(rego), func(ctx context.Context, a *kbsclient.Admin) error {
			return a.SetResourcePolicy(ctx, rego)
		}})
	}
	if ref := kb.Spec.AttestationPolicy; ref != nil {
		rego, err := r.configMapKey(ctx, kb.Namespace, "attestationPolicy", &ref.ConfigMapKeySelector)
		if err != nil {
			return nil, nil, err
		}
		id := ref.ID
		items = append(items, item{kindPolicy, "attestation-policy/" + id, []byte(rego), func(ctx context.Context, a *kbsclient.Admin) error {
			return a.SetAttestationPolicy(ctx, id, "rego", rego)
		}})
	}
	for _, rv := range kb.Spec.ReferenceValues {
		value := json.RawMessage(rv.Value.Raw)
		items = append(items, item{kindRefValue, rv.Name, value, func(ctx context.Context, a *kbsclient.Admin) error {
			return a.RegisterSampleReferenceValue(ctx, rv.Name, value)
		}})
	}
	ms, err := r.measurements(ctx, kb)
	if err != nil {
		return nil, nil, err
	}
	// One reference value per name: the values of every guest measured.
	values := map[string][]string{}
	var names []string
	for _, m := range ms {
		if slices.ContainsFunc(kb.Spec.ReferenceValues, func(rv cocoonv1.ReferenceValue) bool { return rv.Name == m.Name }) {
			return nil, nil, specError("referenceValues: %s is the measurement of runtimeRef's %s guest", m.Name, m.Flavour)
		}
		if _, ok := values[m.Name]; !ok {
			names = append(names, m.Name)
		}
		for _, v := range m.Values {
			if !slices.Contains(values[m.Name], v) {
				values[m.Name] = append(values[m.Name], v)
			}
		}
	}
	for _, name := range names {
		msg, err := refvalues.Message(map[string]any{name: values[name]})
		if err != nil {
			return nil, nil, err
		}
		items = append(items, item{kindRefValue, name, msg, func(ctx context.Context, a *kbsclient.Admin) error {
			return a.RegisterReferenceValues(ctx, msg)
		}})
	}
	return items, ms, nil
}

// resources are the keys of the selected Secrets: key K of Secret S is
// <repository>/<type>/K (annotations, by default "default" and S's name).
func (r *KeyBrokerReconciler) resources(ctx context.Context, kb *cocoonv1.KeyBroker) ([]item, error) {
	if kb.Spec.Resources == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(kb.Spec.Resources)
	if err != nil {
		return nil, specError("resources: %v", err)
	}
	var secrets corev1.SecretList
	if err := r.List(ctx, &secrets, client.InNamespace(kb.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	var items []item
	for _, s := range secrets.Items {
		repo, typ := s.Annotations[AnnotationRepository], s.Annotations[AnnotationType]
		if repo == "" {
			repo = "default"
		}
		if typ == "" {
			typ = s.Name
		}
		for key, value := range s.Data {
			p, err := protocol.NewResourcePath(repo, typ, key)
			if err != nil {
				return nil, specError("resources: Secret %s key %q: %v", s.Name, key, err)
			}
			path := p.String()
			items = append(items, item{kindResource, path, value, func(ctx context.Context, a *kbsclient.Admin) error {
				return a.SetResource(ctx, path, value)
			}})
		}
	}
	return items, nil
}

func (r *KeyBrokerReconciler) configMapKey(ctx context.Context, ns, field string, ref *corev1.ConfigMapKeySelector) (string, error) {
	var cm corev1.ConfigMap
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return "", specError("%s: no ConfigMap %s", field, ref.Name)
		}
		return "", err
	}
	v, ok := cm.Data[ref.Key]
	if !ok {
		return "", specError("%s: ConfigMap %s has no key %q", field, ref.Name, ref.Key)
	}
	return v, nil
}

// measurements are the launch measurements of the guest the runtimeRef's
// CocoonRuntime installs, computed once per guest and launch settings.
func (r *KeyBrokerReconciler) measurements(ctx context.Context, kb *cocoonv1.KeyBroker) ([]cocoonv1.Measurement, error) {
	ref := kb.Spec.RuntimeRef
	if ref == nil {
		return nil, nil
	}
	var rt cocoonv1.CocoonRuntime
	if err := r.Get(ctx, client.ObjectKey{Name: ref.Name}, &rt); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &condError{reason: "RuntimeNotFound", msg: "runtimeRef: no CocoonRuntime " + ref.Name}
		}
		return nil, err
	}
	l := launchmeasure.Launch{KernelParams: rt.Spec.Shim.KernelParams}
	for _, n := range ref.VCPUs {
		l.VCPUs = append(l.VCPUs, int(n))
	}
	if len(l.VCPUs) == 0 {
		l.VCPUs = []int{max(1, int(rt.Spec.Shim.VCPUs))}
	}
	flavours := flavourNames(rt.Spec.Flavours)
	key := fmt.Sprint(rt.Spec.Guest.Image, flavours, l)
	r.mu.Lock()
	ms, ok := r.measured[key]
	r.mu.Unlock()
	if !ok {
		digest, results, err := launchmeasure.Measure(ctx, rt.Spec.Guest.Image, rt.Spec.Guest.PlainHTTP, flavours, l)
		if err != nil {
			return nil, &condError{reason: "MeasurementFailed", msg: fmt.Sprintf("runtimeRef %s: %v", ref.Name, err)}
		}
		ms = make([]cocoonv1.Measurement, len(results))
		for i, res := range results {
			ms[i] = cocoonv1.Measurement{Flavour: cocoonv1.Flavour(res.Flavour), Guest: digest, Name: res.Name, Values: res.Values}
		}
		r.mu.Lock()
		if len(r.measured) >= maxMeasured {
			clear(r.measured)
		}
		r.measured[key] = ms
		r.mu.Unlock()
	}
	return withPrevious(ms, kb.Status.Measurements, guestDigest(rt.Spec.Guest)), nil
}

// maxMeasured bounds the measurements kept, by guest and settings.
const maxMeasured = 64

// withPrevious adds to the measurements of the current guest those of the
// guest registered before it (the first other guest in the status): a
// rollout leaves VMs of the previous guest running, and they attest again
// when their tokens expire. One guest back: a third guest drops the first.
func withPrevious(cur, status []cocoonv1.Measurement, guest string) []cocoonv1.Measurement {
	prev := ""
	for _, m := range status {
		if m.Guest != guest {
			prev = m.Guest
			break
		}
	}
	out := slices.Clone(cur)
	for _, m := range status {
		if prev != "" && m.Guest == prev {
			out = append(out, m)
		}
	}
	return out
}

// adminClient calls the KBS's admin API through its Service, trusting
// roots, with tokens signed by the admin key.
func adminClient(kb *cocoonv1.KeyBroker, svc *corev1.Service, roots []byte, key crypto.Signer) (*kbsclient.Admin, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return nil, specError("tls: no PEM certificate to trust in the TLS Secret")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: kb.Name + "." + kb.Namespace + ".svc", MinVersion: tls.VersionTLS12}}}
	url := "https://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(kbsPort))
	return kbsclient.NewAdminSigning(url, hc, key, kbsclient.TokenClaims{Role: protocol.AdminRole, Issuer: adminIssuer}), nil
}

// statusKey keys the status's hashes: derived from the admin key, so
// only who holds it can test a guess of a value.
func statusKey(adminKeyPEM []byte) []byte {
	h := sha256.New()
	h.Write([]byte("cocoon-operator KeyBroker status\x00"))
	h.Write(adminKeyPEM)
	return h.Sum(nil)
}

func hashOf(key, value []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil))
}

// register registers what changed since the status's record (everything when
// full), deletes the resources no longer selected and restores the
// default resource policy when the spec no longer names one. It returns
// the new record and the names it registered.
func register(ctx context.Context, a *kbsclient.Admin, st *cocoonv1.KeyBrokerStatus, items []item, key []byte, full bool) ([]string, error) {
	prev := map[string]string{}
	for kind, list := range map[string][]cocoonv1.Registered{kindResource: st.Resources, kindPolicy: st.Policies, kindRefValue: st.ReferenceValues} {
		for _, reg := range list {
			prev[kind+"/"+reg.Name] = reg.Hash
		}
	}
	next := map[string][]cocoonv1.Registered{}
	var changed []string
	for _, it := range items {
		h := hashOf(key, it.value)
		k := it.kind + "/" + it.name
		if full || prev[k] != h {
			if err := it.push(ctx, a); err != nil {
				return changed, &condError{reason: "KBSRefused", msg: fmt.Sprintf("%s %s: %v", it.kind, it.name, err)}
			}
			changed = append(changed, it.kind+" "+it.name)
		}
		delete(prev, k)
		next[it.kind] = append(next[it.kind], cocoonv1.Registered{Name: it.name, Hash: h})
	}
	for k := range prev {
		switch kind, name, _ := strings.Cut(k, "/"); {
		case kind == kindResource:
			if err := a.DeleteResource(ctx, name); err != nil && !isNotFound(err) {
				return changed, &condError{reason: "KBSRefused", msg: fmt.Sprintf("delete resource %s: %v", name, err)}
			}
			changed = append(changed, "deleted resource "+name)
		case kind == kindPolicy && name == policyResource:
			if err := a.SetResourcePolicy(ctx, respolicy.Default); err != nil {
				return changed, &condError{reason: "KBSRefused", msg: fmt.Sprintf("default resource policy: %v", err)}
			}
			changed = append(changed, "default resource policy")
		}
	}
	for _, list := range next {
		slices.SortFunc(list, func(a, b cocoonv1.Registered) int { return strings.Compare(a.Name, b.Name) })
	}
	st.Resources, st.Policies, st.ReferenceValues = next[kindResource], next[kindPolicy], next[kindRefValue]
	return changed, nil
}

func isNotFound(err error) bool {
	var e *protocol.Error
	return errors.As(err, &e) && e.Status() == http.StatusNotFound
}

// condError is a failure the status reports with a reason of its own.
type condError struct{ reason, msg string }

func (e *condError) Error() string { return e.msg }

// specError is a spec (or an object it names) that cannot be served.
func specError(format string, args ...any) error {
	return &condError{reason: "InvalidSpec", msg: fmt.Sprintf(format, args...)}
}
