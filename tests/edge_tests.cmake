# Integration tests of duet-edge (see tests/CMakeLists.txt).
