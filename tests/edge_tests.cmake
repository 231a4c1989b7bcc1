# Integration tests of duet-edge (see tests/CMakeLists.txt): real duet-edge
# and duet-cloud processes on 127.0.0.1. duet_test_process comes from
# cloud_tests.cmake, included first.
# Also with oneDNN capped at AVX2 (the edge's int8 user model without VNNI).
duet_test(edge_integration_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/edge_integration_test.cc
  LIBS duet_test_process duet_test_util duet_model ISA_CAPS AVX2)
add_dependencies(edge_integration_test duet-edge duet-cloud)

# duet-edge in front of two duet-cloud processes (the cloud client's own
# tests: edge/grpc_cloud_client_test.cc).
duet_test(scale_out_integration_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/scale_out_integration_test.cc
  LIBS duet_test_process duet_test_util duet_model)
add_dependencies(scale_out_integration_test duet-edge duet-cloud)

# Reliability and security of duet-edge (issue 7; shared fixture
# tests/edge_process_fixture.h): faults (kill -9 of either side, SIGTERM
# drain, damaged model files), the bad-input matrix, and TLS / mutual TLS
# between edge and cloud (certificates made with the openssl CLI).
foreach(t edge_fault_test edge_bad_input_test)
  duet_test(${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.cc
    LIBS duet_test_process duet_test_util duet_model)
  add_dependencies(${t} duet-edge duet-cloud)
endforeach()
duet_test(tls_integration_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/tls_integration_test.cc
  LIBS duet_test_process duet_test_util duet_model duet_rpc
    nlohmann_json::nlohmann_json)
add_dependencies(tls_integration_test duet-edge duet-cloud duet-loadgen)

# A model trained with PyTorch (tools/duet-train), quantized by duet-model
# and served by real duet-cloud / duet-edge processes (issue 13).
duet_test(trained_model_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/trained_model_test.cc
  LIBS duet_test_process duet_test_util duet_model)
add_dependencies(trained_model_test duet-edge duet-cloud duet-model)

# A model release keeps the edge's history (issue 14, item 3): tiny v1 ->
# v2 with real processes on one --state_dir, the scratchpad rebuilt from the
# cloud's v2 rows equals the monolithic reference of v2; kill -9 and an
# unreachable cloud during the rebuild.
duet_test(edge_model_change_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/edge_model_change_test.cc
  LIBS duet_test_process duet_test_util duet_model duet_edge_core
    nlohmann_json::nlohmann_json)
add_dependencies(edge_model_change_test duet-edge duet-cloud duet-loadgen)
