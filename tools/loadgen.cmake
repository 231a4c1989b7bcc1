# duet-loadgen: load generator for duet-edge (edge), in-process simulated
# edges (fleet), MonolithicScore (monolithic) and unary Score (score).
set(loadgen_dir ${CMAKE_CURRENT_SOURCE_DIR}/loadgen)

# Distributions, statistics and the summary: no gRPC.
add_library(duet_loadgen_stats STATIC
  ${loadgen_dir}/sampler.cc ${loadgen_dir}/stats.cc ${loadgen_dir}/summary.cc)
target_include_directories(duet_loadgen_stats PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(duet_loadgen_stats PUBLIC duet_model absl::status
                      absl::statusor absl::strings absl::str_format
                      absl::synchronization absl::flat_hash_set
                      PRIVATE nlohmann_json::nlohmann_json)

# The driver and the gRPC targets.
add_library(duet_loadgen_lib STATIC
  ${loadgen_dir}/load_driver.cc ${loadgen_dir}/grpc_targets.cc)
target_link_libraries(duet_loadgen_lib PUBLIC duet_loadgen_stats duet_model
                      duet_proto gRPC::grpc++ absl::time absl::flat_hash_map)
# The fleet target runs the edge library's request flow (UserState,
# Recommender) over its ScoringSession client (duet_edge_grpc), and follows
# model releases (fleet_release: EdgeModelFetch, per-device switches).
target_sources(duet_loadgen_lib PRIVATE ${loadgen_dir}/fleet_target.cc
               ${loadgen_dir}/fleet_release.cc)
target_link_libraries(duet_loadgen_lib PUBLIC duet_edge_grpc)

# --edge_metrics: duet-edge's energy from its /metrics, over HTTP (libcurl,
# which prometheus-cpp-dev already depends on).
find_package(CURL REQUIRED)
add_library(duet_loadgen_edge_energy STATIC ${loadgen_dir}/edge_energy_probe.cc)
target_include_directories(duet_loadgen_edge_energy PUBLIC
                           ${PROJECT_SOURCE_DIR})
target_link_libraries(duet_loadgen_edge_energy PUBLIC absl::status
                      absl::statusor absl::strings absl::time CURL::libcurl)

add_executable(duet-loadgen ${loadgen_dir}/main.cc)
target_link_libraries(duet-loadgen PRIVATE duet_loadgen_lib
                      duet_loadgen_edge_energy duet_cli_flags)

if(DUET_BUILD_TESTS)
  foreach(t sampler stats summary)
    duet_test(loadgen_${t}_test SOURCES ${loadgen_dir}/${t}_test.cc
              LIBS duet_loadgen_stats)
  endforeach()
  target_link_libraries(loadgen_summary_test PRIVATE
                        nlohmann_json::nlohmann_json)
  # The fleet's switches against the edge library's fake cloud.
  duet_test(loadgen_fleet_release_test
            SOURCES ${loadgen_dir}/fleet_release_test.cc
            LIBS duet_loadgen_lib duet_test_util)
  duet_test(loadgen_edge_energy_probe_test
            SOURCES ${loadgen_dir}/edge_energy_probe_test.cc
            LIBS duet_loadgen_edge_energy duet_obs)
endif()
