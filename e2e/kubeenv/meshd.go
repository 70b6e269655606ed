package kubeenv

// Manifests for running meshd against an Env as it runs in a cluster:
// as its own ServiceAccount, with only the permissions of
// discovery/kubernetes/rbac.yaml (apply that ClusterRole, RBAC(), too).
const (
	// MeshdAccount is meshd's namespace and ServiceAccount, as
	// examples/kind has them.
	MeshdAccount = `---
apiVersion: v1
kind: Namespace
metadata: {name: minimesh-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: meshd, namespace: minimesh-system}
`
	// MeshdBinding binds MeshdAccount to rbac.yaml's ClusterRole
	// minimesh-meshd.
	MeshdBinding = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: minimesh-meshd}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: minimesh-meshd}
subjects: [{kind: ServiceAccount, name: meshd, namespace: minimesh-system}]
`
)
