# Command-line conventions of every binary (DESIGN.md §8): --help, bad flags,
# exit codes, bound ports in the logs.
