"""Trains the decomposed Duet DLRM with PyTorch and exports a model directory.

The exported directory (model.pbtxt + edge/cloud/user_tables safetensors) is
what the C++ side loads unchanged (DESIGN.md §2, "Models people trained").
Modules: catalog (SplitMix64 item ids), config (architecture JSON), data
(synthetic interaction log with planted structure), model (the torch model),
train, safetensors, export, metrics. Run as `tools/duet-train --help`.
"""
