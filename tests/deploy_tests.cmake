# Deployment and observability tests (tests/deploy/, label "deploy"): the
# compose file, the Grafana dashboard and Prometheus configs, the local stack
# scraped by a real Prometheus with every dashboard expression evaluated,
# promtool's metrics linter, scale-out over two clouds, and the compose stack
# on a local Docker engine. Loopback only; each test bounds its own run time.
# A test that cannot run here (no docker-compose, Prometheus or Docker engine)
# exits 77 after printing "SKIPPED: <reason>", which CTest reports as skipped.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
set(deploy_dir ${CMAKE_CURRENT_SOURCE_DIR}/deploy)

function(duet_deploy_test name timeout)
  add_test(NAME ${name} COMMAND ${ARGN})
  set_tests_properties(${name} PROPERTIES
    LABELS deploy TIMEOUT ${timeout} SKIP_RETURN_CODE 77
    # Tests that start servers share the two cores: one at a time.
    RESOURCE_LOCK duet_deploy_stack)
endfunction()

add_test(NAME deploy_compose_config COMMAND ${deploy_dir}/compose_config_test.sh)
set_tests_properties(deploy_compose_config PROPERTIES
  LABELS deploy TIMEOUT 60 SKIP_RETURN_CODE 77)
add_test(NAME deploy_dashboard_config
         COMMAND ${Python3_EXECUTABLE} ${deploy_dir}/dashboard_config_test.py)
set_tests_properties(deploy_dashboard_config PROPERTIES
  LABELS deploy TIMEOUT 60 SKIP_RETURN_CODE 77)

if(TARGET duet-cloud AND TARGET duet-edge AND TARGET duet-loadgen)
  set(duet_bins
    --cloud $<TARGET_FILE:duet-cloud> --edge $<TARGET_FILE:duet-edge>
    --model $<TARGET_FILE:duet-model> --loadgen $<TARGET_FILE:duet-loadgen>
    --probe $<TARGET_FILE:duet-health-probe>)
  duet_deploy_test(deploy_local_stack 240
    ${Python3_EXECUTABLE} ${deploy_dir}/local_stack_test.py ${duet_bins})
  duet_deploy_test(deploy_promtool_metrics 180
    ${Python3_EXECUTABLE} ${deploy_dir}/promtool_metrics_test.py ${duet_bins})
  duet_deploy_test(deploy_scale_out 180
    ${Python3_EXECUTABLE} ${deploy_dir}/scale_out_test.py ${duet_bins})
  duet_deploy_test(memory_soak 300
    ${Python3_EXECUTABLE} ${deploy_dir}/memory_soak_test.py ${duet_bins})
endif()
# Builds the images from deploy/docker/Dockerfile (the whole project, Release,
# inside the build stage: several minutes on 2 cores) and runs the compose
# stack on them; needs no binaries from this build.
duet_deploy_test(deploy_docker_compose 1800
  ${Python3_EXECUTABLE} ${deploy_dir}/docker_compose_test.py)
