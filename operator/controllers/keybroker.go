package controllers

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kbsclient "github.com/cocoon-cc/cocoon/kbs/client"
	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
)

// Condition types of a KeyBroker besides Ready and Degraded.
const ConditionSynced = "Synced"

// fullSync is how often everything is registered again, in case the
// KBS's store lost it (a new database).
const fullSync = 10 * time.Minute

// KeyBrokerReconciler runs KBSes and registers in them what their
// KeyBrokers select.
type KeyBrokerReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// KBSImage is the KBS's image, unless the KeyBroker names one.
	KBSImage string

	mu       sync.Mutex
	measured map[string][]cocoonv1.Measurement // by guest and launch settings
	fullAt   map[types.NamespacedName]time.Time
}

// +kubebuilder:rbac:groups=cocoon.io,resources=keybrokers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cocoon.io,resources=keybrokers/status;keybrokers/finalizers,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets;persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the reconciler: KeyBrokers, what they own,
// and the Secrets, ConfigMaps and CocoonRuntimes they name or select.
func (r *KeyBrokerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.measured = map[string][]cocoonv1.Measurement{}
	r.fullAt = map[types.NamespacedName]time.Time{}
	inNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.requests(ctx, func(kb *cocoonv1.KeyBroker) bool { return kb.Namespace == o.GetNamespace() })
	})
	byRuntime := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		return r.requests(ctx, func(kb *cocoonv1.KeyBroker) bool {
			return kb.Spec.RuntimeRef != nil && kb.Spec.RuntimeRef.Name == o.GetName()
		})
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&cocoonv1.KeyBroker{}).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Watches(&corev1.Secret{}, inNamespace).
		Watches(&corev1.ConfigMap{}, inNamespace).
		Watches(&cocoonv1.CocoonRuntime{}, byRuntime).
		Complete(r)
}

func (r *KeyBrokerReconciler) requests(ctx context.Context, match func(*cocoonv1.KeyBroker) bool) []reconcile.Request {
	var list cocoonv1.KeyBrokerList
	if err := r.List(ctx, &list); err != nil {
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if match(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// Reconcile implements reconcile.Reconciler.
func (r *KeyBrokerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var kb cocoonv1.KeyBroker
	if err := r.Get(ctx, req.NamespacedName, &kb); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.fullAt, req.NamespacedName)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	old := kb.DeepCopy()
	res, err := r.reconcile(ctx, &kb)
	var ce *condError
	if errors.As(err, &ce) {
		r.fail(&kb, old, ce)
		err = nil
		if ce.reason != "InvalidSpec" {
			res.RequeueAfter = resync
		}
	}
	if perr := r.Status().Patch(ctx, &kb, client.MergeFrom(old)); perr != nil && !apierrors.IsConflict(perr) && err == nil {
		err = perr
	}
	return res, err
}

// reconcile makes the KBS's objects, then registers what the spec
// selects once a replica serves.
func (r *KeyBrokerReconciler) reconcile(ctx context.Context, kb *cocoonv1.KeyBroker) (ctrl.Result, error) {
	st := &kb.Status
	gen := kb.Generation
	st.ObservedGeneration = gen
	admin, err := r.ensureGeneratedSecret(ctx, kb, adminSecretName(kb), generateAdminKey)
	if err != nil {
		return ctrl.Result{}, err
	}
	key, err := kbsclient.ParseSigningKey("Secret "+adminSecretName(kb)+" "+adminKeyFile, admin[adminKeyFile])
	if err != nil {
		return ctrl.Result{}, specError("adminKeySecret: %v", err)
	}
	pub, err := publicPEM(key)
	if err != nil {
		return ctrl.Result{}, specError("adminKeySecret: %v", err)
	}
	sealing, err := r.ensureGeneratedSecret(ctx, kb, kb.Name+"-sealing", generateSealingKey)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(sealing[sealingKeyFile]) != 32 {
		return ctrl.Result{}, specError("Secret %s-sealing: %s is not 32 bytes", kb.Name, sealingKeyFile)
	}
	svc, err := r.ensureService(ctx, kb)
	if err != nil {
		return ctrl.Result{}, err
	}
	roots, err := r.ensureTLS(ctx, kb, svc)
	if err != nil {
		return ctrl.Result{}, err
	}
	cfg, err := r.ensureConfig(ctx, kb, pub)
	if err != nil {
		return ctrl.Result{}, err
	}
	if kb.Spec.Storage.Embedded != nil {
		if err := r.ensureClaim(ctx, kb); err != nil {
			return ctrl.Result{}, err
		}
	}
	d, err := r.ensureDeployment(ctx, kb, digestOf([]byte(cfg["kbs.toml"]), pub, roots, sealing[sealingKeyFile]))
	if err != nil {
		return ctrl.Result{}, err
	}
	st.ReadyReplicas = d.Status.ReadyReplicas
	st.URL = "https://" + net.JoinHostPort(kb.Name+"."+kb.Namespace+".svc", strconv.Itoa(kbsPort))
	switch {
	case kb.Spec.Replicas == 0:
		setCondition(&st.Conditions, ConditionReady, false, "ScaledDown", "replicas is 0", gen)
		return ctrl.Result{}, nil
	case d.Status.ReadyReplicas == 0 || d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != d.Status.Replicas:
		setCondition(&st.Conditions, ConditionReady, false, "Starting", "no KBS replica of the current spec is ready", gen)
		return ctrl.Result{RequeueAfter: resync}, nil
	}
	items, ms, err := r.desired(ctx, kb)
	if err != nil {
		return ctrl.Result{}, err
	}
	a, err := adminClient(kb, svc, roots, key)
	if err != nil {
		return ctrl.Result{}, err
	}
	nn := client.ObjectKeyFromObject(kb)
	r.mu.Lock()
	full := time.Since(r.fullAt[nn]) > fullSync
	r.mu.Unlock()
	changed, err := register(ctx, a, st, items, statusKey(admin[adminKeyFile]), full)
	if err != nil {
		return ctrl.Result{}, err
	}
	if full {
		r.mu.Lock()
		r.fullAt[nn] = time.Now()
		r.mu.Unlock()
	}
	st.Measurements = ms
	if len(changed) > 0 {
		// Names only: the values stay in their Secrets and ConfigMaps.
		r.Recorder.Eventf(kb, nil, corev1.EventTypeNormal, "Registered", "Sync", "%s", strings.Join(changed, ", "))
		log.FromContext(ctx).Info("registered in the KBS", "keybroker", nn, "items", changed)
	}
	setCondition(&st.Conditions, ConditionSynced, true, "Registered", "", gen)
	setCondition(&st.Conditions, ConditionDegraded, false, "Serving", "", gen)
	setCondition(&st.Conditions, ConditionReady, true, "Serving", "", gen)
	return ctrl.Result{RequeueAfter: fullSync}, nil
}

// fail records a failure in the conditions, with an event when it is new.
func (r *KeyBrokerReconciler) fail(kb, old *cocoonv1.KeyBroker, ce *condError) {
	gen := kb.Generation
	st := &kb.Status
	setCondition(&st.Conditions, ConditionReady, false, ce.reason, ce.msg, gen)
	setCondition(&st.Conditions, ConditionSynced, false, ce.reason, ce.msg, gen)
	setCondition(&st.Conditions, ConditionDegraded, true, ce.reason, ce.msg, gen)
	if c := meta.FindStatusCondition(old.Status.Conditions, ConditionDegraded); c == nil || c.Message != ce.msg {
		r.Recorder.Eventf(kb, nil, corev1.EventTypeWarning, ce.reason, "Reconcile", "%s", ce.msg)
	}
}
