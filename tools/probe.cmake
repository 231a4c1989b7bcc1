# duet-health-probe: a grpc.health.v1 Check client, exit 0 iff SERVING. Used
# as the container HEALTHCHECK (deploy/docker/) and by the deployment tests.
add_executable(duet-health-probe ${CMAKE_CURRENT_LIST_DIR}/health_probe_main.cc)
target_link_libraries(duet-health-probe PRIVATE duet_proto gRPC::grpc++
                      duet_cli_flags)
