# duet-health-probe: see tools/CMakeLists.txt
