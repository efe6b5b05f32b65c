// Package controllers holds the operator's reconcilers, one per kind:
// CocoonRuntime (node installer DaemonSets, RuntimeClasses, per-node
// status) and KeyBroker.
package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
)

const (
	// Finalizer keeps a CocoonRuntime until its nodes are clean.
	Finalizer = "cocoon.io/uninstall"
	// LabelOwner marks the objects made for a CocoonRuntime.
	LabelOwner = "cocoon.io/cocoonruntime"
	// hostRoot is where the installer pod mounts the host's root.
	hostRoot = "/host"
	// resync re-reads the nodes' state while a rollout runs.
	resync = 5 * time.Second
)

// Condition types of a CocoonRuntime.
const (
	ConditionReady       = "Ready"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
)

// CocoonRuntimeReconciler installs a CocoonRuntime on its nodes.
type CocoonRuntimeReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Namespace is where the installer DaemonSets run (the operator's).
	Namespace string
	// InstallerImage is the node installer's image, unless the CR names
	// one.
	InstallerImage string
}

// +kubebuilder:rbac:groups=cocoon.io,resources=cocoonruntimes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cocoon.io,resources=cocoonruntimes/status;cocoonruntimes/finalizers,verbs=get;update;patch
// +kubebuilder:rbac:groups=apps,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=node.k8s.io,resources=runtimeclasses,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler: CocoonRuntimes, their
// DaemonSets and RuntimeClasses, and nodes (their installation state).
func (r *CocoonRuntimeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list cocoonv1.CocoonRuntimeList
		if err := r.List(ctx, &list); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, len(list.Items))
		for i, cr := range list.Items {
			reqs[i].Name = cr.Name
		}
		return reqs
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&cocoonv1.CocoonRuntime{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&nodev1.RuntimeClass{}).
		Watches(&corev1.Node{}, all).
		Complete(r)
}

// Reconcile implements reconcile.Reconciler.
func (r *CocoonRuntimeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var cr cocoonv1.CocoonRuntime
	if err := r.Get(ctx, req.NamespacedName, &cr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !cr.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, &cr)
	}
	if controllerutil.AddFinalizer(&cr, Finalizer) {
		if err := r.Update(ctx, &cr); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.ensureDaemonSet(ctx, &cr, "install"); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureRuntimeClasses(ctx, &cr); err != nil {
		return ctrl.Result{}, err
	}
	done, err := r.updateStatus(ctx, &cr)
	if err != nil || done {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: resync}, nil
}

// finalize removes Cocoon from the nodes with the uninstall DaemonSet,
// then the RuntimeClasses, then lets the CocoonRuntime go.
func (r *CocoonRuntimeReconciler) finalize(ctx context.Context, cr *cocoonv1.CocoonRuntime) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cr, Finalizer) {
		return ctrl.Result{}, nil
	}
	if err := r.deleteIfExists(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: dsName(cr, "install"), Namespace: r.Namespace}}); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.ensureDaemonSet(ctx, cr, "uninstall"); err != nil {
		return ctrl.Result{}, err
	}
	var ds appsv1.DaemonSet
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: dsName(cr, "uninstall")}, &ds); err != nil {
		return ctrl.Result{}, err
	}
	if !rolledOut(&ds) {
		return ctrl.Result{RequeueAfter: resync}, nil
	}
	r.Recorder.Eventf(cr, nil, corev1.EventTypeNormal, "Uninstalled", "Uninstall", "removed from %d node(s)", ds.Status.DesiredNumberScheduled)
	if err := r.deleteIfExists(ctx, &ds); err != nil {
		return ctrl.Result{}, err
	}
	var rcs nodev1.RuntimeClassList
	if err := r.List(ctx, &rcs, client.MatchingLabels{LabelOwner: cr.Name}); err != nil {
		return ctrl.Result{}, err
	}
	for i := range rcs.Items {
		if err := r.deleteIfExists(ctx, &rcs.Items[i]); err != nil {
			return ctrl.Result{}, err
		}
	}
	if err := r.clearNodes(ctx, cr); err != nil {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(cr, Finalizer)
	return ctrl.Result{}, r.Update(ctx, cr)
}

// clearNodes removes the installers' state annotations the uninstall left.
func (r *CocoonRuntimeReconciler) clearNodes(ctx context.Context, cr *cocoonv1.CocoonRuntime) error {
	nodes, err := r.selectedNodes(ctx, cr)
	if err != nil {
		return err
	}
	for i := range nodes {
		n := &nodes[i]
		if n.Annotations[nodeinstall.AnnotationPhase] != nodeinstall.PhaseRemoved {
			continue
		}
		patch := client.MergeFrom(n.DeepCopy())
		delete(n.Annotations, nodeinstall.AnnotationPhase)
		if err := r.Patch(ctx, n, patch); err != nil {
			return err
		}
	}
	return nil
}

func (r *CocoonRuntimeReconciler) deleteIfExists(ctx context.Context, obj client.Object) error {
	err := r.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground))
	return client.IgnoreNotFound(err)
}

// rolledOut says whether every pod of the DaemonSet runs its current
// template and is ready (an installer is ready once it is done).
func rolledOut(ds *appsv1.DaemonSet) bool {
	s := ds.Status
	return s.ObservedGeneration >= ds.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled &&
		s.NumberReady == s.DesiredNumberScheduled && s.NumberUnavailable == 0
}

func dsName(cr *cocoonv1.CocoonRuntime, verb string) string {
	return "cocoon-" + verb + "-" + cr.Name
}

// ensureRuntimeClasses makes the flavours' RuntimeClasses and deletes
// those of flavours no longer asked for.
func (r *CocoonRuntimeReconciler) ensureRuntimeClasses(ctx context.Context, cr *cocoonv1.CocoonRuntime) error {
	for _, f := range cr.Spec.Flavours {
		want, err := runtimeClass(string(f))
		if err != nil {
			return err
		}
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: want.Handler}}
		_, err = controllerutil.CreateOrUpdate(ctx, r.Client, rc, func() error {
			if owner := rc.Labels[LabelOwner]; rc.ResourceVersion != "" && owner != cr.Name {
				return fmt.Errorf("RuntimeClass %s belongs to %q, not to CocoonRuntime %s", rc.Name, owner, cr.Name)
			}
			rc.Labels = map[string]string{LabelOwner: cr.Name}
			rc.Handler, rc.Overhead, rc.Scheduling = want.Handler, want.Overhead, want.Scheduling
			return controllerutil.SetControllerReference(cr, rc, r.Scheme())
		})
		if err != nil {
			return err
		}
	}
	var rcs nodev1.RuntimeClassList
	if err := r.List(ctx, &rcs, client.MatchingLabels{LabelOwner: cr.Name}); err != nil {
		return err
	}
	for i, rc := range rcs.Items {
		if !slices.Contains(cr.Spec.Flavours, cocoonv1.Flavour(strings.TrimPrefix(rc.Name, "cocoon-"))) {
			if err := r.deleteIfExists(ctx, &rcs.Items[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureDaemonSet makes the installer DaemonSet (verb install or
// uninstall) match the CocoonRuntime; a changed spec changes the pod
// template, which rolls the nodes maxUnavailable at a time.
func (r *CocoonRuntimeReconciler) ensureDaemonSet(ctx context.Context, cr *cocoonv1.CocoonRuntime, verb string) error {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: dsName(cr, verb), Namespace: r.Namespace}}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, ds, func() error {
		sel := map[string]string{"app.kubernetes.io/name": "cocoon-node-installer", LabelOwner: cr.Name, "cocoon.io/verb": verb}
		ds.Labels = sel
		if ds.Spec.Selector == nil {
			ds.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
		}
		maxUnavailable := intstr.FromInt32(1)
		if cr.Spec.UpgradeStrategy.MaxUnavailable != nil {
			maxUnavailable = *cr.Spec.UpgradeStrategy.MaxUnavailable
		}
		ds.Spec.UpdateStrategy = appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable}}
		ds.Spec.Template = r.installerPod(cr, verb, sel)
		// Owned by the CocoonRuntime, the uninstall DaemonSet too: the
		// garbage collector removes it once the CocoonRuntime is gone, also
		// when a reconcile from a stale cache made it again after the
		// finalizer was removed.
		return controllerutil.SetControllerReference(cr, ds, r.Scheme())
	})
	return err
}

func (r *CocoonRuntimeReconciler) installerPod(cr *cocoonv1.CocoonRuntime, verb string, labels map[string]string) corev1.PodTemplateSpec {
	s := cr.Spec
	image := s.InstallerImage
	if image == "" {
		image = r.InstallerImage
	}
	args := []string{verb,
		"--runtime=" + cr.Name,
		"--install-dir=" + s.InstallDir,
		"--flavours=" + strings.Join(flavourNames(s.Flavours), ","),
		"--guest=" + s.Guest.Image,
		"--guest-plain-http=" + strconv.FormatBool(s.Guest.PlainHTTP),
		"--memory-mib=" + strconv.Itoa(int(s.Shim.MemoryMiB)),
		"--vcpus=" + strconv.Itoa(int(s.Shim.VCPUs)),
		"--start-timeout=" + s.Shim.StartTimeout,
		"--kernel-params=" + s.Shim.KernelParams,
		"--containerd-config=" + s.Containerd.ConfigPath,
		"--containerd-dropin-dir=" + s.Containerd.DropInDir,
		"--containerd-address=" + s.Containerd.Address,
		"--restart=" + string(s.Containerd.Restart),
		"--unit=" + s.Containerd.Unit,
		"--host-root=" + hostRoot,
	}
	if sn := s.Snapshotter; sn != nil {
		args = append(args, "--snapshotter-images="+sn.Images, "--snapshotter-address="+sn.Address)
	}
	privileged := true
	grace := int64(5)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "cocoon-node-installer",
			NodeSelector:                  s.NodeSelector,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			HostPID:                       true,
			PriorityClassName:             "system-node-critical",
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:    "installer",
				Image:   image,
				Command: []string{"/cocoon-node-installer"},
				Args:    args,
				Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/cocoon-node-installer", "ready"}}},
					PeriodSeconds: 2,
				},
				VolumeMounts: []corev1.VolumeMount{
					// Private: nodes whose root is not a shared mount (containers) refuse
					// HostToContainer. Files the host adds later (containerd's new
					// socket) are seen; mounts are not needed.
					{Name: "host", MountPath: hostRoot},
					{Name: "state", MountPath: "/run/cocoon-installer"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
				{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
		},
	}
}

func (r *CocoonRuntimeReconciler) selectedNodes(ctx context.Context, cr *cocoonv1.CocoonRuntime) ([]corev1.Node, error) {
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(cr.Spec.NodeSelector)}); err != nil {
		return nil, err
	}
	return nodes.Items, nil
}

// updateStatus records the nodes' installations and the conditions;
// done says whether every node runs the current spec.
func (r *CocoonRuntimeReconciler) updateStatus(ctx context.Context, cr *cocoonv1.CocoonRuntime) (done bool, err error) {
	nodes, err := r.selectedNodes(ctx, cr)
	if err != nil {
		return false, err
	}
	var ds appsv1.DaemonSet
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: dsName(cr, "install")}, &ds); err != nil {
		return false, err
	}
	guest := guestDigest(cr.Spec.Guest)
	old := cr.DeepCopy()
	st := &cr.Status
	st.Nodes, st.ReadyNodes, st.DesiredNodes = nil, 0, int32(len(nodes))
	var failed []string
	for _, n := range nodes {
		a := n.Annotations
		ns := cocoonv1.NodeStatus{Name: n.Name, Phase: a[nodeinstall.AnnotationPhase], Guest: a[nodeinstall.AnnotationGuest],
			Message: a[nodeinstall.AnnotationMessage], Snapshotter: a[nodeinstall.AnnotationSnapshotter]}
		if ns.Phase == "" {
			ns.Phase = nodeinstall.PhaseInstalling
		}
		for _, f := range strings.Split(a[nodeinstall.AnnotationFlavours], ",") {
			if f != "" {
				ns.Flavours = append(ns.Flavours, cocoonv1.Flavour(f))
			}
		}
		switch {
		case ns.Phase == nodeinstall.PhaseFailed:
			failed = append(failed, n.Name+": "+ns.Message)
		case ns.Phase == nodeinstall.PhaseInstalled && ns.Guest == guest:
			st.ReadyNodes++
		}
		st.Nodes = append(st.Nodes, ns)
	}
	done = st.ReadyNodes == st.DesiredNodes && rolledOut(&ds)
	gen := cr.Generation
	st.ObservedGeneration = gen
	setCondition(&st.Conditions, ConditionReady, done, "Installed", fmt.Sprintf("%d/%d nodes run guest %s", st.ReadyNodes, st.DesiredNodes, guest), gen)
	setCondition(&st.Conditions, ConditionProgressing, !done, "Rollout", fmt.Sprintf("%d/%d nodes updated", ds.Status.UpdatedNumberScheduled, ds.Status.DesiredNumberScheduled), gen)
	setCondition(&st.Conditions, ConditionDegraded, len(failed) > 0, "NodeFailed", strings.Join(failed, "; "), gen)
	if done && !meta.IsStatusConditionTrue(old.Status.Conditions, ConditionReady) {
		r.Recorder.Eventf(cr, nil, corev1.EventTypeNormal, "Installed", "Install", "%d node(s) run guest %s", st.ReadyNodes, guest)
	}
	if len(failed) > 0 && !meta.IsStatusConditionTrue(old.Status.Conditions, ConditionDegraded) {
		r.Recorder.Eventf(cr, nil, corev1.EventTypeWarning, "NodeFailed", "Install", "%s", strings.Join(failed, "; "))
	}
	if err := r.Status().Patch(ctx, cr, client.MergeFrom(old)); err != nil && !apierrors.IsConflict(err) {
		return false, err
	}
	return done, nil
}

// flavourNames are the flavours as the installer and launchmeasure name
// them.
func flavourNames(fs []cocoonv1.Flavour) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = string(f)
	}
	return names
}

// guestDigest is the digest the guest image is pinned by (what the nodes
// record as their guest).
func guestDigest(g cocoonv1.GuestImage) string {
	return g.Image[strings.LastIndex(g.Image, "@")+1:]
}

func setCondition(conds *[]metav1.Condition, typ string, ok bool, reason, msg string, gen int64) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	if msg == "" {
		msg = reason
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}
