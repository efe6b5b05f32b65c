package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KeyBrokerSpec is the KBS to run and what it serves.
// +kubebuilder:validation:XValidation:rule="!has(self.storage.embedded) || self.replicas <= 1",message="the embedded store serves one replica: use postgres for more"
type KeyBrokerSpec struct {
	// Replicas of the KBS (more than one needs postgres storage).
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas int32 `json:"replicas"`

	// Image is the KBS's image (default: the operator's --kbs-image).
	// +optional
	Image string `json:"image,omitempty"`

	// Storage is where the KBS keeps resources, policies, reference values
	// and keys (its guests hold their attested sessions in their cookies).
	Storage KeyBrokerStorage `json:"storage"`

	// TLS is the HTTPS certificate. Without a Secret the operator generates
	// a self-signed one for the Service's names and address into
	// <name>-tls (ca.crt is what clients trust).
	// +optional
	TLS KeyBrokerTLS `json:"tls,omitempty"`

	// AdminKeySecret holds the admin API's Ed25519 key (private.key, PEM
	// PKCS#8); the operator generates it when absent (default
	// <name>-admin). The KBS gets the public part only.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +optional
	AdminKeySecret string `json:"adminKeySecret,omitempty"`

	// Resources selects the Secrets of the namespace whose keys become KBS
	// resources: key K of Secret S is <repository>/<type>/K, where the
	// repository is S's annotation cocoon.io/kbs-repository (default
	// "default") and the type its annotation cocoon.io/kbs-type (default
	// S's name).
	// +optional
	Resources *metav1.LabelSelector `json:"resources,omitempty"`

	// ResourcePolicy is the Rego resource policy (default: the KBS's,
	// affirming appraisals of a real TEE only).
	// +optional
	ResourcePolicy *corev1.ConfigMapKeySelector `json:"resourcePolicy,omitempty"`

	// AttestationPolicy is a Rego attestation policy (default: the KBS's
	// default_cpu).
	// +optional
	AttestationPolicy *AttestationPolicySource `json:"attestationPolicy,omitempty"`

	// ReferenceValues are registered as RVPS sample values: a name and its
	// JSON value (a list of accepted values, or a single value).
	// +listType=map
	// +listMapKey=name
	// +optional
	ReferenceValues []ReferenceValue `json:"referenceValues,omitempty"`

	// RuntimeRef names a CocoonRuntime whose guest's launch measurements
	// are registered, for each flavour with a TEE whose firmware the guest
	// image carries.
	// +optional
	RuntimeRef *RuntimeRef `json:"runtimeRef,omitempty"`
}

// KeyBrokerStorage is exactly one of postgres or embedded.
// +kubebuilder:validation:XValidation:rule="has(self.postgres) != has(self.embedded)",message="give exactly one of postgres or embedded"
type KeyBrokerStorage struct {
	// Postgres is a PostgreSQL database every replica shares.
	// +optional
	Postgres *PostgresStorage `json:"postgres,omitempty"`
	// Embedded is the KBS's own store on a PersistentVolumeClaim
	// (<name>-data).
	// +optional
	Embedded *EmbeddedStorage `json:"embedded,omitempty"`
}

// PostgresStorage locates the database.
type PostgresStorage struct {
	// +kubebuilder:validation:MinLength=1
	Host string `json:"host"`
	// +kubebuilder:default=5432
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`
	// +kubebuilder:default=kbs
	// +optional
	DB string `json:"db,omitempty"`
	// +kubebuilder:default=kbs
	// +optional
	Username string `json:"username,omitempty"`
	// PasswordSecret is the key of a Secret holding the password.
	// +optional
	PasswordSecret *corev1.SecretKeySelector `json:"passwordSecret,omitempty"`
}

// EmbeddedStorage sizes the KBS's volume.
type EmbeddedStorage struct {
	// +kubebuilder:default="1Gi"
	// +optional
	Size string `json:"size,omitempty"`
	// StorageClassName is the claim's class (the cluster's default when
	// empty).
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// KeyBrokerTLS names the HTTPS certificate.
type KeyBrokerTLS struct {
	// SecretName is a kubernetes.io/tls Secret (tls.crt, tls.key).
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// AttestationPolicySource is a policy in a ConfigMap and its id.
type AttestationPolicySource struct {
	corev1.ConfigMapKeySelector `json:",inline"`
	// ID is the policy's id (the one the KBS's tokens use is default_cpu).
	// +kubebuilder:default=default_cpu
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	// +optional
	ID string `json:"id,omitempty"`
}

// ReferenceValue is one RVPS sample reference value.
type ReferenceValue struct {
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_.-]+$`
	Name string `json:"name"`
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	Value apiextensionsv1.JSON `json:"value"`
}

// RuntimeRef names a CocoonRuntime and the pods' vCPU counts to measure.
type RuntimeRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// VCPUs are the vCPU counts whose SEV-SNP launch digests are
	// registered (a VM's vCPUs are part of it): the runtime's own count
	// plus the CPU limits of the pods that attest. Default: the runtime's
	// count (pods without CPU limits).
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=64
	// +kubebuilder:validation:MaxItems=16
	// +optional
	VCPUs []int32 `json:"vcpus,omitempty"`
}

// Registered is one thing the operator registered in the KBS, by a hash.
type Registered struct {
	// Name is the resource's path, the reference value's or policy's name.
	Name string `json:"name"`
	// Hash is HMAC-SHA256 of the value under the admin Secret's
	// status-key: it tells a change without revealing the value.
	Hash string `json:"hash"`
}

// Measurement is a launch measurement registered for a flavour.
type Measurement struct {
	Flavour Flavour `json:"flavour"`
	// Guest is the guest image's digest.
	Guest string `json:"guest"`
	// Name is the reference value (snp_launch_measurement, mr_td).
	Name string `json:"name"`
	// Values are the digests (hex), one per vCPU count for SEV-SNP.
	Values []string `json:"values"`
}

// KeyBrokerStatus is what the operator observed and registered.
type KeyBrokerStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (the KBS serves with everything registered),
	// Synced, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// URL is the KBS's address in the cluster.
	// +optional
	URL string `json:"url,omitempty"`
	// Resources, Policies and ReferenceValues registered, by hash.
	// +optional
	Resources []Registered `json:"resources,omitempty"`
	// +optional
	Policies []Registered `json:"policies,omitempty"`
	// +optional
	ReferenceValues []Registered `json:"referenceValues,omitempty"`
	// Measurements registered from RuntimeRef's guest.
	// +optional
	Measurements []Measurement `json:"measurements,omitempty"`
}

// KeyBroker runs a KBS and keeps its resources, policies and reference
// values in step with Kubernetes objects.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kb
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type KeyBroker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KeyBrokerSpec   `json:"spec,omitempty"`
	Status KeyBrokerStatus `json:"status,omitempty"`
}

// KeyBrokerList is a list of KeyBrokers.
// +kubebuilder:object:root=true
type KeyBrokerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KeyBroker `json:"items"`
}

func init() {
	SchemeBuilder.Register(&KeyBroker{}, &KeyBrokerList{})
}
