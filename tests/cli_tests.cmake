# Command-line conventions of every binary (DESIGN.md §8): --help, bad flags,
# exit codes, bound ports in the logs. duet_test_process comes from
# cloud_tests.cmake.
duet_test(cli_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/cli_test.cc
  LIBS duet_test_process duet_test_util)
add_dependencies(cli_test duet-cloud duet-edge duet-loadgen duet-health-probe
                 duet-model)

# duet-model's commands for trained models (preset --json, score, quantize,
# verify's signature check), run as the real binary.
duet_test(model_cli_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/model_cli_test.cc
  LIBS duet_test_process duet_test_util duet_model)
add_dependencies(model_cli_test duet-model)
