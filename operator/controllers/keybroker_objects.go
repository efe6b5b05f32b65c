package controllers

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
)

// The KBS pod's layout.
const (
	kbsPort        = 8080
	kbsConfigDir   = "/etc/kbs/config"
	kbsTLSDir      = "/etc/kbs/tls"
	kbsSealingDir  = "/run/secrets/kbs-sealing"
	kbsDataDir     = "/var/lib/cocoon/kbs"
	adminIssuer    = "cocoon-operator"
	adminKeyFile   = "private.key"
	adminPubFile   = "admin.pub"
	sealingKeyFile = "sealing.key"
	caFile         = "ca.crt"
	// certRenewal is how long before its expiry a generated certificate
	// is replaced.
	certRenewal = 30 * 24 * time.Hour
)

func kbLabels(kb *cocoonv1.KeyBroker) map[string]string {
	return map[string]string{"app.kubernetes.io/name": "kbs", "app.kubernetes.io/instance": kb.Name,
		"app.kubernetes.io/managed-by": "cocoon-operator"}
}

func adminSecretName(kb *cocoonv1.KeyBroker) string {
	if kb.Spec.AdminKeySecret != "" {
		return kb.Spec.AdminKeySecret
	}
	return kb.Name + "-admin"
}

func tlsSecretName(kb *cocoonv1.KeyBroker) string {
	if kb.Spec.TLS.SecretName != "" {
		return kb.Spec.TLS.SecretName
	}
	return kb.Name + "-tls"
}

// serviceDNSNames are the names the Service answers to in the cluster.
func serviceDNSNames(kb *cocoonv1.KeyBroker) []string {
	return []string{kb.Name, kb.Name + "." + kb.Namespace, kb.Name + "." + kb.Namespace + ".svc",
		kb.Name + "." + kb.Namespace + ".svc.cluster.local"}
}

// ensureGeneratedSecret makes Secret name with gen's data when it does not
// exist (owned by kb), and returns its data. A Secret that exists is used
// as it is, also one the user made.
func (r *KeyBrokerReconciler) ensureGeneratedSecret(ctx context.Context, kb *cocoonv1.KeyBroker, name string,
	gen func() (map[string][]byte, error)) (map[string][]byte, error) {
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: kb.Namespace, Name: name}, &s)
	if err == nil {
		return s.Data, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	data, err := gen()
	if err != nil {
		return nil, err
	}
	s = corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kb.Namespace, Labels: kbLabels(kb)}, Data: data}
	if err := controllerutil.SetControllerReference(kb, &s, r.Scheme()); err != nil {
		return nil, err
	}
	return data, r.Create(ctx, &s)
}

// generateAdminKey is an Ed25519 key pair: the operator signs admin
// tokens with it, the KBS trusts its public part.
func generateAdminKey() (map[string][]byte, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{adminKeyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		adminPubFile: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})}, nil
}

func generateSealingKey() (map[string][]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return map[string][]byte{sealingKeyFile: k}, err
}

// ensureTLS makes the generated certificate Secret, again when the
// Service's address or names are not all in it or it nears its expiry,
// and returns the PEM roots clients trust. A Secret the spec names is the
// user's: ca.crt when it has one, else its tls.crt.
func (r *KeyBrokerReconciler) ensureTLS(ctx context.Context, kb *cocoonv1.KeyBroker, svc *corev1.Service) ([]byte, error) {
	var s corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: kb.Namespace, Name: tlsSecretName(kb)}, &s)
	if kb.Spec.TLS.SecretName != "" {
		if err != nil {
			return nil, specError("tls.secretName: %v", err)
		}
		if len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
			return nil, specError("tls.secretName: Secret %s has no tls.crt and tls.key", s.Name)
		}
		if ca := s.Data[caFile]; len(ca) > 0 {
			return ca, nil
		}
		return s.Data[corev1.TLSCertKey], nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	ips := []net.IP{}
	if ip := net.ParseIP(svc.Spec.ClusterIP); ip != nil {
		ips = append(ips, ip)
	}
	if err == nil && certCovers(s.Data[corev1.TLSCertKey], serviceDNSNames(kb), ips) {
		return s.Data[caFile], nil
	}
	data, gerr := selfSigned(kb.Name+"."+kb.Namespace+".svc", serviceDNSNames(kb), ips)
	if gerr != nil {
		return nil, gerr
	}
	s.ObjectMeta = metav1.ObjectMeta{Name: tlsSecretName(kb), Namespace: kb.Namespace, Labels: kbLabels(kb),
		ResourceVersion: s.ResourceVersion}
	s.Type, s.Data = corev1.SecretTypeTLS, data
	if err := controllerutil.SetControllerReference(kb, &s, r.Scheme()); err != nil {
		return nil, err
	}
	if apierrors.IsNotFound(err) {
		return data[caFile], r.Create(ctx, &s)
	}
	return data[caFile], r.Update(ctx, &s)
}

// certCovers says whether a PEM certificate names every DNS name and IP
// and stays valid for certRenewal more.
func certCovers(certPEM []byte, names []string, ips []net.IP) bool {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil || time.Until(c.NotAfter) < certRenewal {
		return false
	}
	for _, n := range names {
		if !slices.Contains(c.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// selfSigned is a P-256 certificate for the names, valid a year, that is
// its own root (ca.crt is tls.crt).
func selfSigned(cn string, names []string, ips []net.IP) (map[string][]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: []string{"cocoon-operator"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), DNSNames: names, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return map[string][]byte{corev1.TLSCertKey: cert, caFile: cert,
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, nil
}

// kbsConfig is the KBS's kbs.toml: HTTPS with the mounted certificate, the
// storage, and an admin API that trusts the operator's key only.
func kbsConfig(kb *cocoonv1.KeyBroker) ([]byte, error) {
	sealing := kbsSealingDir + "/" + sealingKeyFile
	storage := map[string]any{}
	if pg := kb.Spec.Storage.Postgres; pg != nil {
		// The password comes from PGPASSWORD (the Secret), never this file.
		storage["storage_type"] = "Postgres"
		storage["backends"] = map[string]any{"postgres": map[string]any{"host": pg.Host, "port": pg.Port, "db": pg.DB,
			"username": pg.Username, "sealing_key_path": sealing}}
	} else {
		storage["storage_type"] = "Embedded"
		storage["backends"] = map[string]any{"embedded": map[string]any{"path": kbsDataDir, "sealing_key_path": sealing}}
	}
	doc := map[string]any{
		"data_dir": kbsDataDir,
		"http_server": map[string]any{"sockets": []string{"0.0.0.0:" + strconv.Itoa(kbsPort)},
			"private_key": kbsTLSDir + "/" + corev1.TLSPrivateKeyKey, "certificate": kbsTLSDir + "/" + corev1.TLSCertKey},
		"storage_backend": storage,
		"admin": map[string]any{
			"authorization_mode": "AuthenticatedAuthorization",
			"authentication": map[string]any{"bearer_jwt": map[string]any{"identity_providers": []map[string]any{
				{"issuer": adminIssuer, "public_key_uri": kbsConfigDir + "/" + adminPubFile}}}},
			"authorization": map[string]any{"regex_acl": map[string]any{"acls": []map[string]any{
				{"role": "admin", "allowed_endpoints": "^/kbs/v0/.+$"}}}},
		},
	}
	var b bytes.Buffer
	b.WriteString("# Written by cocoon-operator (KeyBroker " + kb.Namespace + "/" + kb.Name + ").\n")
	err := toml.NewEncoder(&b).Encode(doc)
	return b.Bytes(), err
}

// ensureConfig writes kbs.toml and the admin public key into the
// ConfigMap <name>-config.
func (r *KeyBrokerReconciler) ensureConfig(ctx context.Context, kb *cocoonv1.KeyBroker, adminPub []byte) (map[string]string, error) {
	cfg, err := kbsConfig(kb)
	if err != nil {
		return nil, err
	}
	data := map[string]string{"kbs.toml": string(cfg), adminPubFile: string(adminPub)}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: kb.Name + "-config", Namespace: kb.Namespace}}
	_, err = controllerutil.CreateOrUpdate(ctx, r.Client, cm, func() error {
		cm.Labels, cm.Data = kbLabels(kb), data
		return controllerutil.SetControllerReference(kb, cm, r.Scheme())
	})
	return data, err
}

func (r *KeyBrokerReconciler) ensureService(ctx context.Context, kb *cocoonv1.KeyBroker) (*corev1.Service, error) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: kb.Name, Namespace: kb.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, svc, func() error {
		svc.Labels = kbLabels(kb)
		svc.Spec.Selector = kbLabels(kb)
		svc.Spec.Ports = []corev1.ServicePort{{Name: "https", Port: kbsPort, TargetPort: intstr.FromInt32(kbsPort), Protocol: corev1.ProtocolTCP}}
		return controllerutil.SetControllerReference(kb, svc, r.Scheme())
	})
	return svc, err
}

// ensureClaim makes the embedded store's claim; its size and class are
// fixed once made.
func (r *KeyBrokerReconciler) ensureClaim(ctx context.Context, kb *cocoonv1.KeyBroker) error {
	e := kb.Spec.Storage.Embedded
	size, err := resource.ParseQuantity(e.Size)
	if err != nil || size.Sign() <= 0 {
		return specError("storage.embedded.size: %q is not a positive quantity (e.g. 1Gi)", e.Size)
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: kb.Name + "-data", Namespace: kb.Namespace}}
	err = r.Get(ctx, client.ObjectKeyFromObject(pvc), pvc)
	if !apierrors.IsNotFound(err) {
		return err
	}
	pvc.Labels = kbLabels(kb)
	pvc.Spec = corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		StorageClassName: e.StorageClassName,
		Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}
	if err := controllerutil.SetControllerReference(kb, pvc, r.Scheme()); err != nil {
		return err
	}
	return r.Create(ctx, pvc)
}

// ensureDeployment runs the KBS; a change of its configuration,
// certificate or sealing key rolls its pods (their digest is in the
// template).
func (r *KeyBrokerReconciler) ensureDeployment(ctx context.Context, kb *cocoonv1.KeyBroker, rollout string) (*appsv1.Deployment, error) {
	image := kb.Spec.Image
	if image == "" {
		image = r.KBSImage
	}
	if image == "" {
		return nil, specError("image: none given and the operator has no --kbs-image")
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: kb.Name, Namespace: kb.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, d, func() error {
		labels := kbLabels(kb)
		d.Labels = labels
		replicas := kb.Spec.Replicas
		d.Spec.Replicas = &replicas
		if d.Spec.Selector == nil {
			d.Spec.Selector = &metav1.LabelSelector{MatchLabels: labels}
		}
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType}
		if kb.Spec.Storage.Embedded != nil {
			// One process holds the store's lock at a time.
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		}
		d.Spec.Template = kbsPod(kb, image, labels, rollout)
		return controllerutil.SetControllerReference(kb, d, r.Scheme())
	})
	return d, err
}

func kbsPod(kb *cocoonv1.KeyBroker, image string, labels map[string]string, rollout string) corev1.PodTemplateSpec {
	uid, no, yes := int64(65532), false, true
	data := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	var env []corev1.EnvVar
	if kb.Spec.Storage.Embedded != nil {
		data = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: kb.Name + "-data"}}
	}
	if pg := kb.Spec.Storage.Postgres; pg != nil && pg.PasswordSecret != nil {
		env = append(env, corev1.EnvVar{Name: "PGPASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: pg.PasswordSecret}})
	}
	mode := int32(0o440)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"cocoon.io/kbs-rollout": rollout}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name:    "kbs",
				Image:   image,
				Command: []string{"/kbs"},
				Args:    []string{"--config", kbsConfigDir + "/kbs.toml"},
				Env:     env,
				Ports:   []corev1.ContainerPort{{Name: "https", ContainerPort: kbsPort}},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/healthz", Port: intstr.FromInt32(kbsPort), Scheme: corev1.URISchemeHTTPS}}, PeriodSeconds: 2},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: kbsConfigDir, ReadOnly: true},
					{Name: "tls", MountPath: kbsTLSDir, ReadOnly: true},
					{Name: "sealing", MountPath: kbsSealingDir, ReadOnly: true},
					{Name: "data", MountPath: kbsDataDir},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: kb.Name + "-config"}}}},
				{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: tlsSecretName(kb), DefaultMode: &mode}}},
				{Name: "sealing", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: kb.Name + "-sealing", DefaultMode: &mode}}},
				{Name: "data", VolumeSource: data},
			},
		},
	}
}

// digestOf is a short digest of the pod's inputs, for the rollout
// annotation.
func digestOf(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// publicPEM is the PEM public key of an admin key, for the KBS.
func publicPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
