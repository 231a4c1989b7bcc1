# Cross-compiles Duet for arm64 (aarch64) Linux with Debian's
# crossbuild-essential-arm64 against the sysroot tools/arm64-sysroot makes
# (docs/ARM64.md):
#   cmake -S . -B /tmp/b/arm64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-linux-gnu.cmake
# DUET_ARM64_SYSROOT (cache or environment) overrides the sysroot's path.
# Libraries, headers and CMake package configs come from the sysroot only;
# programs (protoc, grpc_cpp_plugin) from the host: the top-level
# CMakeLists.txt points gRPC::grpc_cpp_plugin at the host's plugin.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT DUET_ARM64_SYSROOT)
  if(DEFINED ENV{DUET_ARM64_SYSROOT})
    set(DUET_ARM64_SYSROOT "$ENV{DUET_ARM64_SYSROOT}")
  else()
    set(DUET_ARM64_SYSROOT /var/tmp/duet-arm64-sysroot)
  endif()
endif()
set(DUET_ARM64_SYSROOT "${DUET_ARM64_SYSROOT}" CACHE PATH
    "arm64 sysroot (tools/arm64-sysroot)")
if(NOT EXISTS "${DUET_ARM64_SYSROOT}/usr/include/grpcpp")
  message(FATAL_ERROR "no arm64 sysroot at ${DUET_ARM64_SYSROOT}: run tools/arm64-sysroot")
endif()

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_SYSROOT "${DUET_ARM64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${DUET_ARM64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config (gRPC's config finds re2 with it) reads the sysroot's .pc files.
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${DUET_ARM64_SYSROOT}")
set(ENV{PKG_CONFIG_LIBDIR}
    "${DUET_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${DUET_ARM64_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
# The sysroot is unpacked, not installed: nothing ran ldconfig, so the
# linker is told where the libraries' own dependencies live.
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "-Wl,-rpath-link,${DUET_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,-rpath-link,${DUET_ARM64_SYSROOT}/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${CMAKE_EXE_LINKER_FLAGS_INIT}")
# Test discovery (gtest_discover_tests) runs the arm64 test binaries: under
# qemu-user with the sysroot's libraries, when it is installed.
find_program(DUET_QEMU_AARCH64 qemu-aarch64-static qemu-aarch64)
if(DUET_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${DUET_QEMU_AARCH64};-L;${DUET_ARM64_SYSROOT}")
endif()
# Tests are listed when ctest runs, not after each link, so building needs
# no emulator.
set(CMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE PRE_TEST)
