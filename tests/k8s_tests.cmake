# Kubernetes manifests (deploy/k8s, kustomize): rendered offline and checked
# against the binaries.
# k8s_manifests renders every kustomization with the kubectl on PATH (no
# cluster is contacted) and checks images, ports, flags (against each
# binary's --help), probes, grace periods, the headless Service, the
# autoscaler's adapter metric, the disruption budget and resources. Skipped
# (exit 77) without kubectl (Debian package kubernetes-client).
# Python3 comes from deploy_tests.cmake, included before this file.
if(TARGET duet-cloud AND TARGET duet-edge AND TARGET duet-model AND
   TARGET duet-health-probe)
  add_test(NAME k8s_manifests
           COMMAND ${Python3_EXECUTABLE}
                   ${CMAKE_CURRENT_SOURCE_DIR}/deploy/k8s_manifests_test.py
                   --cloud $<TARGET_FILE:duet-cloud>
                   --edge $<TARGET_FILE:duet-edge>
                   --model $<TARGET_FILE:duet-model>
                   --probe $<TARGET_FILE:duet-health-probe>)
  set_tests_properties(k8s_manifests PROPERTIES
    LABELS deploy TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
