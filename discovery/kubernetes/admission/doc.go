// Package admission is meshd's validating admission webhook for the policy
// custom resources it reads (PeerAuthentication, AuthorizationPolicy,
// RequestAuthentication, DestinationRule), the counterpart of istiod's
// istiod-default-validator: `kubectl apply` of a policy minimesh would
// refuse is refused by the API server, with the lines `meshctl validate`
// prints for it.
//
// The pieces:
//   - Review decides one AdmissionRequest. It decodes the object with the
//     Kubernetes source's own decoder (kubernetes.DecodePolicy), so the
//     webhook admits exactly what the source accepts.
//   - Handler serves admission.k8s.io/v1 AdmissionReviews over HTTP, and
//     Serve serves it over TLS at Path with a certificate the caller keeps
//     current (meshd uses one issued by the mesh CA).
//   - CABundle keeps webhooks[*].clientConfig.caBundle of the named
//     ValidatingWebhookConfiguration equal to the mesh's trust bundle, so
//     the API server trusts that certificate.
//
// WebhookConfiguration is the manifest to install (webhook.yaml). It uses
// failurePolicy Ignore: when meshd is down the API server stores policies
// unchecked, and the Kubernetes source, which checks every object again,
// keeps protecting the mesh.
package admission
