# DUET_EDGE_STATIC (top-level CMakeLists.txt; docs/ARM64.md, "Footprint"):
# duet_link_static_archives() re-points the imported library targets of the
# calling directory (gRPC::*, absl::*, protobuf::*, OpenSSL::*, re2::re2,
# c-ares::cares, ZLIB::ZLIB, ...), and Protobuf_LIBRARIES (proto/ links that
# path), from Debian's shared libraries to the static archives beside them,
# where Debian ships one. Debian 12 ships none
# for oneDNN (libdnnl-dev) and prometheus-cpp (prometheus-cpp-dev): those
# stay shared, and so do libstdc++, libgcc_s and glibc, which libdnnl.so and
# the prometheus-cpp libraries load anyway (a second, static libstdc++ in the
# executable would not be shared with them).
#
# The targets are imported for the whole build tree, so every binary of a
# DUET_EDGE_STATIC build links this way; the option is meant for a build of
# duet-edge alone.

# `location` (an imported library's path) as the static archive beside it,
# in `out`; empty when there is none.
function(duet_static_archive_of location out)
  set(archive "")
  if(location MATCHES "^(.*/lib[^/]+)\\.so(\\.[0-9.]+)?$")
    if(EXISTS "${CMAKE_MATCH_1}.a")
      set(archive "${CMAKE_MATCH_1}.a")
    endif()
  endif()
  set(${out} "${archive}" PARENT_SCOPE)
endfunction()

function(duet_link_static_archives)
  get_property(targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  set(static_libs "")
  set(shared_libs "")
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "INTERFACE_LIBRARY")
      # pkg-config targets (gRPC's re2::re2) link "-lNAME".
      get_target_property(libs ${target} INTERFACE_LINK_LIBRARIES)
      if(NOT libs)
        continue()
      endif()
      set(changed FALSE)
      set(new_libs "")
      foreach(lib ${libs})
        if(lib MATCHES "^-l([A-Za-z0-9_+.-]+)$")
          set(name "${CMAKE_MATCH_1}")
          find_library(DUET_STATIC_LIB_${name} NAMES lib${name}.a)
          if(DUET_STATIC_LIB_${name})
            set(lib "${DUET_STATIC_LIB_${name}}")
            set(changed TRUE)
            list(APPEND static_libs lib${name})
          endif()
        endif()
        list(APPEND new_libs "${lib}")
      endforeach()
      if(changed)
        set_target_properties(${target} PROPERTIES
          INTERFACE_LINK_LIBRARIES "${new_libs}")
      endif()
      continue()
    endif()
    if(NOT type MATCHES "^(SHARED|UNKNOWN|STATIC)_LIBRARY$")
      continue()
    endif()
    get_target_property(configs ${target} IMPORTED_CONFIGURATIONS)
    set(properties IMPORTED_LOCATION)
    if(configs)
      foreach(config ${configs})
        list(APPEND properties IMPORTED_LOCATION_${config})
      endforeach()
    endif()
    foreach(property ${properties})
      get_target_property(location ${target} ${property})
      if(NOT location)
        continue()
      endif()
      duet_static_archive_of("${location}" archive)
      get_filename_component(file "${location}" NAME)
      if(archive)
        set_target_properties(${target} PROPERTIES ${property} "${archive}")
        get_filename_component(file "${archive}" NAME)
        list(APPEND static_libs "${file}")
      elseif(location MATCHES "\\.so(\\.[0-9.]+)?$")
        list(APPEND shared_libs "${file}")
      endif()
    endforeach()
  endforeach()
  set(protobuf_libraries "")
  foreach(lib ${Protobuf_LIBRARIES})
    duet_static_archive_of("${lib}" archive)
    if(archive)
      set(lib "${archive}")
    endif()
    list(APPEND protobuf_libraries "${lib}")
  endforeach()
  set(Protobuf_LIBRARIES "${protobuf_libraries}" PARENT_SCOPE)
  list(REMOVE_DUPLICATES static_libs)
  list(REMOVE_DUPLICATES shared_libs)
  list(LENGTH static_libs n)
  string(REPLACE ";" " " shared "${shared_libs}")
  message(STATUS "DUET_EDGE_STATIC: ${n} libraries linked from static archives; "
                 "shared (Debian ships no .a): ${shared}")
endfunction()
