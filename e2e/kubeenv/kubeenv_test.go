package kubeenv_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/minimesh/minimesh/e2e/kubeenv"
)

const manifest = `
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  key: value
`

func TestEnv(t *testing.T) {
	env := kubeenv.Start(t)
	ctx := context.Background()
	c := env.Client()

	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("ask the API server its version: %v", err)
	}
	if v.GitVersion != kubeenv.KubeVersion {
		t.Errorf("API server version = %q, want %q (stamped by build.sh)", v.GitVersion, kubeenv.KubeVersion)
	}

	t.Run("dry run stores nothing", func(t *testing.T) {
		if err := env.Apply(ctx, []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dry"}}`), kubeenv.ApplyOptions{DryRun: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Namespaces().Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("namespace dry after a dry run: err = %v, want NotFound", err)
		}
	})

	t.Run("dry run reports an invalid object with its document", func(t *testing.T) {
		bad := "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: Not_Valid}\n"
		err := env.Apply(ctx, []byte(bad), kubeenv.ApplyOptions{DryRun: true})
		if err == nil || !strings.Contains(err.Error(), "document 2") || !strings.Contains(err.Error(), "Not_Valid") {
			t.Fatalf("err = %v, want a refusal naming document 2 and Not_Valid", err)
		}
	})

	if err := env.Apply(ctx, []byte(manifest), kubeenv.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(kubectl, "--kubeconfig", env.Kubeconfig(), "get", "configmap", "-n", "demo", "settings", "-o", "name").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "configmap/settings") {
			t.Errorf("kubectl with Kubeconfig(): %v: %s", err, out)
		}
	}

	t.Run("data survives restarting the API server and etcd", func(t *testing.T) {
		env.StopAPIServer()
		if _, err := c.CoreV1().ConfigMaps("demo").Get(ctx, "settings", metav1.GetOptions{}); err == nil {
			t.Fatal("the API server answered after StopAPIServer")
		}
		env.StopEtcd()
		if err := env.StartEtcd(); err != nil {
			t.Fatal(err)
		}
		if err := env.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		// The same client works: same port, same serving certificate.
		cm, err := c.CoreV1().ConfigMaps("demo").Get(ctx, "settings", metav1.GetOptions{})
		if err != nil || cm.Data["key"] != "value" {
			t.Fatalf("after restart: %v, %v", cm, err)
		}
	})

	// The recipe's admission setup: a pod whose service account does not
	// exist is accepted (no controller-manager creates them).
	if _, err := c.CoreV1().Pods("demo").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{ServiceAccountName: "nobody", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Errorf("create a pod: %v", err)
	}
}
