// cocoon-operator runs Cocoon's Kubernetes controllers: CocoonRuntime
// (installs the runtime on nodes through the node installer DaemonSet,
// makes the RuntimeClasses) and KeyBroker (runs a KBS).
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cocoonv1 "github.com/cocoon-cc/cocoon/operator/api/v1alpha1"
	"github.com/cocoon-cc/cocoon/operator/controllers"
)

func main() {
	var installerImage, kbsImage, namespace, metricsAddr, probeAddr string
	var leaderElect bool
	flag.StringVar(&installerImage, "installer-image", os.Getenv("COCOON_INSTALLER_IMAGE"), "the node installer's image")
	flag.StringVar(&kbsImage, "kbs-image", os.Getenv("COCOON_KBS_IMAGE"), "the KBS's image, for KeyBrokers that name none")
	flag.StringVar(&namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the installer DaemonSets (the operator's)")
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "metrics address (0: off)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "health and readiness probes' address")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader among replicas")
	klog.InitFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(klog.NewKlogr())
	if err := run(installerImage, kbsImage, namespace, metricsAddr, probeAddr, leaderElect); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-operator:", err)
		os.Exit(1)
	}
}

func run(installerImage, kbsImage, namespace, metricsAddr, probeAddr string, leaderElect bool) error {
	if installerImage == "" || namespace == "" {
		return fmt.Errorf("--installer-image and --namespace (or COCOON_INSTALLER_IMAGE, POD_NAMESPACE) are required")
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := cocoonv1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "cocoon-operator.cocoon.io",
	})
	if err != nil {
		return err
	}
	if err := (&controllers.CocoonRuntimeReconciler{
		Client:         mgr.GetClient(),
		Recorder:       mgr.GetEventRecorder("cocoon-operator"),
		Namespace:      namespace,
		InstallerImage: installerImage,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&controllers.KeyBrokerReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("cocoon-operator"),
		KBSImage: kbsImage,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}
