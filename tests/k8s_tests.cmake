# Kubernetes manifests (deploy/k8s, kustomize): rendered offline and checked
# against the binaries.
